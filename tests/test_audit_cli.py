"""`fairscan audit` through the CLI: reports, JSON, gates and every bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from fairscan.schema import write_predictions
from tests._preds import make_preds

FAST = ["--n-boot", "50"]


@pytest.fixture
def preds_file(tmp_path):
    path = tmp_path / "preds.parquet"
    write_predictions(make_preds(600, ("edema", "effusion"), seed=0, gap=0.5), path)
    return path


def test_json_on_stdout(run_cli, preds_file):
    code, out, err = run_cli("audit", preds_file, "--attrs", "sex", "race", "--json", *FAST)
    assert code == 0, err
    d = json.loads(out)
    assert d["schema"] == "fairscan.audit/2"
    assert set(d["summary"]["attrs"]) == {"sex", "race"}


def test_console_report_and_out_dir(run_cli, preds_file, tmp_path):
    out_dir = tmp_path / "audit"
    code, out, err = run_cli("audit", preds_file, "--attrs", "sex", "race", "--out", out_dir, *FAST)
    assert code == 0, err
    assert "AUC points" in out
    for name in ("audit.json", "report.md", "report.html"):
        assert (out_dir / name).stat().st_size > 0
    assert json.loads((out_dir / "audit.json").read_text())["summary"]["mean_auc"] > 0.5


def test_gate_fails_with_exit_3(run_cli, preds_file):
    code, out, err = run_cli("audit", preds_file, "--attrs", "sex", "--max-gap", "0.001", *FAST)
    assert code == 3
    assert "sex gap" in err and "exceeds --max-gap" in err
    code, _, _ = run_cli(
        "audit", preds_file, "--attrs", "sex", "--max-gap", "0.99", "--min-auc", "0.5", *FAST
    )
    assert code == 0
    code, _, err = run_cli("audit", preds_file, "--attrs", "sex", "--min-auc", "0.99", *FAST)
    assert code == 3 and "below --min-auc" in err


def test_gate_above_one_is_refused_with_a_hint(run_cli, preds_file):
    code, _, err = run_cli("audit", preds_file, "--attrs", "sex", "--max-gap", "5")
    assert code == 2
    assert "not a fraction" in err and "0.05" in err


def test_several_files_compare(run_cli, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_predictions(make_preds(600, ("edema",), seed=0, gap=0.5), a)
    write_predictions(make_preds(600, ("edema",), seed=0, gap=0.0), b)
    code, out, err = run_cli("audit", a, b, "--attrs", "sex", "race", "--json", *FAST)
    assert code == 0, err
    d = json.loads(out)
    assert d["schema"] == "fairscan.comparison/2"
    assert set(d["models"]) == {"a", "b"}
    assert "b" in d["comparison"]["paired"]
    code, out, err = run_cli("audit", f"masked={a}", f"scratch={b}", "--attrs", "sex", "--json", *FAST)
    assert set(json.loads(out)["models"]) == {"masked", "scratch"}


def _write(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


BAD_INPUTS = {
    "missing image_id": (lambda d: d.drop(columns=["image_id"]), "missing column image_id"),
    "duplicate ids": (lambda d: d.assign(image_id="same"), "must be unique"),
    "prob above one": (lambda d: d.assign(prob_edema=d["prob_edema"] + 1), "probabilities in [0, 1]"),
    "prob NaN": (
        lambda d: d.assign(prob_edema=np.where(d.index == 3, np.nan, d["prob_edema"])),
        "probabilities in [0, 1]",
    ),
    "label not binary": (
        lambda d: d.assign(label_edema=np.where(d.index == 2, -1.0, d["label_edema"])),
        "must hold 1, 0 or empty",
    ),
    "label text": (lambda d: d.assign(label_edema=["yes"] * len(d)), "must hold 1, 0 or empty"),
    "no prob column": (lambda d: d.drop(columns=["prob_edema"]), "no prob_<id> or logit_<id>"),
    "no label columns": (lambda d: d[["image_id", "patient_id", "sex"]], "no label_<id> columns"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_with_message(run_cli, tmp_path, case):
    change, message = BAD_INPUTS[case]
    path = _write(tmp_path, change(make_preds(60, ("edema",), seed=0)))
    code, out, err = run_cli("audit", path, "--attrs", "sex")
    assert code == 2, (out, err)
    assert message in err
    assert str(path) in err or case == "no label columns"
    assert "Traceback" not in err


def test_unknown_attribute_lists_the_columns(run_cli, tmp_path):
    path = _write(tmp_path, make_preds(60, ("edema",), seed=0))
    code, _, err = run_cli("audit", path, "--attrs", "ethnicity")
    assert code == 2 and "unknown attribute 'ethnicity'" in err and "race" in err


def test_unknown_label(run_cli, tmp_path):
    path = _write(tmp_path, make_preds(60, ("edema",), seed=0))
    code, _, err = run_cli("audit", path, "--attrs", "sex", "--labels", "fracture")
    assert code == 2 and "unknown label(s) fracture" in err


def test_empty_missing_and_wrong_type_files(run_cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli("audit", empty, "--attrs", "sex")
    assert code == 2 and "empty" in err
    header_only = tmp_path / "header.csv"
    header_only.write_text("image_id,label_edema,prob_edema\n")
    code, _, err = run_cli("audit", header_only, "--attrs", "sex")
    assert code == 2 and "no rows" in err
    code, _, err = run_cli("audit", tmp_path / "nope.parquet", "--attrs", "sex")
    assert code == 2 and "no such file" in err
    wrong = tmp_path / "preds.xlsx"
    wrong.write_bytes(b"PK\x03\x04")
    code, _, err = run_cli("audit", wrong, "--attrs", "sex")
    assert code == 2 and "unsupported table type" in err
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all")
    code, _, err = run_cli("audit", fake, "--attrs", "sex")
    assert code == 2 and "cannot be read as parquet" in err


def test_without_patient_id_needs_image_resampling(run_cli, tmp_path):
    path = _write(tmp_path, make_preds(300, ("edema",), seed=0).drop(columns=["patient_id"]))
    code, _, err = run_cli("audit", path, "--attrs", "sex", *FAST)
    assert code == 2 and "no patient_id" in err and "--resample image" in err
    code, out, err = run_cli("audit", path, "--attrs", "sex", "--resample", "image", "--json", *FAST)
    assert code == 0
    assert any("resample images" in n for n in json.loads(out)["notes"])


def test_debug_shows_traceback(run_cli, tmp_path):
    path = _write(tmp_path, make_preds(60, ("edema",), seed=0).drop(columns=["image_id"]))
    code, _, err = run_cli("--debug", "audit", path, "--attrs", "sex")
    assert code == 2 and "Traceback" in err


def test_python_api_from_dataframe():
    import fairscan

    df = make_preds(300, ("edema",), seed=1)
    r = fairscan.audit(df, attrs=["sex"], n_boot=50)
    assert isinstance(r, fairscan.AuditResult)
    assert r.mean_auc == r.to_dict()["summary"]["mean_auc"]
    assert isinstance(r.by_group(), pd.DataFrame)
