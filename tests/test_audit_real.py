"""The audit on a real model's published per-image outputs (Glocker et al.'s CheXpert DenseNet-121 sample,
``../shared/data/glocker``): point AUCs equal scikit-learn's, and balanced gaps depend on the images alone."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import fairscan
from tests.conftest import shared_file

LABELS = {"no_finding": "No Finding", "pleural_effusion": "Pleural Effusion"}


@pytest.fixture(scope="module")
def preds() -> pd.DataFrame:
    """The file in fairscan's predictions format: each row an image (the sample repeats some, drawn with
    replacement, so the row number identifies it), label 1 positive and -1 or blank negative (the authors'
    convention), the model's logits as scores."""
    raw = pd.read_csv(shared_file("glocker", "chexpert-model.embeddings.csv"))
    out = pd.DataFrame({"image_id": [f"row{i:04d}" for i in range(len(raw))], "patient_id": raw["patient_id"],
                        "sex": raw["sex"], "race": raw["race"]})  # fmt: skip
    for lab, col in LABELS.items():
        out[f"label_{lab}"] = (raw[col] == 1).astype(float)
        out[f"logit_{lab}"] = raw[f"Logit - {col}"]
    return out


def test_point_aucs_equal_scikit_learn(preds):
    d = fairscan.audit(preds, attrs=["sex", "race"], intervals="none").to_dict()
    for lab in LABELS:
        y, s = preds[f"label_{lab}"], preds[f"logit_{lab}"]
        assert d["labels"][lab]["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        for attr in ("sex", "race"):
            for g, ge in d["labels"][lab]["attrs"][attr]["groups"].items():
                m = preds[attr] == g
                assert ge["auc"] == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)
    # the README's figures for this file
    assert d["labels"]["no_finding"]["auc"] == pytest.approx(0.8873, abs=5e-5)
    assert d["labels"]["pleural_effusion"]["attrs"]["race"]["groups"]["Black"]["auc"] == pytest.approx(0.8423, abs=5e-5)


def _gap(df, **kw) -> float:
    d = fairscan.audit(df, balanced_test=True, intervals="none", **kw).to_dict()
    return d["labels"]["pleural_effusion"]["attrs"]["race"]["gap"]


def test_balanced_gaps_are_unchanged_by_attribute_subset_row_order_and_other_scores(preds):
    base = _gap(preds, attrs=["sex", "race"])
    assert _gap(preds, attrs=["race"]) == base
    assert _gap(preds, attrs=["race"], labels=["pleural_effusion"]) == base
    assert _gap(preds.sample(frac=1.0, random_state=0).reset_index(drop=True), attrs=["sex", "race"]) == base
    other = preds.copy()
    other["logit_no_finding"] = np.random.default_rng(1).normal(size=len(other))  # another label's scores
    assert _gap(other, attrs=["sex", "race"]) == base


def test_a_change_to_one_image_outside_the_sets_changes_no_balanced_gap(preds):
    from fairscan.fairness.resample import balance_cells, image_keys

    lab = "pleural_effusion"
    order = np.argsort(preds[f"logit_{lab}"].to_numpy(), kind="mergesort")
    names = ["White", "Asian", "Black"]
    codes = preds["race"].map({g: i for i, g in enumerate(names)}).to_numpy()[order].astype(np.int32)
    cells = balance_cells(preds[f"label_{lab}"].to_numpy()[order].astype(np.int8), np.arange(len(preds)),
                          image_keys(preds["image_id"].to_numpy()[order]),
                          [("race", codes, names, np.ones(3, bool), 1)], seed=0, label=lab)  # fmt: skip
    kept = cells.point_counts(1)[:, 0] > 0
    outside = preds.index[order[~kept]][0]
    changed = preds.copy()
    changed.loc[outside, f"logit_{lab}"] += 5.0
    assert _gap(changed, attrs=["race"]) == _gap(preds, attrs=["race"])
