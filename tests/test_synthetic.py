"""Synthetic datasets: each layout read back by its adapter, the population shares, determinism, and the planted
subgroup gap, detected by a cheap learned model (a ridge probe on 24 px pixels) with a patient bootstrap."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from fairscan.data.images import load_resized
from fairscan.data.synthetic import (
    CHEXPERT_DROPPED,
    DEMO_NAME,
    MIMIC_IV,
    _population,
    make_synthetic,
    prepare_synthetic,
)
from fairscan.errors import InputError
from fairscan.schema import read_manifest


@pytest.mark.parametrize(
    "layout, files",
    [
        ("chexpert", ["train.csv", "valid.csv", f"../{DEMO_NAME}"]),
        ("nih", ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"]),
        ("mimic", ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-split.csv.gz",
                   f"../../{MIMIC_IV}/hosp/admissions.csv.gz", f"../../{MIMIC_IV}/hosp/patients.csv.gz"]),
    ],
)  # fmt: skip
def test_each_layout_is_read_back_by_its_adapter(layout, files, tmp_path, run_cli):
    code, out, err = run_cli(
        "prepare", "synthetic", "--layout", layout, "--patients", "60", "--out", tmp_path
    )
    assert code == 0, err
    record = json.loads((tmp_path / "prepare.json").read_text())
    root = (
        tmp_path
        / "raw"
        / {"chexpert": "CheXpert-v1.0-small", "nih": "CXR8", "mimic": "mimic-cxr-jpg/2.0.0"}[layout]
    )
    assert record["dataset"] == layout and record["raw_root"] == str(root.resolve())
    for name in files:
        assert (root / name).is_file(), name
    m = read_manifest(tmp_path)
    assert all((root / p).is_file() for p in m["path"])
    assert record["synthetic"]["effect"]["group"] == ("Female" if layout == "nih" else "Black")
    assert "planted effect" in err


def test_chexpert_demographics_have_the_real_spellings(tmp_path):
    root = make_synthetic(tmp_path, patients=200, seed=0)
    demo = pd.read_excel(root.parent / DEMO_NAME)
    assert list(demo.columns) == ["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"]
    strings = set(demo["PRIMARY_RACE"].dropna())
    assert {"White", "Black or African American", "Asian, non-Hispanic"} <= strings
    assert strings & {
        race for race, _, _ in CHEXPERT_DROPPED if race not in ("White", "Black or African American")
    }
    assert set(demo["ETHNICITY"]) > {"Non-Hispanic/Non-Latino", "Not Hispanic"}
    train = pd.read_csv(root / "train.csv")
    assert demo["PATIENT"].nunique() < train["Path"].str.split("/").str[2].nunique() + 40  # some have no row


def test_population_shares_default_to_the_papers():
    people = _population(np.random.default_rng(0), 20000, (0.78, 0.15, 0.07))
    assert (people["sex"] == "Male").mean() == pytest.approx(0.59, abs=0.01)
    races = people["race"].dropna().value_counts(normalize=True)
    assert races["White"] == pytest.approx(0.78, abs=0.01) and races["Black"] == pytest.approx(0.07, abs=0.01)


def test_same_seed_same_bytes(tmp_path):
    a = make_synthetic(tmp_path / "a", patients=20, seed=5)
    b = make_synthetic(tmp_path / "b", patients=20, seed=5)
    c = make_synthetic(tmp_path / "c", patients=20, seed=6)

    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.jpg")))).hexdigest()

    assert (a / "train.csv").read_text() == (b / "train.csv").read_text() and digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_bad_settings():
    with pytest.raises(InputError, match="records no race"):
        make_synthetic("/tmp/unused", layout="nih", effect_group="race:Black")
    with pytest.raises(InputError, match="unknown layout"):
        make_synthetic("/tmp/unused", layout="padchest")
    with pytest.raises(InputError, match="outside"):
        make_synthetic("/tmp/unused", effect=2.0)


# ------------------------------------------------------------------------------------------ the planted gap


def _weighted_mean_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean AUC over labels for each row of ``weights`` (B x n: how often each image is drawn), all at once:
    for each positive, the weight of the negatives scored below it (scores are continuous: no ties)."""
    aucs = []
    for j in range(y.shape[1]):
        order = np.argsort(s[:, j])
        pos, w = y[order, j] == 1, weights[:, order]
        neg_below = np.cumsum(w * ~pos, axis=1)
        n_pos, n_neg = (w * pos).sum(1), (w * ~pos).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs.append((w * pos * neg_below).sum(1) / (n_pos * n_neg))
    return np.nanmean(np.stack(aucs), axis=0)


def test_the_test_profile_plants_a_detectable_race_gap(tmp_path):
    """A model trained on the test profile is worse on Black patients (the planted group), with a 95% patient
    bootstrap interval of the White - Black gap in mean AUC excluding zero; White vs Asian (both unaffected) is
    the control, its interval covering zero."""
    from sklearn.linear_model import Ridge

    prepared = prepare_synthetic(tmp_path, profile="test")
    m = prepared.manifest.reset_index(drop=True)
    x = np.stack([load_resized(prepared.image_root / p, 24).ravel() for p in m["path"]]).astype(np.float32)
    labels = [c for c in m.columns if c.startswith("label_")]
    train, test = (m["split"] != "test").to_numpy(), (m["split"] == "test").to_numpy()
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mu) / sd
    scores = Ridge(alpha=100.0).fit(x[train], m.loc[train, labels].to_numpy()).predict(x[test])
    y = m.loc[test, labels].to_numpy()
    race = m.loc[test, "race"].to_numpy()
    _, patient = np.unique(m.loc[test, "patient_id"].to_numpy(), return_inverse=True)
    n_patients = patient.max() + 1
    rng = np.random.default_rng(0)
    draws = np.stack(
        [np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients) for _ in range(300)]
    )
    weights = np.vstack([np.ones(n_patients), draws])[:, patient].astype(float)  # row 0: the test set itself
    auc = {g: _weighted_mean_auc(y, scores, weights * (race == g)) for g in ("White", "Asian", "Black")}
    assert auc["White"][0] > 0.85  # the findings are learnable
    planted, control = auc["White"] - auc["Black"], auc["White"] - auc["Asian"]
    assert planted[0] > 0.1
    low, high = np.percentile(planted[1:], [2.5, 97.5])
    assert low > 0.05, (low, high)
    low, high = np.percentile(control[1:], [2.5, 97.5])
    assert low < 0 < high, (low, high)
