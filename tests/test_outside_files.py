"""Outside files read as they are: named label columns, recoded labels, and images that a sample repeats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import fairscan
from fairscan.fairness.mapping import apply_mapping, load_mapping
from fairscan.schema import dedupe, read_predictions, repeated_images, validate_predictions
from tests.conftest import shared_file

# The mapping of issue 12, as written there: Glocker et al.'s chexpert-model.embeddings.csv as published.
GLOCKER_MAPPING = """\
format: wide
labels: {no_finding: "No Finding", pleural_effusion: "Pleural Effusion"}
score: "Logit - {name}"
target: "{name}"
score_kind: logit
target_values: {1: 1, 0: 0, -1: 0}
target_blank: 0
image_id: __row__
patient_id: patient_id
path: Path
attrs: {sex: sex, race: race}
"""


@pytest.fixture
def glocker(tmp_path):
    path = shared_file("glocker", "chexpert-model.embeddings.csv")
    (tmp_path / "map.yaml").write_text(GLOCKER_MAPPING)
    return path, tmp_path / "map.yaml"


def test_the_issues_mapping_audits_glockers_file_as_published(glocker, run_cli):
    path, mapping = glocker
    preds = read_predictions(path, mapping=load_mapping(mapping))
    assert preds.labels == ["no_finding", "pleural_effusion"] and len(preds.frame) == 3000
    raw = pd.read_csv(path)
    assert preds.frame["path"].tolist() == raw["Path"].tolist()
    # The shared data's README: positives = 1, uncertain -1 and blank as 0 (the authors' convention).
    for lab, overall, by_group in (
        (
            "no_finding",
            0.8873,
            {"Asian": 0.8950, "Black": 0.8810, "White": 0.8828, "Female": 0.8692, "Male": 0.9039},
        ),
        (
            "pleural_effusion",
            0.8629,
            {"Asian": 0.8827, "Black": 0.8423, "White": 0.8600, "Female": 0.8755, "Male": 0.8519},
        ),
    ):
        assert roc_auc_score(preds.y(lab), preds.p(lab)) == pytest.approx(overall, abs=5e-5)
        for group, auc in by_group.items():
            rows = ((preds.frame["race"] == group) | (preds.frame["sex"] == group)).to_numpy()
            assert roc_auc_score(preds.y(lab)[rows], preds.p(lab)[rows]) == pytest.approx(auc, abs=5e-5)
    code, out, err = run_cli(
        "audit",
        path,
        "--mapping",
        mapping,
        "--attrs",
        "sex",
        "race",
        "--intervals",
        "none",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["labels"]["pleural_effusion"]["auc"] == pytest.approx(0.8629, abs=5e-5)


def test_repeated_images_are_noted_and_dedupe_moves_fg_sex_from_0_56_to_1_32(glocker):
    path, mapping = glocker
    preds = read_predictions(path, mapping=load_mapping(mapping))
    repeats = repeated_images(preds)  # by "path"
    assert (repeats.rows, repeats.images, repeats.extra_rows, repeats.repeated, repeats.conflicting) == (
        3000,
        2652,
        348,
        304,
        0,
    )
    assert repeats.note().startswith("348 of 3,000 rows repeat 304 images (same path): 2,652 distinct images")
    assert "--dedupe path" in repeats.note()
    assert (
        repeats.deduped_note()
        == "kept one row per path: 348 repeated rows dropped (3,000 rows -> 2,652 images)"
    )
    once = dedupe(preds, "path")
    assert len(once.frame) == 2652 and repeated_images(once) is None and once.source == preds.source
    assert (
        once.frame["path"].tolist() == pd.read_csv(path)["Path"].drop_duplicates().tolist()
    )  # first rows kept
    before = fairscan.audit(preds, attrs=["sex", "race"], intervals="none")
    after = fairscan.audit(once, attrs=["sex", "race"], intervals="none")
    assert round(100 * before.gap("sex"), 2) == 0.56
    assert round(100 * after.gap("sex"), 2) == 1.32
    assert repeats.note() in before.notes  # the audit says the copies are there


def test_the_audit_dedupes_by_path_when_asked(glocker, run_cli):
    path, mapping = glocker
    code, out, err = run_cli("audit", path, "--mapping", mapping, "--attrs", "sex", "race", "--intervals", "none",
                             "--dedupe", "path", "--json")  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    assert d["n_images"] == 2652 and round(100 * d["summary"]["attrs"]["sex"]["gap"], 2) == 1.32
    assert "kept one row per path: 348 repeated rows dropped (3,000 rows -> 2,652 images)" in d["notes"]
    assert d["settings"]["dedupe"] == "path"
    code, _, err = run_cli("audit", path, "--mapping", mapping, "--attrs", "sex", "--dedupe", "Path")
    assert code == 2 and "no column 'Path'" in err


def test_copies_that_disagree_are_counted():
    frame = pd.DataFrame(
        {
            "image_id": list("abcde"),
            "path": ["x", "x", "y", "y", "z"],
            "sex": ["Male", "Male", "Female", "Male", "Female"],
            "label_edema": [1.0, 1.0, 0.0, 0.0, 1.0],
            "prob_edema": [0.9, 0.9, 0.2, 0.2, 0.7],
        }
    )
    preds = validate_predictions(frame)
    r = repeated_images(preds)
    assert (r.repeated, r.extra_rows, r.conflicting) == (2, 2, 1)
    assert "1 of these images have copies that disagree" in r.note()
    assert dedupe(frame, "path")["image_id"].tolist() == ["a", "c", "e"]  # a DataFrame in, a DataFrame out
    assert repeated_images(frame.drop(columns="path")) is None
    with pytest.raises(fairscan.InputError, match="no column 'Path'"):
        dedupe(preds, "Path")


def _outside(tmp_path, **changes):
    """A small CheXpert-like file: display-name columns, 1 / 0 / -1 / blank labels, logits."""
    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame(
        {
            "Path": [f"p{i % 30}.jpg" for i in range(n)],
            "patient": [f"pat{i // 2}" for i in range(n)],
            "Sex": rng.choice(["Male", "Female"], n),
            "Edema": np.resize([1.0, 0.0, -1.0, np.nan], n),
            "Logit - Edema": rng.normal(size=n),
        }
    )
    df.to_csv(tmp_path / "outside.csv", index=False)
    mapping = {
        "format": "wide",
        "labels": {"edema": "Edema"},
        "score": "Logit - {name}",
        "target": "{name}",
        "score_kind": "logit",
        "patient_id": "patient",
        "path": "Path",
        "attrs": {"sex": "Sex"},
        **changes,
    }
    return df, mapping


def test_target_values_and_target_blank_recode_the_labels(tmp_path):
    df, mapping = _outside(tmp_path, target_values={1: 1, 0: 0, -1: 0}, target_blank=0)
    out = apply_mapping(tmp_path / "outside.csv", mapping)
    assert out["label_edema"].tolist() == np.resize([1.0, 0.0, 0.0, 0.0], len(df)).tolist()
    assert out["path"].tolist() == df["Path"].tolist() and out["image_id"].tolist() == [
        str(i) for i in range(40)
    ]
    _, masked = _outside(tmp_path, target_values={1: 1, 0: 0, -1: "mask"})  # blank: masked by default
    y = apply_mapping(tmp_path / "outside.csv", masked)["label_edema"].to_numpy(dtype=float)
    np.testing.assert_array_equal(y, np.resize([1.0, 0.0, np.nan, np.nan], len(df)))
    _, plain = _outside(tmp_path)  # no recoding: -1 is refused by the schema, with what to do
    with pytest.raises(fairscan.InputError, match="must hold 1, 0 or empty"):
        validate_predictions(apply_mapping(tmp_path / "outside.csv", plain))


def test_a_list_of_labels_fills_name_with_its_spelling(tmp_path):
    _, mapping = _outside(tmp_path, labels=["Edema"], target_values={1: 1, 0: 0, -1: 0})
    assert "label_edema" in apply_mapping(tmp_path / "outside.csv", mapping).columns


def test_bad_mappings_exit_2_with_what_to_do(run_cli, tmp_path):
    cases = [
        ({"score": "Logit {name}"}, "names column 'Logit Edema' for label edema, which is missing"),
        ({"score": "Logit - {nom}"}, "cannot be filled"),
        ({"target_values": {1: 1, 0: 0}}, "has -1.0"),
        ({"target_blank": "zero"}, "target_blank"),
        ({"path": "file"}, "'file', which is missing"),
    ]
    for change, message in cases:
        _, mapping = _outside(tmp_path, **change)
        (tmp_path / "m.json").write_text(json.dumps(mapping))
        code, _, err = run_cli(
            "audit", tmp_path / "outside.csv", "--mapping", tmp_path / "m.json", "--attrs", "sex"
        )
        assert code == 2, (change, err)
        assert message in err, (change, err)
    _, mapping = _outside(tmp_path, score="Logit {name}")
    (tmp_path / "m.json").write_text(json.dumps(mapping))
    _, _, err = run_cli("audit", tmp_path / "outside.csv", "--mapping", tmp_path / "m.json", "--attrs", "sex")
    assert "columns naming 'Edema': Edema, Logit - Edema" in err


def test_features_tables_round_trip_with_their_provenance(tmp_path):
    from fairscan.representations.features import read_features, write_features
    from fairscan.representations.simulate import simulate_features

    frame = simulate_features(patients=20, dim=12, seed=0)
    write_features(frame, tmp_path / "feats.parquet", provenance={"model": "medical-mae", "pool": "avg"})
    f = read_features(tmp_path / "feats.parquet")
    assert f.columns == [f"feat_{i}" for i in range(12)]  # numeric order: feat_10 after feat_9
    assert f.provenance == {"schema": "fairscan.features/1", "model": "medical-mae", "pool": "avg"}
    np.testing.assert_array_equal(f.matrix(), frame[f.columns].to_numpy())
    write_features(frame, tmp_path / "feats.csv")
    assert read_features(tmp_path / "feats.csv").frame["patient_id"].tolist() == frame["patient_id"].tolist()
    bad = frame.copy()
    bad.loc[3, "feat_2"] = np.nan
    with pytest.raises(fairscan.InputError, match="feature column 'feat_2' has a missing"):
        write_features(bad, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
