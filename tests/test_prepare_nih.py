"""`fairscan prepare nih`: the real Data_Entry_2017 metadata, and the synthetic layout read back."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fairscan.data.nih import prepare_nih
from fairscan.data.splits import patients_disjoint
from fairscan.data.synthetic import make_synthetic
from fairscan.errors import InputError
from fairscan.schema import NIH_LABELS, read_manifest
from tests.conftest import shared_file


def test_real_metadata_with_official_style_lists(tmp_path):
    csv = shared_file("nih", "Data_Entry_2017_v2020.csv.gz")
    raw = pd.read_csv(csv, usecols=["Image Index", "Patient ID"])
    test = raw["Patient ID"] % 5 == 0  # NIH's lists split by patient too
    (tmp_path / "test_list.txt").write_text("\n".join(raw.loc[test, "Image Index"]) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(raw.loc[~test, "Image Index"]) + "\n")
    prepared = prepare_nih(csv, lists=tmp_path, validate_fraction=0.1, seed=0)
    m = prepared.manifest
    assert len(m) == 112120 and prepared.dropped == []
    assert (m["split"] == "test").sum() == int(test.sum())
    assert patients_disjoint(m["patient_id"], m["split"]) == []
    assert m["sex"].value_counts().to_dict() == {"Male": 63340, "Female": 48780}
    assert m["race"].isna().all() and set(m["view"]) == {"AP", "PA"}
    positives = {lab: int(m[f"label_{lab}"].sum()) for lab in NIH_LABELS}
    assert (
        positives["hernia"] == 227 and positives["infiltration"] == 19894 and positives["effusion"] == 13317
    )
    assert m["image_id"].iloc[0] == "00000001_000.png" and m["path"].iloc[0] == "images/00000001_000.png"
    assert m["patient_id"].iloc[0] == "00000001" and m["study_id"].iloc[0] == "00000001_000"


@pytest.fixture(scope="module")
def synthetic_nih(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("nih"), layout="nih", patients=80, seed=1)


def test_synthetic_layout_read_back_by_the_cli(synthetic_nih, tmp_path, run_cli):
    code, out, err = run_cli("prepare", "nih", synthetic_nih, "--out", tmp_path / "m", "--check-images")
    assert code == 0, err
    m = read_manifest(tmp_path / "m")
    entries = pd.read_csv(synthetic_nih / "Data_Entry_2017_v2020.csv")
    assert len(m) == len(entries) and set(m["split"]) == {"train", "validate", "test"}
    test_list = (synthetic_nih / "test_list.txt").read_text().split()
    assert set(m.loc[m["split"] == "test", "image_id"]) == set(test_list)
    assert "nothing dropped" in out


def test_kaggle_layout_images_are_found(synthetic_nih, tmp_path):
    root = tmp_path / "nih"
    shutil.copytree(synthetic_nih, root)
    (root / "images_001").mkdir()
    shutil.move(root / "images", root / "images_001" / "images")
    m = prepare_nih(root).manifest
    assert m["path"].str.startswith("images_001/images/").all()
    assert all((root / p).is_file() for p in m["path"])


def test_lists_that_do_not_fit(synthetic_nih, tmp_path):
    root = tmp_path / "nih"
    shutil.copytree(synthetic_nih, root, ignore=shutil.ignore_patterns("images"))
    test_list = (root / "test_list.txt").read_text().split()
    (root / "train_val_list.txt").write_text("\n".join([*test_list[:1], "99999999_000.png"]) + "\n")
    with pytest.raises(InputError, match="in both lists"):
        prepare_nih(root)
    (root / "train_val_list.txt").write_text("99999999_000.png\n")
    with pytest.raises(InputError, match="not in the CSV") as err:
        prepare_nih(root)
    assert "train_val_list.txt" in err.value.message


def test_image_check_drops_and_lists_missing_and_unreadable_images(synthetic_nih, tmp_path, run_cli):
    root = tmp_path / "nih"
    shutil.copytree(synthetic_nih, root)
    images = sorted((root / "images").iterdir())
    images[0].unlink()
    images[1].write_bytes(b"not a png")
    code, out, err = run_cli("prepare", "nih", root, "--out", tmp_path / "m", "--check-images")
    assert code == 0, err
    record = json.loads((tmp_path / "m" / "prepare.json").read_text())
    problems = {Path(x["path"]).name: x["problem"] for x in record["image_problems"]}
    assert problems[images[0].name] == "missing" and problems[images[1].name].startswith("unreadable")
    assert {d["reason"] for d in record["dropped"]} == {"missing images", "unreadable images"}
    ids = set(read_manifest(tmp_path / "m")["image_id"])
    assert images[0].name not in ids and images[1].name not in ids and len(ids) == len(images) - 2
    assert "2 missing or unreadable image(s) were dropped" in err
