"""Every AUC, gap, delta and summary of the audit against scikit-learn, recomputed by hand."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import fairscan
from tests._preds import make_preds

LABELS = ("cardiomegaly", "edema", "effusion")


def _auc(df, lab, mask=None):
    d = df if mask is None else df[mask]
    d = d[d[f"label_{lab}"].notna()]
    return roc_auc_score(d[f"label_{lab}"], d[f"prob_{lab}"])


@pytest.fixture(scope="module")
def data():
    df = make_preds(900, LABELS, seed=1, gap=0.4, ties=False)
    df.loc[df.index[::7], "label_edema"] = np.nan  # masked labels are left out
    return df


@pytest.fixture(scope="module")
def result(data):
    return fairscan.audit(data, attrs=["sex", "race"], intervals="none", min_pos=1, min_neg=1)


def test_point_aucs_equal_sklearn(data, result):
    d = result.to_dict()
    for lab in LABELS:
        assert d["labels"][lab]["auc"] == pytest.approx(_auc(data, lab), abs=1e-12)
        assert d["labels"][lab]["n"] == int(data[f"label_{lab}"].notna().sum())
        for attr in ("sex", "race"):
            for g, gd in d["labels"][lab]["attrs"][attr]["groups"].items():
                mask = data[attr] == g
                assert gd["auc"] == pytest.approx(_auc(data, lab, mask), abs=1e-12)
                assert gd["n_pos"] == int((data.loc[mask, f"label_{lab}"] == 1).sum())


def test_ties_equal_sklearn():
    df = make_preds(500, LABELS, seed=3, ties=True)
    d = fairscan.audit(df, attrs=["sex"], intervals="none").to_dict()
    for lab in LABELS:
        assert d["labels"][lab]["auc"] == pytest.approx(_auc(df, lab), abs=1e-12)
        female = df["sex"] == "Female"
        assert d["labels"][lab]["attrs"]["sex"]["groups"]["Female"]["auc"] == pytest.approx(
            _auc(df, lab, female), abs=1e-12
        )


def test_gaps_deltas_and_summary_by_hand(data, result):
    d = result.to_dict()
    for attr in ("sex", "race"):
        groups = sorted(data[attr].unique())
        table = {lab: {g: _auc(data, lab, data[attr] == g) for g in groups} for lab in LABELS}
        for lab in LABELS:
            aucs = table[lab]
            la = d["labels"][lab]["attrs"][attr]
            assert la["gap"] == pytest.approx(max(aucs.values()) - min(aucs.values()), abs=1e-12)
            assert la["worst_group"] == min(aucs, key=aucs.get)
            assert la["best_group"] == max(aucs, key=aucs.get)
            mean_over_groups = np.mean(list(aucs.values()))
            for g in groups:
                gd = la["groups"][g]
                assert gd["delta_vs_group_mean"] == pytest.approx(aucs[g] - mean_over_groups, abs=1e-12)
                assert gd["delta_vs_population"] == pytest.approx(aucs[g] - _auc(data, lab), abs=1e-12)
        s = d["summary"]["attrs"][attr]
        gm = {g: np.mean([table[lab][g] for lab in LABELS]) for g in groups}
        for g in groups:
            assert s["group_mean_auc"][g] == pytest.approx(gm[g], abs=1e-12)
        assert s["gap"] == pytest.approx(max(gm.values()) - min(gm.values()), abs=1e-12)
        assert s["worst_group"] == min(gm, key=gm.get)
        label_gaps = [max(table[lab].values()) - min(table[lab].values()) for lab in LABELS]
        assert s["mean_label_gap"] == pytest.approx(np.mean(label_gaps), abs=1e-12)
        assert s["max_label_gap"] == pytest.approx(max(label_gaps), abs=1e-12)
        pop = np.mean([_auc(data, lab) for lab in LABELS])
        for g in groups:
            assert s["delta_vs_population"][g] == pytest.approx(gm[g] - pop, abs=1e-12)
            assert s["delta_vs_group_mean"][g] == pytest.approx(gm[g] - np.mean(list(gm.values())), abs=1e-12)
    assert d["summary"]["mean_auc"] == pytest.approx(np.mean([_auc(data, lab) for lab in LABELS]), abs=1e-12)


def test_agrees_with_fairlearn_metricframe(data, result):
    from fairlearn.metrics import MetricFrame

    for lab in LABELS:
        d = data[data[f"label_{lab}"].notna()]
        mf = MetricFrame(
            metrics=roc_auc_score,
            y_true=d[f"label_{lab}"],
            y_pred=d[f"prob_{lab}"],
            sensitive_features=d["race"],
        )
        la = result.to_dict()["labels"][lab]["attrs"]["race"]
        assert la["gap"] == pytest.approx(mf.difference(), abs=1e-12)
        for g, v in mf.by_group.items():
            assert la["groups"][g]["auc"] == pytest.approx(v, abs=1e-12)
        assert result.to_dict()["labels"][lab]["auc"] == pytest.approx(mf.overall, abs=1e-12)


def test_by_group_and_by_label_tables(result):
    bg = result.by_group()
    assert set(bg.columns) >= {"label", "attr", "group", "auc", "delta_vs_group_mean", "delta_vs_population"}
    assert len(bg) == len(LABELS) * (2 + 3)
    bl = result.by_label()
    assert list(bl["label"]) == list(LABELS)
    assert result.gap("race") == result.summary["attrs"]["race"]["gap"]


def test_one_class_and_tiny_subgroups_are_missing_with_a_note():
    df = make_preds(600, ("edema",), seed=2)
    black = df["race"] == "Black"
    df.loc[black, "label_edema"] = 0.0  # one class only among Black patients
    r = fairscan.audit(df, attrs=["race"], intervals="none")
    d = r.to_dict()
    g = d["labels"]["edema"]["attrs"]["race"]["groups"]["Black"]
    assert g["auc"] is None and g["note"] == "one class only"
    assert any("race=Black" in n for n in d["notes"])
    assert d["summary"]["attrs"]["race"]["labels_left_out"] == ["edema"]
    assert d["summary"]["attrs"]["race"]["gap"] is None
    # a tiny subgroup: below the minimum count of positives
    df2 = make_preds(600, ("edema",), seed=2)
    idx = df2.index[(df2["race"] == "Black") & (df2["label_edema"] == 1)][3:]
    df2.loc[idx, "label_edema"] = 0.0
    d2 = fairscan.audit(df2, attrs=["race"], intervals="none", min_pos=5).to_dict()
    assert d2["labels"]["edema"]["attrs"]["race"]["groups"]["Black"]["auc"] is None
    assert "too few" in d2["labels"]["edema"]["attrs"]["race"]["groups"]["Black"]["note"]


def test_intersectional_and_age_groups():
    df = make_preds(900, ("edema",), seed=4)
    d = fairscan.audit(
        df, attrs=["sex+race", "age"], intervals="none", min_pos=1, min_neg=1
    ).to_dict()
    groups = d["labels"]["edema"]["attrs"]["sex+race"]["groups"]
    assert "Female+Black" in groups and "Male+White" in groups
    m = (df["sex"] == "Female") & (df["race"] == "Black")
    assert groups["Female+Black"]["auc"] == pytest.approx(_auc(df, "edema", m), abs=1e-12)
    ages = d["labels"]["edema"]["attrs"]["age"]["groups"]
    assert list(ages) == ["<40", "40-60", "60-80", ">=80"]
    assert sum(g["n"] for g in ages.values()) == len(df)


def test_logits_are_accepted():
    df = make_preds(300, ("edema",), seed=5)
    p = df.pop("prob_edema")
    df["logit_edema"] = np.log(p / (1 - p))
    d = fairscan.audit(df, attrs=["sex"], intervals="none").to_dict()
    assert d["labels"]["edema"]["auc"] == pytest.approx(
        roc_auc_score(df["label_edema"], df["logit_edema"]), abs=1e-12
    )


def test_delong_intervals_cover_single_aucs():
    df = make_preds(600, ("edema",), seed=6)
    d = fairscan.audit(df, attrs=["sex"], intervals="delong").to_dict()
    lo, hi = d["labels"]["edema"]["ci"]
    assert lo < d["labels"]["edema"]["auc"] < hi
    assert d["labels"]["edema"]["attrs"]["sex"]["gap_ci"] is None


def test_threshold_metrics_from_validation():
    val = make_preds(800, ("edema",), seed=7)
    test = make_preds(800, ("edema",), seed=8)
    d = fairscan.audit(test, attrs=["sex"], intervals="none", thresholds_from=val).to_dict()
    t = d["thresholds"]["values"]["edema"]
    neg = val.loc[val["label_edema"] == 0, "prob_edema"]
    assert (neg >= t).mean() == pytest.approx(0.2, abs=0.01)
    female = test[test["sex"] == "Female"]
    pos = female[female["label_edema"] == 1]
    tpr = (pos["prob_edema"] >= t).mean()
    g = d["labels"]["edema"]["attrs"]["sex"]["groups"]["Female"]["threshold"]
    assert g["tpr"] == pytest.approx(tpr) and g["fnr"] == pytest.approx(1 - tpr)
    gaps = d["labels"]["edema"]["attrs"]["sex"]["threshold_gaps"]
    male = d["labels"]["edema"]["attrs"]["sex"]["groups"]["Male"]["threshold"]
    assert gaps["fpr"] == pytest.approx(abs(male["fpr"] - g["fpr"]))
    assert "source" in d["thresholds"] and d["thresholds"]["target_fpr"] == 0.2


def test_threshold_metrics_have_patient_bootstrap_intervals():
    """TPR/FPR/FNR intervals: as wide as the binomial error with one image per patient, unchanged when each
    patient's image is repeated (the patient is the unit), and absent without a bootstrap."""
    val = make_preds(1000, ("edema",), seed=7, images_per_patient=1)
    test = make_preds(3000, ("edema",), seed=8, images_per_patient=1)
    kw = dict(attrs=["sex"], thresholds_from=val)
    d = fairscan.audit(test, n_boot=400, **kw).to_dict()
    sex = d["labels"]["edema"]["attrs"]["sex"]
    for g, gd in sex["groups"].items():
        th = gd["threshold"]
        in_g = test[test["sex"] == g]
        for rate, label in (("tpr", 1), ("fpr", 0)):
            n = int((in_g["label_edema"] == label).sum())
            lo, hi = th[f"{rate}_ci"]
            assert lo < th[rate] < hi
            binomial = 2 * 1.96 * np.sqrt(th[rate] * (1 - th[rate]) / n)
            assert hi - lo == pytest.approx(binomial, rel=0.25), (g, rate)
        assert th["fnr_ci"] == pytest.approx([1 - th["tpr_ci"][1], 1 - th["tpr_ci"][0]])
    gaps = sex["threshold_gaps"]
    for rate in ("tpr", "fpr", "fnr"):
        lo, hi = gaps[f"{rate}_ci"]
        assert lo <= gaps[rate] <= hi and hi > lo

    repeated = test.loc[test.index.repeat(4)].reset_index(drop=True)
    repeated["image_id"] = [
        f"{i}-{k}" for i, k in zip(repeated["image_id"], range(len(repeated)), strict=True)
    ]
    d4 = fairscan.audit(repeated, n_boot=400, **kw).to_dict()
    d4_images = fairscan.audit(repeated, n_boot=400, resample="image", **kw).to_dict()

    def width(dd):
        return np.diff(dd["labels"]["edema"]["attrs"]["sex"]["groups"]["Female"]["threshold"]["tpr_ci"])[0]

    assert d4["labels"]["edema"]["attrs"]["sex"]["groups"]["Female"]["threshold"]["tpr"] == pytest.approx(
        sex["groups"]["Female"]["threshold"]["tpr"]
    )
    assert width(d4) == pytest.approx(width(d), rel=0.3)
    assert width(d4_images) < 0.7 * width(d)  # resampling images ignores the repetition: too narrow

    none = fairscan.audit(test, intervals="none", **kw).to_dict()
    th = none["labels"]["edema"]["attrs"]["sex"]["groups"]["Female"]["threshold"]
    assert th["tpr"] == sex["groups"]["Female"]["threshold"]["tpr"] and th["tpr_ci"] is None


def test_thresholds_from_validation_and_tuning_on_test_exclude_each_other(run_cli, tmp_path):
    from fairscan.errors import InputError

    val = make_preds(300, ("edema",), seed=7)
    test = make_preds(300, ("edema",), seed=8)
    with pytest.raises(InputError, match="exclude each other"):  # the API, as the CLI and presets reach it
        fairscan.audit(test, attrs=["sex"], thresholds_from=val, tune_thresholds_on_test=True)
    test.to_parquet(tmp_path / "t.parquet")
    val.to_parquet(tmp_path / "v.parquet")
    code, _, err = run_cli("audit", tmp_path / "t.parquet", "--attrs", "sex", "--thresholds-from",
                           tmp_path / "v.parquet", "--tune-thresholds-on-test")  # fmt: skip
    assert code == 2 and "--thresholds-from and --tune-thresholds-on-test exclude each other" in err


def test_thresholds_tuned_on_test_are_labelled():
    df = make_preds(400, ("edema",), seed=9)
    d = fairscan.audit(
        df, attrs=["sex"], intervals="none", tune_thresholds_on_test=True
    ).to_dict()
    assert "tuned on the audited file" in d["thresholds"]["source"]
    assert any("tuned on the audited file" in n for n in d["notes"])


def test_ece_matches_definition():
    df = make_preds(500, ("edema",), seed=10)
    d = fairscan.audit(df, attrs=["sex"], intervals="none", ece_bins=10).to_dict()
    y, p = df["label_edema"].to_numpy(), df["prob_edema"].to_numpy()
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(y[bins == b].sum() - p[bins == b].sum()) for b in range(10)) / len(y)
    assert d["labels"]["edema"]["ece"] == pytest.approx(ece)


def test_json_schema_keys(result):
    d = result.to_dict()
    assert d["schema"] == "fairscan.audit/2" and d["units"] == "fraction"
    lab = d["labels"]["edema"]
    assert {"auc", "ci", "attrs"} <= set(lab)
    assert {"gap", "gap_ci", "worst_group", "groups"} <= set(lab["attrs"]["sex"])
    assert {"n", "n_pos", "auc", "ci"} <= set(lab["attrs"]["sex"]["groups"]["Male"])
    assert {"mean_auc", "attrs"} <= set(d["summary"])
    assert {"gap", "gap_ci", "p_value", "group_mean_auc"} <= set(d["summary"]["attrs"]["race"])
    pd.Series(d["summary"]["attrs"]["race"]["group_mean_auc"])  # plain mapping of group -> value
