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


# ---------------------------------------------------------------------- messages a new user runs into


def test_misnamed_label_and_score_columns_are_named(run_cli, tmp_path):
    df = make_preds(200, ("edema", "effusion"), seed=2)
    df["target_cardiomegaly"], df["probability_cardiomegaly"] = df["label_edema"], df["prob_edema"]
    code, out, err = run_cli("audit", _write(tmp_path, df), "--attrs", "sex", "--json", *FAST)
    assert code == 0
    notes = " ".join(json.loads(out)["notes"])
    assert "target_cardiomegaly, probability_cardiomegaly look like labels or scores but are not read" in notes
    only = df[["image_id", "patient_id", "sex", "target_cardiomegaly", "probability_cardiomegaly"]]
    code, _, err = run_cli("audit", _write(tmp_path, only, "only.csv"), "--attrs", "sex")
    assert code == 2 and "no label_<id> columns; column(s) target_cardiomegaly" in " ".join(err.split())


def test_an_attribute_with_one_group_says_why_there_is_no_gap(run_cli, tmp_path):
    df = make_preds(300, ("edema",), seed=3).assign(race="White")
    path = _write(tmp_path, df)
    code, out, err = run_cli("audit", path, "--attrs", "race", "--json", *FAST)
    d = json.loads(out)
    assert code == 0 and any("race: one group only (White)" in n for n in d["notes"])
    assert d["summary"]["attrs"]["race"]["why_no_gap"] == "race has one group only (White)"
    code, _, err = run_cli("audit", path, "--attrs", "race", "--max-gap", "0.05", *FAST)
    assert code == 3 and "no race gap: race has one group only (White)" in " ".join(err.split())


def test_images_without_an_attribute_value_are_counted_in_a_note(run_cli, tmp_path):
    df = make_preds(300, ("edema",), seed=4, images_per_patient=3)
    df.loc[:8, "sex"] = None
    code, out, _ = run_cli("audit", _write(tmp_path, df), "--attrs", "sex", "--json", *FAST)
    notes = json.loads(out)["notes"]
    assert code == 0 and "sex: 9 image(s) (3 patient(s)) have no value and are in no sex subgroup" in " ".join(notes)


def test_patients_whose_group_varies_are_counted_not_switched_to_images(run_cli, tmp_path):
    df = make_preds(600, ("edema",), seed=5, images_per_patient=3)
    df.loc[[0, 3, 6], "sex"] = np.where(df.loc[[0, 3, 6], "sex"] == "Male", "Female", "Male")
    code, out, _ = run_cli("audit", _write(tmp_path, df), "--attrs", "sex", "--json", *FAST)
    d = json.loads(out)
    assert code == 0 and d["summary"]["attrs"]["sex"]["patients_varying"] == 3
    assert d["summary"]["attrs"]["sex"]["p_value"] is not None
    assert not any("shuffles images" in n for n in d["notes"])


def test_messages_name_the_real_flags(run_cli, tmp_path):
    path = _write(tmp_path, make_preds(60, ("edema",), seed=0))
    code, _, err = run_cli("audit", path, "--attrs", "sex", "--ci", "1.5")
    assert code == 2 and "--ci:" in err and "--ci-level" not in err
    code, _, err = run_cli("audit", path, "--attrs", "sex", "--min-count", "0")
    assert code == 2 and "--min-count:" in err and "--min-pos" not in err
    code, _, err = run_cli("audit", path, "--attrs", "sex", "--balanced-draws", "0")
    assert code == 2 and "--balanced-draws:" in err


def test_values_in_messages_read_as_numbers(run_cli, tmp_path):
    df = make_preds(60, ("edema",), seed=0)
    df.loc[3, "prob_edema"] = -0.2
    code, _, err = run_cli("audit", _write(tmp_path, df), "--attrs", "sex")
    assert code == 2 and "has -0.2" in err and "np.float64" not in err


def test_an_interrupted_report_leaves_no_audit_json_and_is_cleaned_next_time(run_cli, tmp_path, monkeypatch):
    from fairscan.report import html

    out_dir = tmp_path / "audit"
    path = _write(tmp_path, make_preds(300, ("edema",), seed=6))
    code, _, _ = run_cli("audit", path, "--attrs", "sex", "--out", out_dir, *FAST)
    assert code == 0 and (out_dir / "audit.json").exists()
    (out_dir / ".report.html.abc123.tmp").write_text("")  # what a kill inside an atomic write leaves
    written = []

    def killed(self, text, *a, **k):  # the process dies while writing report.html
        written.append(self.name)
        if self.name.startswith(".report.html"):
            raise KeyboardInterrupt
        return original(self, text, *a, **k)

    from pathlib import Path

    original = Path.write_text
    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        from fairscan.report import write_report

        write_report(json.loads((out_dir / "audit.json").read_text()), out_dir)
    monkeypatch.undo()
    assert not (out_dir / "audit.json").exists()  # the folder says it is incomplete
    assert html  # (imported for the renderer)
    code, _, _ = run_cli("audit", path, "--attrs", "sex", "--out", out_dir, *FAST)
    assert code == 0 and (out_dir / "audit.json").exists()
    assert not list(out_dir.glob(".*.tmp"))
