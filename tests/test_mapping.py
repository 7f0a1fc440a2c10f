"""Outside prediction formats come in through an explicit mapping."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

LABELS = ["No Finding", "Cardiomegaly", "Edema"]


def test_reference_scripts_class_target_with_metadata(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    preds = pd.DataFrame({f"class_{i}": rng.random(n) for i in range(3)})
    for i in range(3):
        preds[f"target_{i}"] = (rng.random(n) < 0.3).astype(int)
    preds.to_csv(tmp_path / "predictions.test.csv", index=False)
    meta = pd.DataFrame(
        {
            "Path": [
                f"CheXpert-v1.0-small/train/patient{k // 2:05d}/study1/view1_frontal.jpg" for k in range(n)
            ],
            "sex": rng.choice(["Male", "Female"], n),
            "race": rng.choice(["White", "Asian", "Black"], n),
        }
    )
    meta.to_csv(tmp_path / "test.csv", index=False)
    mapping = {
        "format": "wide",
        "labels": LABELS,
        "score": "class_{i}",
        "target": "target_{i}",
        "metadata": "test.csv",
        "join": {"left": "__row__", "right": "__row__"},
        "attrs": {"sex": "sex", "race": "race", "patient_id": "Path"},
    }
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    code, out, err = run_cli(
        "audit", tmp_path / "predictions.test.csv", "--mapping", tmp_path / "map.json", "--attrs", "sex", "--json",
        "--n-boot", "20",
    )  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    assert set(d["labels"]) == {"no_finding", "cardiomegaly", "edema"}
    assert d["labels"]["edema"]["auc"] == pytest.approx(roc_auc_score(preds["target_2"], preds["class_2"]))


def test_long_format(tmp_path):
    from fairscan.fairness.mapping import apply_mapping
    from fairscan.schema import validate_predictions

    rows = []
    rng = np.random.default_rng(1)
    for i in range(50):
        for lab in ("Edema", "Cardiomegaly"):
            rows.append(
                {
                    "img": f"im{i}",
                    "pid": f"p{i // 2}",
                    "finding": lab,
                    "y": int(rng.random() < 0.4),
                    "score": rng.random(),
                    "sex": "Male" if i % 2 else "Female",
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    mapping = {
        "format": "long",
        "columns": {"image_id": "img", "label": "finding", "target": "y", "score": "score"},
        "patient_id": "pid",
        "attrs": {"sex": "sex"},
    }
    p = validate_predictions(apply_mapping(tmp_path / "long.csv", mapping))
    assert sorted(p.labels) == ["cardiomegaly", "edema"]
    assert len(p.frame) == 50 and p.has_patients


def test_mapping_errors(run_cli, tmp_path):
    pd.DataFrame({"class_0": [0.1], "target_0": [1]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "m.json").write_text(
        json.dumps({"format": "wide", "labels": ["a", "b"], "score": "class_{i}", "target": "target_{i}"})
    )
    code, _, err = run_cli("audit", tmp_path / "p.csv", "--mapping", tmp_path / "m.json", "--attrs", "sex")
    assert code == 2 and "'target_1'" in err
    (tmp_path / "m2.json").write_text(json.dumps({"format": "sideways"}))
    code, _, err = run_cli("audit", tmp_path / "p.csv", "--mapping", tmp_path / "m2.json", "--attrs", "sex")
    assert code == 2 and "format must be" in err
    (tmp_path / "m3.json").write_text(
        json.dumps(
            {"format": "wide", "labels": ["a"], "score": "class_{i}", "target": "target_{i}", "typo": 1}
        )
    )
    code, _, err = run_cli("audit", tmp_path / "p.csv", "--mapping", tmp_path / "m3.json", "--attrs", "sex")
    assert code == 2 and "typo" in err


def test_greedy_options_end_at_files():
    from fairscan.cli._common import expand_greedy

    assert expand_greedy(["audit", "--attrs", "sex", "race", "p.parquet"]) == [
        "audit",
        "--attrs",
        "sex",
        "--attrs",
        "race",
        "p.parquet",
    ]
    assert expand_greedy(["audit", "p.parquet", "--attrs", "sex", "--json"]) == [
        "audit",
        "p.parquet",
        "--attrs",
        "sex",
        "--json",
    ]
    assert expand_greedy(["pretrain", "--manifest", "a.parquet", "b.parquet"]) == [
        "pretrain",
        "--manifest",
        "a.parquet",
        "--manifest",
        "b.parquet",
    ]
    assert expand_greedy(["ensemble", "--weights", "1", "2", "a.parquet"]) == [
        "ensemble",
        "--weights",
        "1",
        "--weights",
        "2",
        "a.parquet",
    ]
