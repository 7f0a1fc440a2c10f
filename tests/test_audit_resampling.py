"""Bootstrap intervals, permutation p-values and balanced test sets."""

import numpy as np
import pytest

import fairscan
from fairscan.fairness.resample import balanced_rows, bootstrap_counts, rng_for
from tests._preds import make_preds


def test_bootstrap_is_reproducible_and_seeded():
    df = make_preds(600, ("edema", "effusion"), seed=0, gap=0.3)
    a = fairscan.audit(df, attrs=["sex"], n_boot=100, permutations=0, seed=3).to_dict()
    b = fairscan.audit(df, attrs=["sex"], n_boot=100, permutations=0, seed=3).to_dict()
    c = fairscan.audit(df, attrs=["sex"], n_boot=100, permutations=0, seed=4).to_dict()
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
    w1 = np.diff(
        fairscan.audit(one, attrs=["sex"], n_boot=200, permutations=0).to_dict()["labels"]["edema"]["ci"]
    )[0]
    w4 = np.diff(
        fairscan.audit(many, attrs=["sex"], n_boot=200, permutations=0).to_dict()["labels"]["edema"]["ci"]
    )[0]
    w4_images = np.diff(
        fairscan.audit(many, attrs=["sex"], n_boot=200, permutations=0, resample="image").to_dict()["labels"][
            "edema"
        ]["ci"]
    )[0]
    assert w4 == pytest.approx(w1, rel=0.3)
    assert w4_images < 0.7 * w1  # resampling images ignores the duplication and is too narrow


def test_permutation_test_finds_a_real_gap():
    df = make_preds(1500, ("edema", "effusion"), seed=3, gap=0.6)
    d = fairscan.audit(df, attrs=["sex"], intervals="none", permutations=200).to_dict()
    assert d["summary"]["attrs"]["sex"]["p_value"] <= 0.01


def test_permutation_test_is_calibrated_without_a_gap():
    """With no real difference, p-values are roughly uniform: not too many below 0.05 or 0.2."""
    ps = []
    for seed in range(40):
        df = make_preds(240, ("edema",), seed=100 + seed, gap=0.0)
        d = fairscan.audit(
            df, attrs=["race"], intervals="none", permutations=99, seed=seed, min_pos=3, min_neg=3
        ).to_dict()
        p = d["summary"]["attrs"]["race"]["p_value"]
        if p is not None:
            ps.append(p)
    ps = np.array(ps)
    assert len(ps) >= 35
    assert (ps < 0.05).mean() <= 0.15
    assert 0.35 <= ps.mean() <= 0.65


def test_balanced_rows_equal_counts_without_repeats():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.3).astype(np.int8)
    groups = rng.choice(3, 1000, p=[0.7, 0.2, 0.1])
    groups[:5] = -1
    keep = balanced_rows(y, groups, 3, rng_for(0, 1))
    pos = [int(((groups == g) & (y == 1) & keep).sum()) for g in range(3)]
    neg = [int(((groups == g) & (y == 0) & keep).sum()) for g in range(3)]
    assert len(set(pos)) == 1 and len(set(neg)) == 1
    assert pos[0] == min(((groups == g) & (y == 1)).sum() for g in range(3))
    assert not keep[:5].any()
    assert keep.dtype == bool  # a mask: each row at most once
    again = balanced_rows(y, groups, 3, rng_for(0, 1))
    assert np.array_equal(keep, again)


def test_audit_with_balanced_test_sets():
    from sklearn.metrics import roc_auc_score

    df = make_preds(1200, ("edema",), seed=5)
    d = fairscan.audit(df, attrs=["race"], balanced_test=True, intervals="none", permutations=0).to_dict()
    la = d["labels"]["edema"]["attrs"]["race"]
    n_per, n_pos = la["balanced"]["n_per_group"], la["balanced"]["n_pos_per_group"]
    counts = [(g["n"], g["n_pos"]) for g in la["groups"].values()]
    assert all(c == (n_per, n_pos) for c in counts)
    assert n_pos == min(
        ((df["race"] == r) & (df["label_edema"] == 1)).sum() for r in ("White", "Asian", "Black")
    )
    # the overall AUC still comes from the full test set
    assert d["labels"]["edema"]["auc"] == pytest.approx(
        roc_auc_score(df["label_edema"], df["prob_edema"]), abs=1e-12
    )
    assert d["labels"]["edema"]["n"] == len(df)


def test_balanced_permutation_test_is_calibrated_and_finds_a_real_gap():
    """With --balanced-test the permutations redraw the balanced sets from the shuffled groups: without a
    real difference the p-values are roughly uniform (shuffling on the full test set instead would compare a
    small-sample gap with a large-sample null and give too many small p-values)."""
    ps = []
    for seed in range(80):
        df = make_preds(600, ("edema",), seed=200 + seed, gap=0.0, images_per_patient=1)
        d = fairscan.audit(
            df, attrs=["race"], balanced_test=True, intervals="none", permutations=99, seed=seed,
            min_pos=3, min_neg=3,
        ).to_dict()  # fmt: skip
        ps.append(d["summary"]["attrs"]["race"]["p_value"])
    ps = np.array([p for p in ps if p is not None])
    assert len(ps) >= 75
    # measured: 5% below 0.1 and a mean of 0.54; shuffling on the full test set gave 17.5% and 0.40
    assert (ps < 0.1).mean() <= 0.13
    assert 0.45 <= ps.mean() <= 0.62

    df = make_preds(1500, ("edema", "effusion"), seed=3, gap=0.6)
    d = fairscan.audit(df, attrs=["sex"], balanced_test=True, intervals="none", permutations=200).to_dict()
    assert d["summary"]["attrs"]["sex"]["p_value"] <= 0.01
    assert not any("full test set" in n for n in d["notes"])
