"""The audit's inference: the gap test, the adjusted gap and its interval, paired differences, multiplicity,
DeLong under clustering. Each is checked against an independent implementation and, seeded and small, for
its error rate by simulation (``benchmarks/calibration.py`` runs the full study)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

import fairscan
from fairscan.fairness import kernels, stats
from fairscan.fairness.resample import bootstrap_counts
from fairscan.fairness.simulate import Scenario, simulate
from tests._preds import make_preds

multitest = pytest.importorskip("statsmodels.stats.multitest")

TWO = {"a": (0.3, 0.80), "b": (0.2, 0.75)}
EVEN = {"sex": (("Male", "Female"), (0.5, 0.5)), "race": (("White", "Asian", "Black"), (0.5, 0.25, 0.25))}
NULLS = {
    # equal AUCs, prevalence 0.50 vs 0.08 in groups of 80% / 20%: shuffling groups would reject it
    "prevalence": (Scenario(patients=2000, labels=TWO, groups={"g": (("A", "B"), (0.8, 0.2))}, prevalence_by="g",
                            prevalence_factor={"A": 0.5 / 0.3, "B": 0.08 / 0.3}), ["g"], {}),
    "prevalence, balanced": (Scenario(patients=2000, labels=TWO, groups={"g": (("A", "B"), (0.8, 0.2))},
                                      prevalence_by="g", prevalence_factor={"A": 0.5 / 0.3, "B": 0.08 / 0.3}),
                             ["g"], {"balanced_test": True}),
    # 3 images per patient, correlated, and 3% of images with their sex recorded otherwise
    "clustered, sex varies": (Scenario(patients=500, labels=TWO, images_per_patient=3, patient_sd=1.0,
                                       flip={"sex": 0.03}), ["sex", "race"], {}),
    # age changes between visits, binned
    "age bins": (Scenario(patients=500, labels=TWO, images_per_patient=2.5, patient_sd=0.5, ages=True),
                 ["age"], {"age_bins": [50.0, 70.0]}),
}  # fmt: skip


@pytest.mark.parametrize("null", list(NULLS))
def test_the_gap_test_holds_its_level_under_each_null(null):
    """50 datasets per null (200 in all), 199 replicates each: at most 12% rejections at p <= 0.05 (the full
    study, 1,000 datasets and 999 replicates per null, measures 3-7%)."""
    sc, attrs, kw = NULLS[null]
    rejected = total = 0
    for seed in range(50):
        d = fairscan.audit(simulate(sc, seed)[0], attrs=attrs, n_boot=199, seed=seed, **kw).to_dict()
        for a in attrs:
            p = d["summary"]["attrs"][a]["p_value"]
            rejected, total = rejected + (p <= 0.05), total + 1
    assert total >= 50 and rejected / total <= 0.12, (null, rejected, total)


def test_the_gap_test_finds_a_real_gap():
    sc = Scenario(patients=2000, labels=TWO, groups=EVEN, shift={"race": {"Black": 0.10}})
    for kw in ({}, {"balanced_test": True}):
        d = fairscan.audit(simulate(sc, 1)[0], attrs=["sex", "race"], n_boot=199, **kw).to_dict()
        assert d["summary"]["attrs"]["race"]["p_value"] <= 0.01
        assert d["summary"]["attrs"]["race"]["gap_adjusted_ci"][0] > 0


def test_the_interval_contains_zero_exactly_when_p_is_at_least_alpha():
    seen = set()
    for seed in range(40):
        sc = Scenario(patients=400, labels=TWO, groups=EVEN, shift={"race": {"Black": 0.03 * (seed % 5)}})
        d = fairscan.audit(simulate(sc, seed)[0], attrs=["sex", "race"], n_boot=99, seed=seed).to_dict()
        for s in d["summary"]["attrs"].values():
            assert s["gap"] is not None
            contains = s["gap_adjusted_ci"][0] == 0
            assert contains == (s["p_value"] >= 0.05 - 1e-12), s
            assert 0 <= s["gap_adjusted"] <= s["gap"] + 1e-12
            assert s["gap_adjusted_ci"][0] <= s["gap_adjusted"] <= s["gap_adjusted_ci"][1]
            seen.add(contains)
    assert seen == {True, False}


def test_the_gap_test_equals_a_hand_computation_with_scikit_learn():
    """The whole gap test recomputed from the same bootstrap counts with sklearn's weighted AUC."""
    df = make_preds(300, ("edema", "effusion"), seed=4, gap=0.1, images_per_patient=2)
    n_boot = 60
    d = fairscan.audit(df, attrs=["sex"], n_boot=n_boot, seed=7, min_pos=5, min_neg=5).to_dict()
    patients, pat = np.unique(df["patient_id"], return_inverse=True)
    first = np.array([np.flatnonzero(pat == p)[0] for p in range(len(patients))])
    strata = (df["sex"].map({"Male": 0, "Female": 1}).to_numpy()[first] + 1).astype(np.int64)
    counts = np.concatenate(list(bootstrap_counts(strata, n_boot, seed=7)))
    groups = ["Male", "Female"]

    def group_means(w):  # per-image weights
        out = []
        for g in groups:
            m = (df["sex"] == g).to_numpy()
            out.append(np.mean([roc_auc_score(df.loc[m, f"label_{lab}"], df.loc[m, f"prob_{lab}"],
                                              sample_weight=w[m]) for lab in ("edema", "effusion")]))  # fmt: skip
        return np.array(out)

    point = group_means(np.ones(len(df)))
    reps = np.array([group_means(c[pat]) for c in counts])
    dev = reps - point
    ranges = dev.max(axis=1) - dev.min(axis=1)
    gap = point.max() - point.min()
    s = d["summary"]["attrs"]["sex"]
    assert s["gap"] == pytest.approx(gap, abs=1e-12)
    assert s["p_value"] == pytest.approx((1 + (ranges >= gap - 1e-12).sum()) / (n_boot + 1), abs=1e-12)
    q = np.sort(ranges)[n_boot - stats.critical_count(n_boot, 0.05)]
    assert s["gap_adjusted_ci"] == pytest.approx([max(0.0, gap - q), gap + q], abs=1e-12)


def test_critical_count_matches_the_p_value_definition():
    for n in (9, 99, 199, 999, 1000, 1234):
        for alpha in (0.01, 0.05, 0.1):
            m = stats.critical_count(n, alpha)
            assert (1 + m) / (n + 1) >= alpha - 1e-12 and (m == 0 or m / (n + 1) < alpha - 1e-12)


def test_worst_group_interval_and_pairwise_differences():
    sc = Scenario(patients=2000, labels=TWO, groups=EVEN, shift={"race": {"Black": 0.06}})
    d = fairscan.audit(simulate(sc, 2)[0], attrs=["race"], n_boot=199).to_dict()
    s = d["summary"]["attrs"]["race"]
    lo, hi = s["worst_group_auc_ci"]
    assert lo <= s["worst_group_auc"] <= hi and s["worst_group_auc"] == min(s["group_mean_auc"].values())
    pairs = {(p["a"], p["b"]): p for p in s["pairwise"]}
    assert set(pairs) == {("White", "Asian"), ("White", "Black"), ("Asian", "Black")}
    wb = pairs["White", "Black"]
    assert wb["diff"] == pytest.approx(s["group_mean_auc"]["White"] - s["group_mean_auc"]["Black"])
    assert wb["ci"][0] > 0  # the planted 6 points


def test_holm_over_attributes_and_bh_over_labels_equal_statsmodels():
    df = make_preds(1500, ("cardiomegaly", "edema", "effusion", "atelectasis"), seed=3, gap=0.25)
    d = fairscan.audit(df, attrs=["sex", "race", "age"], n_boot=99).to_dict()
    ps = [d["summary"]["attrs"][a]["p_value"] for a in ("sex", "race", "age")]
    _, holm, _, _ = multitest.multipletests(ps, method="holm")
    assert [d["summary"]["attrs"][a]["p_value_holm"] for a in ("sex", "race", "age")] == pytest.approx(holm)
    for a in ("sex", "race"):
        per_label = [d["labels"][lab]["attrs"][a]["p_value"] for lab in d["labels"]]
        _, bh, _, _ = multitest.multipletests(per_label, method="fdr_bh")
        assert [d["labels"][lab]["attrs"][a]["q_value"] for lab in d["labels"]] == pytest.approx(bh)


def test_paired_differences_between_models_have_p_values_and_holm():
    sc = Scenario(patients=800, labels=TWO)
    frames = simulate(sc, 5, models=3, model_sd=0.5)
    c = fairscan.compare(frames, attrs=["sex", "race"], names=["a", "b", "c"], n_boot=199)
    paired = c.to_dict()["comparison"]["paired"]
    raw, adjusted = [], []
    for name in ("b", "c"):
        e = paired[name]
        assert 0 < e["mean_auc_diff_p"] <= 1 and e["mean_auc_diff_ci"][0] < e["mean_auc_diff"] < e["mean_auc_diff_ci"][1]
        raw += [e["mean_auc_diff_p"], e["gap_diff_p"]["sex"], e["gap_diff_p"]["race"]]
        adjusted += [e["mean_auc_diff_p_holm"], e["gap_diff_p_holm"]["sex"], e["gap_diff_p_holm"]["race"]]
    order = [0, 3, 1, 2, 4, 5]  # the family: every mean-AUC difference, then every FG difference
    _, holm, _, _ = multitest.multipletests([raw[i] for i in order], method="holm")
    assert [adjusted[i] for i in order] == pytest.approx(holm)
    # the p-value from the replicates, by hand
    a, b = c.audits[0], c.audits[1]
    diff = b.mean_auc - a.mean_auc
    dev = (b.replicates["mean_auc"] - a.replicates["mean_auc"]) - diff
    assert paired["b"]["mean_auc_diff_p"] == pytest.approx((1 + (np.abs(dev) >= abs(diff) - 1e-12).sum()) / 200)


def test_gap_differences_are_bias_corrected_by_hand():
    sc = Scenario(patients=600, labels=TWO)
    frames = simulate(sc, 7, models=2, model_sd=0.5)
    c = fairscan.compare(frames, attrs=["race"], names=["a", "b"], n_boot=199, seed=3)
    e = c.to_dict()["comparison"]["paired"]["b"]
    a, b = c.audits
    raw = b.gap("race") - a.gap("race")
    reps = b.replicates["gap:race"] - a.replicates["gap:race"]
    corrected = raw - (reps.mean() - raw)  # the bootstrap's bias of the difference, subtracted
    dev = np.abs(reps - reps.mean())
    assert e["gap_diff_raw"]["race"] == pytest.approx(raw)
    assert e["gap_diff"]["race"] == pytest.approx(corrected)
    assert e["gap_diff_p"]["race"] == pytest.approx((1 + (dev >= abs(corrected) - 1e-12).sum()) / 200)
    # the symmetric interval: the 95% critical value of |D* - mean|, the 190th of 199 sorted (p >= 0.05 needs
    # at least 9 replicates reaching |value|)
    q = np.sort(dev)[199 - 9]
    assert e["gap_diff_ci"]["race"] == pytest.approx([corrected - q, corrected + q])
    assert (e["gap_diff_ci"]["race"][0] > 0 or e["gap_diff_ci"]["race"][1] < 0) == (e["gap_diff_p"]["race"] < 0.05)


def test_worst_subgroup_differences_by_hand():
    """The worst subgroup's mean AUC of each model by scikit-learn (an independent implementation), and the paired
    difference bias-corrected like a FG difference, its p-value and interval from the replicates by hand."""
    even = {"race": (("White", "Asian", "Black"), (0.5, 0.25, 0.25))}
    sc = Scenario(patients=600, labels=TWO, groups=even, shift={"race": {"Black": 0.04}})
    frames = simulate(sc, 11, models=2, model_sd=0.5)
    c = fairscan.compare(frames, attrs=["race"], names=["a", "b"], n_boot=199, seed=3)
    e = c.to_dict()["comparison"]["paired"]["b"]

    def worst(df):
        return min(
            np.mean([roc_auc_score(df.loc[df.race == g, f"label_{lab}"], df.loc[df.race == g, f"prob_{lab}"])
                     for lab in TWO])
            for g in ("White", "Asian", "Black")
        )  # fmt: skip

    raw = worst(frames[1]) - worst(frames[0])
    assert e["worst_diff_raw"]["race"] == pytest.approx(raw, abs=1e-12)
    a, b = c.audits
    reps = b.replicates["worst:race"] - a.replicates["worst:race"]
    corrected = raw - (reps.mean() - raw)
    dev = np.abs(reps - reps.mean())
    assert e["worst_diff"]["race"] == pytest.approx(corrected)
    assert e["worst_diff_p"]["race"] == pytest.approx((1 + (dev >= abs(corrected) - 1e-12).sum()) / 200)
    q = np.sort(dev)[199 - 9]
    assert e["worst_diff_ci"]["race"] == pytest.approx([corrected - q, corrected + q])
    # not in the Holm family: the FG differences' Holm p-values are those of {mean AUC, FG race} alone
    _, holm, _, _ = multitest.multipletests([e["mean_auc_diff_p"], e["gap_diff_p"]["race"]], method="holm")
    assert [e["mean_auc_diff_p_holm"], e["gap_diff_p_holm"]["race"]] == pytest.approx(holm)


def _seed_case(k, shared_sd, own_sd, seed=0):
    """k seeds' differences and replicate deviations: a shared test-set error plus an own error per seed."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, shared_sd, 999)
    devs = [common + rng.normal(0, own_sd, 999) for _ in range(k)]
    values = list(0.01 + rng.normal(0, 0.004, k))
    return values, devs


def test_seed_differences_add_the_shared_test_set_error_to_the_t_test():
    values, devs = _seed_case(6, 0.003, 0.002)
    six = stats.seed_difference(values, devs, 0.95)
    own = np.var(values, ddof=1) / 6
    # the shared part: covariance of two seeds' deviations, averaged over the 15 pairs, written out
    pairs = [np.cov(devs[i], devs[j])[0, 1] for i in range(6) for j in range(i + 1, 6)]
    shared = float(np.mean(pairs))
    se = math.sqrt(own + shared)
    df = (own + shared) ** 2 / (own**2 / 5)
    t = np.mean(values) / se
    assert six["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df=df))
    assert six["ci"] == pytest.approx(np.mean(values) + np.array([-1, 1]) * scipy_stats.t.ppf(0.975, df) * se)
    assert six["seed_sd"] == pytest.approx(np.std(values, ddof=1)) and "t-test over 6 seeds" in six["method"]
    # with no shared error it is the paired t-test over seeds
    independent = [np.random.default_rng(i).normal(0, 0.002, 999) for i in range(6)]
    plain = stats.seed_difference(values, [d * 0 for d in independent], 0.95)
    assert plain["p_value"] == pytest.approx(scipy_stats.ttest_1samp(values, 0).pvalue)


def test_one_seed_is_the_paired_bootstrap():
    values, devs = _seed_case(1, 0.003, 0.002)
    one = stats.seed_difference(values, devs, 0.95)
    assert one["method"] == "paired bootstrap"
    assert one["p_value"] == pytest.approx((1 + (np.abs(devs[0]) >= abs(values[0])).sum()) / 1000)


# ------------------------------------------------------------------------------------------------ DeLong


def _clustered_var_by_hand(y, s, clusters) -> float:
    """Obuchowski (1997), written out pair by pair."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    theta = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    ids = np.unique(clusters)
    V10 = np.array([v10[clusters[pos] == i].sum() for i in ids])  # noqa: N806
    V01 = np.array([v01[clusters[neg] == i].sum() for i in ids])  # noqa: N806
    m_i = np.array([(clusters[pos] == i).sum() for i in ids])
    n_i = np.array([(clusters[neg] == i).sum() for i in ids])
    i10, i01, n_c = (m_i > 0).sum(), (n_i > 0).sum(), len(ids)
    m, n = len(pos), len(neg)
    s10 = i10 / ((i10 - 1) * m) * ((V10 - m_i * theta) ** 2).sum()
    s01 = i01 / ((i01 - 1) * n) * ((V01 - n_i * theta) ** 2).sum()
    s11 = n_c / (n_c - 1) * ((V10 - m_i * theta) * (V01 - n_i * theta)).sum()
    return s10 / m + s01 / n + 2 * s11 / (m * n)


def test_clustered_delong_equals_a_pairwise_implementation():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(60), rng.integers(1, 5, 60))
    y = (rng.random(len(clusters)) < 0.4).astype(int)
    s = np.round(rng.normal(size=len(clusters)) + y + rng.normal(size=60)[clusters], 1)  # with ties
    auc, lo, hi = kernels.delong_ci(y, s, 0.95, clusters)
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(_clustered_var_by_hand(y, s, clusters))
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert (lo, hi) == pytest.approx((auc - half, auc + half), abs=1e-12)
    singletons = np.arange(len(y))  # one image per patient: DeLong's own variance
    assert kernels.delong_ci(y, s, 0.95, singletons) == pytest.approx(kernels.delong_ci(y, s, 0.95), abs=1e-12)


def test_clustered_delong_covers_where_plain_delong_does_not():
    """200 datasets of 150 patients x 4 images, each patient's images alike (same finding, correlated scores):
    the clustered interval covers the true AUC about 95% of the time; DeLong's, which counts every image as
    independent evidence, clearly less often."""
    sd = 1.0
    truth = scipy_stats.norm.cdf(1.0 / math.sqrt(2 * (1 + sd**2)))
    covered = {"clustered": 0, "plain": 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        clusters = np.repeat(np.arange(150), 4)
        y = (rng.random(150) < 0.3).astype(int)[clusters]
        s = rng.normal(0, sd, 150)[clusters] + rng.normal(size=len(clusters)) + y
        for kind, c in (("clustered", clusters), ("plain", None)):
            _, lo, hi = kernels.delong_ci(y, s, 0.95, c)
            covered[kind] += lo <= truth <= hi
    assert covered["clustered"] / 200 >= 0.91
    assert covered["plain"] / 200 < 0.88


# ------------------------------------------------------------------------------------- smaller corrections


def test_logits_rank_the_images_when_given():
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.5).astype(float)
    z = 40 + rng.normal(size=400) + y  # probabilities of these logits all round to 1.0
    df = {"image_id": [f"i{i}" for i in range(400)], "patient_id": [f"p{i}" for i in range(400)],
          "sex": rng.choice(["Male", "Female"], 400), "label_edema": y, "logit_edema": z}  # fmt: skip
    import pandas as pd

    d = fairscan.audit(pd.DataFrame(df), attrs=["sex"], intervals="none").to_dict()
    assert d["labels"]["edema"]["auc"] == pytest.approx(roc_auc_score(y, z), abs=1e-12)
    assert roc_auc_score(y, 1 / (1 + np.exp(-z))) == 0.5  # what ranking on probabilities gave


def test_equalized_odds_is_the_larger_of_the_tpr_and_fpr_gaps():
    test, val = make_preds(1200, ("edema",), seed=5, gap=0.3), make_preds(800, ("edema",), seed=6, gap=0.3)
    d = fairscan.audit(test, attrs=["sex", "race"], n_boot=99, thresholds_from=val).to_dict()
    for a in ("sex", "race"):
        tg = d["labels"]["edema"]["attrs"][a]["threshold_gaps"]
        assert tg["equalized_odds"] == max(tg["tpr"], tg["fpr"])
        lo, hi = tg["equalized_odds_ci"]
        assert lo <= tg["equalized_odds"] <= hi
        assert d["summary"]["attrs"][a]["equalized_odds"] == pytest.approx(tg["equalized_odds"])


def test_the_deprecated_permutations_setting_is_ignored_with_a_note():
    df = make_preds(300, ("edema",), seed=1)
    d = fairscan.audit(df, attrs=["sex"], n_boot=50, permutations=100).to_dict()
    assert any("permutation test is gone" in n for n in d["notes"])
    assert "permutations" not in d["settings"]


def test_tables_without_files_get_distinct_names_in_a_comparison():
    frames = simulate(Scenario(patients=200, labels=TWO), 1, models=2, model_sd=0.5)
    c = fairscan.compare(frames, attrs=["sex"], n_boot=20)
    assert len(c.audits) == 2 and len(c.to_dict()["comparison"]["paired"]) == 1
