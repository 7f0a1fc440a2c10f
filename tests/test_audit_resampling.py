"""Bootstrap intervals and balanced test sets: what is resampled, what is drawn, and from what."""

import numpy as np
import pytest

import fairscan
from fairscan.fairness.resample import balance_cells, bootstrap_counts, image_keys
from tests._preds import make_preds


def test_bootstrap_is_reproducible_and_seeded():
    df = make_preds(600, ("edema", "effusion"), seed=0, gap=0.3)
    a = fairscan.audit(df, attrs=["sex"], n_boot=100, seed=3).to_dict()
    b = fairscan.audit(df, attrs=["sex"], n_boot=100, seed=3).to_dict()
    c = fairscan.audit(df, attrs=["sex"], n_boot=100, seed=4).to_dict()
    assert a["labels"]["edema"]["ci"] == b["labels"]["edema"]["ci"]
    assert a["summary"]["attrs"]["sex"]["gap_ci"] == b["summary"]["attrs"]["sex"]["gap_ci"]
    assert a["labels"]["edema"]["ci"] != c["labels"]["edema"]["ci"]
    lo, hi = a["labels"]["edema"]["ci"]
    assert lo < a["labels"]["edema"]["auc"] < hi


def test_bootstrap_counts_resample_patients_within_strata():
    strata = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    chunks = list(bootstrap_counts(strata, 250, seed=1, chunk=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    counts = np.concatenate(chunks)
    for s in range(3):
        # every replicate draws exactly as many patients of a stratum as it holds
        assert (counts[:, strata == s].sum(axis=1) == (strata == s).sum()).all()
    assert (counts == 0).any()  # some patients are left out, some repeated
    assert np.array_equal(counts, np.concatenate(list(bootstrap_counts(strata, 250, seed=1, chunk=100))))


def test_intervals_account_for_patients():
    """Duplicating every image of a patient must not narrow the interval under patient resampling."""
    one = make_preds(400, ("edema",), seed=2, images_per_patient=1)
    many = one.loc[one.index.repeat(4)].reset_index(drop=True)
    many["image_id"] = [f"{i}-{k}" for i, k in zip(many["image_id"], range(len(many)))]

    def width(df, **kw):
        return np.diff(fairscan.audit(df, attrs=["sex"], n_boot=200, **kw).to_dict()["labels"]["edema"]["ci"])[0]

    w1, w4, w4_images = width(one), width(many), width(many, resample="image")
    assert w4 == pytest.approx(w1, rel=0.3)
    assert w4_images < 0.7 * w1  # resampling images ignores the duplication and is too narrow


# ----------------------------------------------------------------------------------------- balanced sets


def _balanced(d: dict, label: str, attr: str) -> dict:
    return d["labels"][label]["attrs"][attr]


def test_balanced_sets_have_equal_counts_per_group():
    from sklearn.metrics import roc_auc_score

    df = make_preds(1200, ("edema",), seed=5)
    d = fairscan.audit(df, attrs=["race"], balanced_test=True, intervals="none").to_dict()
    la = _balanced(d, "edema", "race")
    n_per, n_pos = la["balanced"]["n_per_group"], la["balanced"]["n_pos_per_group"]
    assert all((g["n"], g["n_pos"]) == (n_per, n_pos) for g in la["groups"].values())
    assert n_pos == min(((df["race"] == r) & (df["label_edema"] == 1)).sum() for r in ("White", "Asian", "Black"))
    # the overall AUC still comes from the full test set
    assert d["labels"]["edema"]["auc"] == pytest.approx(roc_auc_score(df["label_edema"], df["prob_edema"]), abs=1e-12)
    assert d["labels"]["edema"]["n"] == len(df)


def _draw(df, label="edema", attrs=("sex", "race"), seed=0):
    """The point estimate's balanced draw: image ids per (attribute, segment), without repeats."""
    order = np.argsort(df[f"prob_{label}"].to_numpy(), kind="mergesort")
    y = df[f"label_{label}"].to_numpy()[order].astype(np.int8)
    keys = image_keys(df["image_id"].to_numpy()[order])
    columns = []
    for a in attrs:
        names = sorted(df[a].unique())
        codes = df[a].map({g: i for i, g in enumerate(names)}).to_numpy()[order].astype(np.int32)
        columns.append((a, codes, names, np.ones(len(names), bool), 10 * (len(columns) + 1)))
    cells = balance_cells(y, np.arange(len(df)), keys, columns, seed=seed, label=label)
    counts = cells.point_counts(1)
    out = {}
    for j, (a, codes, names, _, _) in enumerate(columns):
        kept = counts[:, j]
        assert set(np.unique(kept)) <= {0.0, 1.0}  # a mask: each image at most once
        ids = df["image_id"].to_numpy()[order]
        out[a] = {g: set(ids[(kept > 0) & (codes == i)]) for i, g in enumerate(names)}
    return out


def test_balanced_sets_depend_on_the_images_alone():
    """Not on the scores, the row order, nor on which other labels and attributes are audited."""
    df = make_preds(900, ("edema", "effusion"), seed=6)
    base = _draw(df)
    shuffled = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert _draw(shuffled) == base
    rescored = df.copy()
    rescored["prob_edema"] = np.random.default_rng(2).random(len(df))  # another model on the same images
    assert _draw(rescored) == base
    assert _draw(df, attrs=("race",))["race"] == base["race"]
    assert _draw(df, seed=1) != base


def test_balanced_gaps_are_paired_between_models_and_stable_under_subsets():
    df = make_preds(900, ("edema", "effusion"), seed=7, gap=0.2)
    full = fairscan.audit(df, attrs=["sex", "race"], balanced_test=True, intervals="none").to_dict()
    alone = fairscan.audit(df, attrs=["race"], labels=["effusion"], balanced_test=True, intervals="none").to_dict()
    assert _balanced(alone, "effusion", "race")["gap"] == _balanced(full, "effusion", "race")["gap"]
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = fairscan.audit(shuffled, attrs=["sex", "race"], balanced_test=True, intervals="none").to_dict()
    assert _balanced(again, "edema", "race")["gap"] == _balanced(full, "edema", "race")["gap"]


def test_a_score_change_outside_the_sets_leaves_the_balanced_gap_alone():
    df = make_preds(900, ("edema",), seed=8, gap=0.2)
    drawn = set().union(*_draw(df, attrs=("race",))["race"].values())
    outside = df.index[~df["image_id"].isin(drawn) & df["race"].notna()][0]
    changed = df.copy()
    changed.loc[outside, "prob_edema"] = 1 - changed.loc[outside, "prob_edema"]
    a, b = (fairscan.audit(x, attrs=["race"], balanced_test=True, intervals="none").to_dict() for x in (df, changed))
    assert _balanced(a, "edema", "race")["gap"] == _balanced(b, "edema", "race")["gap"]
    assert a["labels"]["edema"]["auc"] != b["labels"]["edema"]["auc"]  # the full-set AUC did see the change


def test_balancing_leaves_the_expected_subgroup_auc_unchanged():
    """AUC is a U-statistic and the draws are uniform within group x class cells, so the mean of a subgroup's
    balanced AUC over many draws is its full-set AUC: within 3 Monte Carlo standard errors over 200 draws."""
    df = make_preds(1500, ("edema",), seed=9, gap=0.3, images_per_patient=1)
    full = fairscan.audit(df, attrs=["race"], intervals="none").to_dict()["labels"]["edema"]["attrs"]["race"]
    draws = {g: [] for g in full["groups"]}
    for seed in range(200):  # the seed keys the draws: 200 independent draws
        d = fairscan.audit(df, attrs=["race"], balanced_test=True, intervals="none", seed=seed).to_dict()
        for g, ge in _balanced(d, "edema", "race")["groups"].items():
            draws[g].append(ge["auc"])
    averaged = fairscan.audit(df, attrs=["race"], balanced_test=True, balanced_draws=200, intervals="none")
    la = _balanced(averaged.to_dict(), "edema", "race")
    assert la["balanced"]["draws"] == 200 and la["balanced"]["balance_sd"] > 0
    for g, values in draws.items():
        target, se = full["groups"][g]["auc"], np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(np.mean(values) - target) <= 3 * se + 1e-12, g  # (Black, the smallest, is kept whole)
        assert abs(la["groups"][g]["auc"] - target) <= 3 * se + 1e-12, g  # --balanced-draws 200 averages the same way
    assert np.std(draws["White"]) > 0.005  # balancing adds noise: one draw moves the AUC


def test_balanced_ece_and_threshold_metrics_use_the_full_test_set():
    df = make_preds(900, ("edema",), seed=10)
    full = fairscan.audit(df, attrs=["race"], intervals="none", tune_thresholds_on_test=True).to_dict()
    bal = fairscan.audit(df, attrs=["race"], intervals="none", tune_thresholds_on_test=True, balanced_test=True)
    for g, ge in _balanced(bal.to_dict(), "edema", "race")["groups"].items():
        want = full["labels"]["edema"]["attrs"]["race"]["groups"][g]
        assert ge["ece"] == want["ece"] and ge["threshold"] == want["threshold"]


def test_each_replicate_draws_its_own_balanced_sets():
    """The bootstrap resamples the whole procedure: its replicates of a balanced AUC vary more than resampling
    one fixed draw would make them, and the replicates are centred on the full-set AUC."""
    df = make_preds(1500, ("edema",), seed=11, images_per_patient=1)
    bal = fairscan.audit(df, attrs=["race"], balanced_test=True, n_boot=300)
    assert bal.centres  # balanced replicates say what they are centred on
    d = bal.to_dict()
    full = fairscan.audit(df, attrs=["race"], n_boot=300).to_dict()
    assert d["summary"]["mean_auc_ci"] is not None
    white_bal = np.diff(_balanced(d, "edema", "race")["groups"]["White"]["ci"])[0]
    white_full = np.diff(full["labels"]["edema"]["attrs"]["race"]["groups"]["White"]["ci"])[0]
    assert white_bal > 1.3 * white_full  # the balanced White set is a small part of the White images


def test_balancing_an_attribute_whose_groups_all_lack_an_auc():
    df = make_preds(200, ("edema",), seed=12)
    d = fairscan.audit(df, attrs=["sex", "race"], balanced_test=True, n_boot=20, min_pos=40, min_neg=10).to_dict()
    race = d["labels"]["edema"]["attrs"]["race"]
    assert race["balanced"] is None and all(g["auc"] is None for g in race["groups"].values())
    assert d["summary"]["attrs"]["race"]["gap"] is None
