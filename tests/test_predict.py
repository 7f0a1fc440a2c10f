"""`fairscan predict`: the predictions format, every image once, deterministic, and straight into the audit."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("single_thread")


def test_predict_writes_the_predictions_format(run_cli, run, manifest, tmp_path):
    from fairscan.io import sha256_file
    from fairscan.schema import read_manifest, read_predictions

    out = tmp_path / "preds.parquet"
    code, stdout, err = run_cli("predict", run, "--manifest", manifest, "--split", "test", "-o", out, "--cpu")
    assert code == 0, err
    assert stdout.strip() == str(out)
    preds = read_predictions(out)  # validates the schema
    test = read_manifest(manifest, split="test")
    frame = preds.frame
    assert frame["image_id"].tolist() == test["image_id"].tolist()  # every image once, in manifest order
    assert frame["patient_id"].tolist() == test["patient_id"].tolist()
    for col in ("sex", "race", "age"):
        assert frame[col].astype(str).tolist() == test[col].astype(str).tolist()
    labels = json.loads((run / "model.json").read_text())["labels"]
    assert preds.labels == labels and len(labels) == 14
    for lab in labels:
        assert frame[f"prob_{lab}"].between(0, 1).all()
        assert frame[f"label_{lab}"].equals(test[f"label_{lab}"])
    prov = preds.provenance
    assert prov["stage"] == "predict" and prov["split"] == "test" and prov["images"] == len(test)
    assert prov["weights_sha256"] == sha256_file(run / "model.safetensors")
    assert prov["manifest"]["sha256"] == sha256_file(manifest / "manifest.parquet")

    again = tmp_path / "again.parquet"
    assert run_cli("predict", run, "--manifest", manifest, "-o", again, "--cpu")[0] == 0
    assert read_predictions(again).frame.equals(frame)  # deterministic


def test_predictions_feed_the_audit(run_cli, run, manifest, tmp_path):
    from fairscan.fairness.audit import audit

    test, val = tmp_path / "test.parquet", tmp_path / "val.parquet"
    assert run_cli("predict", run, "--manifest", manifest, "-o", test, "--cpu")[0] == 0
    assert run_cli("predict", run, "--manifest", manifest, "--split", "validate", "-o", val, "--cpu")[0] == 0
    result = audit(test, attrs=["sex", "race"], thresholds_from=val, intervals="none")
    assert set(result.summary["attrs"]) == {"sex", "race"}
    assert 0.0 <= float(result.summary["mean_auc"]) <= 1.0


def test_predict_bad_inputs(run_cli, run, manifest, tmp_path):
    code, _, err = run_cli("predict", tmp_path, "--manifest", manifest, "-o", tmp_path / "p.parquet")
    assert code == 2 and "no model.json" in err

    code, _, err = run_cli(
        "predict", run, "--manifest", manifest, "--split", "tset", "-o", tmp_path / "p.parquet"
    )
    assert code == 2 and "--split: Input should be 'train', 'validate' or 'test' (got 'tset')" in err

    import pandas as pd

    df = pd.read_parquet(manifest / "manifest.parquet")
    (tmp_path / "m").mkdir()
    df[df["split"] != "test"].to_parquet(tmp_path / "m" / "manifest.parquet", index=False)
    code, _, err = run_cli("predict", run, "--manifest", tmp_path / "m", "-o", tmp_path / "p.parquet")
    assert code == 2 and "the test split is empty" in err

    df.drop(columns=["label_edema"]).to_parquet(tmp_path / "m" / "manifest.parquet", index=False)
    code, _, err = run_cli("predict", run, "--manifest", tmp_path / "m", "-o", tmp_path / "p.parquet")
    assert code == 2 and "lacks the model's label column(s) label_edema" in err
    assert not (tmp_path / "p.parquet").exists()
