"""`fairscan demo`: the README's first command, end to end with tiny settings (--quick)."""

from __future__ import annotations

import json
from html import escape

from fairscan.config import load_preset


def test_demo_end_to_end(tmp_path, run_cli):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli("demo", "--quick", "--out", out)
    assert code == 0, stderr
    assert stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    # progress on stderr, step by step, through every stage
    for stage in ("prepare chexpert", "pre-train demo-pretrain", "fine-tune demo-mae", "fine-tune demo-scratch",
                  "predict test", "embed test with demo-mae", "ensemble demo-ensemble", "audit"):  # fmt: skip
        assert stage in stderr, stage
    assert (out / "data" / "chexpert" / "manifest.parquet").exists()
    assert (out / "runs" / "demo-pretrain" / "model.safetensors").exists()
    d = json.loads((out / "study.json").read_text())
    assert [r["preset"] for r in d["rows"]] == ["demo-mae", "demo-scratch", "demo-ensemble"]
    # the fine-tuning from the MAE really started from it
    stage = json.loads((out / "runs" / "demo-mae" / "stage.json").read_text())
    assert stage["weights"]["source"].endswith("demo-pretrain") or "demo-pretrain" in json.dumps(
        stage["weights"]
    )
    # the comparison table and the HTML report, with the race audit the planted gap is about
    html = (out / "report.html").read_text()
    assert "Subgroups by race" in html and "Black" in html
    assert (out / "audit" / "report.html").exists()
    assert set(d["comparison"]["models"]) == {"demo-mae", "demo-scratch", "demo-ensemble"}
    # where the bias lives: the race probe and the KS tables of both models' features, on stdout and in the report
    rep = d["representations"]
    assert [r["preset"] for r in rep["rows"]] == ["demo-mae", "demo-scratch", "demo-ensemble"]
    assert rep["rows"][2]["probe"] is None  # an ensemble has no features of its own
    for r in rep["rows"][:2]:
        race = r["probe"]["race"]
        assert f"{race['auc_macro']:.3f}" in stdout and 0 < race["p_value"] <= 1
        title = f"KS tests of {r['label']}'s features"
        assert title in stdout and escape(title) in html
        assert len(r["ks_tests"]) == 2 * (3 + 1)  # 2 modes (quick) x (3 race pairs + 1 sex pair)
    assert "Where the bias lives" in stdout and "Where the bias lives" in html
    # run again: every step is skipped
    code, _, stderr = run_cli("demo", "--quick", "--out", out)
    assert code == 0 and stderr.count("(skipped)") == len(d["steps"])


def test_demo_plants_a_race_gap():
    """The demo's data plant the effect the report is meant to show (full strength, every race well represented)."""
    data = load_preset("demo").datasets["chexpert"]
    assert data.kind == "synthetic" and data.profile == "test" and data.effect in (None, 1.0)
    assert load_preset("demo").study.checks[0].group == "Black"
