"""Pre-training pools (fractions, leakage) and the balanced fine-tuning set (exact counts, seeded)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from fairscan.data.cohorts import _sex_quota, balance_training_set, make_pool
from fairscan.data.manifest import Prepared, write_prepared
from fairscan.data.synthetic import prepare_synthetic_manifest
from fairscan.errors import InputError
from fairscan.schema import read_manifest


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("pool")
    chexpert = prepare_synthetic_manifest(base / "chexpert", layout="chexpert", patients=120, seed=4).parent
    nih = prepare_synthetic_manifest(base / "nih", layout="nih", patients=60, seed=5).parent
    return chexpert, nih


def test_pool_takes_a_seeded_fraction_of_patients(sources):
    chexpert, nih = sources
    pool = make_pool([nih, chexpert], fraction=0.3, seed=0).manifest
    for folder in (nih, chexpert):
        src = read_manifest(folder)
        name = json.loads((folder / "prepare.json").read_text())["dataset"]
        part = pool[pool["source"] == name]
        assert part["patient_id"].nunique() == round(0.3 * src["patient_id"].nunique())
        # whole patients: every image of a chosen patient comes along
        chosen = part["patient_id"].str.split("/", n=1).str[1]
        assert len(part) == src["patient_id"].isin(set(chosen)).sum()
    assert pool["image_id"].is_unique and pool["image_id"].str.match(r"^(nih|chexpert)/").all()
    assert (pool["split"] == "train").all() and set(pool["source_split"]) == {"train", "validate", "test"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in pool["path"])
    again = make_pool([nih, chexpert], fraction=0.3, seed=0).manifest
    other = make_pool([nih, chexpert], fraction=0.3, seed=1).manifest
    assert pool.equals(again) and set(pool["patient_id"]) != set(other["patient_id"])
    # the order of the sources does not matter
    swapped = make_pool([chexpert, nih], fraction=0.3, seed=0).manifest
    assert set(swapped["patient_id"]) == set(pool["patient_id"])


def test_pool_leakage_is_counted(sources, tmp_path):
    chexpert, nih = sources
    full = make_pool([chexpert, nih])  # every split of each source: its validate and test patients leak
    m = read_manifest(chexpert)
    held = m.loc[m["split"] != "train", "patient_id"]
    leak = {x["dataset"]: x for x in full.extra["leakage"]}
    assert leak["chexpert"]["patients"] == held.nunique() and leak["chexpert"]["images"] == len(held)
    assert any("leakage" in w and "chexpert" in w for w in full.warnings)
    train_only = make_pool([chexpert], splits=["train"])
    assert train_only.extra["leakage"] == []
    # another split of the same patients (e.g. the published split) as the evaluation manifest
    other = m.assign(split=m["split"].map({"train": "test", "validate": "train", "test": "train"}))
    write_prepared(Prepared(other, "chexpert", None, {}, {}), tmp_path / "eval")
    leaked = make_pool([chexpert], splits=["train"], evaluation=[tmp_path / "eval"]).extra["leakage"]
    assert leaked[0]["patients"] == m.loc[m["split"] == "train", "patient_id"].nunique()


def test_pool_cli(sources, tmp_path, run_cli):
    chexpert, nih = sources
    code, out, err = run_cli("prepare", "pool", nih, chexpert, "--fraction", "0.5", "--out", tmp_path / "p")
    assert code == 0, err
    assert "leakage" in err and read_manifest(tmp_path / "p")["source"].nunique() == 2
    code, _, err = run_cli("prepare", "pool", chexpert, chexpert, "--out", tmp_path / "q")
    assert code == 2 and "twice" in err
    code, _, err = run_cli("prepare", "pool", chexpert, "--fraction", "0", "--out", tmp_path / "q")
    assert code == 2 and "--fraction" in err


def fake_manifest(folder, groups, seed_rows=("validate", "test")):
    """A manifest with ``groups`` = {(race, sex): images} in train (one patient per image) plus held-out rows."""
    rows = []
    for (race, sex), n in groups.items():
        rows += [{"race": race, "sex": sex, "split": "train"} for _ in range(n)]
    rows += [{"race": "White", "sex": "Male", "split": s} for s in seed_rows]
    df = pd.DataFrame(rows)
    df["image_id"] = [f"img{i}" for i in range(len(df))]
    df["patient_id"] = [f"p{i}" for i in range(len(df))]
    df = df.assign(
        path="/data/" + df["image_id"] + ".jpg", study_id=df["patient_id"], view="PA", age=50.0, label_x=1.0
    )
    write_prepared(Prepared(df, "fake", None, {}, {}), folder)
    return folder


def test_balanced_set_exact_counts(tmp_path):
    groups = {("White", "Male"): 60, ("White", "Female"): 20, ("Asian", "Male"): 3, ("Asian", "Female"): 27,
              ("Black", "Male"): 8, ("Black", "Female"): 4, (None, "Male"): 5}  # fmt: skip
    prepared = balance_training_set(fake_manifest(tmp_path / "m", groups), seed=0)
    after = prepared.extra["balance"]["after"]
    assert prepared.extra["balance"]["per_race"] == 12
    assert after == {
        "White": {"Female": 6, "Male": 6},
        "Asian": {"Female": 9, "Male": 3},
        "Black": {"Female": 4, "Male": 8},
    }
    m = prepared.manifest
    assert set(m.loc[m["split"] != "train", "split"]) == {
        "validate",
        "test",
    }  # held-out rows kept as they are
    assert [d["reason"] for d in prepared.dropped] == ["train images without a race"]
    again = balance_training_set(tmp_path / "m", seed=0).manifest
    other = balance_training_set(tmp_path / "m", seed=1).manifest
    assert m["image_id"].tolist() == again["image_id"].tolist() and set(m["image_id"]) != set(
        other["image_id"]
    )


def test_sex_quota():
    assert _sex_quota({"Female": 50, "Male": 50}, 41) == {"Female": 21, "Male": 20}
    assert _sex_quota({"Female": 2, "Male": 30}, 12) == {"Female": 2, "Male": 10}
    assert _sex_quota({"Female": 2, "Male": 3, "missing": 9}, 12) == {"Female": 2, "Male": 3, "missing": 7}


def test_balance_cli_and_missing_race(tmp_path, run_cli):
    fake_manifest(tmp_path / "m", {("White", "Male"): 10, ("Black", "Female"): 3, ("Asian", "Male"): 4})
    code, out, err = run_cli("prepare", "balance", tmp_path / "m", "--out", tmp_path / "b")
    assert code == 0, err
    assert read_manifest(tmp_path / "b", split="train")["race"].value_counts().to_dict() == {
        "White": 3,
        "Black": 3,
        "Asian": 3,
    }
    assert "3 images per race" in err
    code, _, err = run_cli("prepare", "balance", tmp_path / "m", "--out", tmp_path / "m")
    assert code == 2 and "one of the inputs" in err
    fake_manifest(tmp_path / "n", {("White", "Male"): 10, ("Black", "Female"): 3})
    with pytest.raises(InputError, match="no Asian"):
        balance_training_set(tmp_path / "n")
