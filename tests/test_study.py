"""`fairscan study`: a tiny study end to end; resume skips finished steps; the report equals the JSON it came from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fairscan.errors import InputError
from fairscan.studies import load_study, plan_study, run_study

STUDY = """\
# tiny: a two-row study for the tests
# Command:  fairscan study tiny
# Runtime:  seconds
# Paper:    none
# Quick:    fairscan study tiny:quick

extends: _study
title: "Tiny: MAE (random init) vs scratch"
reproduces: tests

study:
  table: Tiny
  rows:
    - {preset: mae, label: MAE}
    - {preset: vit-scratch, label: Scratch}
  show: [groups, worst]
  comparisons:
    - name: MAE vs scratch
      model: mae
      reference: vit-scratch
      paper: "pre-training helps"
      expect: {mean_auc: higher, gap_sex: lower, gap_race: lower}
  checks:
    - {attr: race, group: Black, expect: lower, paper: planted}

expected:
  unit: AUC points
  source: none
"""


@pytest.fixture(scope="module")
def study_env(tmp_path_factory):
    """One shared folder: the tiny study preset, and the paths every run of this module writes under."""
    root = tmp_path_factory.mktemp("study")
    (root / "presets").mkdir()
    (root / "presets" / "tiny.yaml").write_text(STUDY)
    mp = pytest.MonkeyPatch()
    mp.setenv("FAIRSCAN_PRESETS", str(root / "presets"))
    paths = {"data": str(root / "data"), "runs": str(root / "runs"), "studies": str(root / "studies")}
    yield root, paths
    mp.undo()


@pytest.fixture(scope="module")
def first_run(study_env):
    root, paths = study_env
    written = run_study("tiny", quick=True, paths=paths)
    return written


def test_plan_orders_steps_by_dependency(study_env):
    _, paths = study_env
    plan = plan_study("table2", quick=True, paths=paths, seeds=2)
    kinds = [s.kind for s in plan.steps]
    keys = [s.key for s in plan.steps]
    for i, step in enumerate(plan.steps):
        for dep in step.deps:
            assert keys.index(dep) < i, f"{step.key} runs before {dep}"
    assert kinds.count("pretrain") == 3  # pre-training is not repeated per seed
    assert kinds.count("finetune") == 6 and kinds.count("predict") == 6
    assert any(str(s.out).endswith("mae-cx14-seed1") for s in plan.steps)
    shared = plan_study("table5", quick=True, paths=paths)  # Table 5's 100% row is Table 2's CXPT run
    assert [str(s.out) for s in shared.steps if s.kind == "finetune"][-1].endswith("runs/mae-cxpt")


def test_study_writes_the_report(first_run):
    d = load_study(first_run["json"])
    assert d["schema"] == "fairscan.study/1" and d["quick"] and d["seeds"] == [0]
    assert [r["preset"] for r in d["rows"]] == ["mae", "vit-scratch"]
    assert d["rows"][0]["metrics"]["mean_auc"]["paper"] == pytest.approx(0.793)
    assert set(d["comparison"]["models"]) == {"mae", "vit-scratch"}
    for key in ("markdown", "html", "audit_html"):
        assert first_run[key].exists()
    assert "MAE vs scratch" in first_run["markdown"].read_text()


def test_report_numbers_equal_the_audit_json(first_run):
    """Every number of the main table is the audit's (fractions -> points), and the paper's."""
    d = load_study(first_run["json"])
    md = first_run["markdown"].read_text()
    table = md.split("## Tiny: the paper vs ours")[1].split("\n\n")[1]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| Row")]
    assert len(lines) == len(d["rows"])
    for line, row in zip(lines, d["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        audit = d["comparison"]["models"][row["preset"]]
        want = {
            "mean_auc": audit["summary"]["mean_auc"],
            "gap_sex": audit["summary"]["attrs"]["sex"]["gap"],
            "gap_race": audit["summary"]["attrs"]["race"]["gap"],
        }
        for k, m in enumerate(d["metrics"]):
            paper, ours, diff = cells[1 + 3 * k : 4 + 3 * k]
            assert row["metrics"][m]["mean"] == want[m]
            value = float(ours.split(" ")[0])
            assert value == pytest.approx(round(100 * want[m], 2), abs=1e-9)
            if row["metrics"][m]["paper"] is not None:
                assert float(paper) == pytest.approx(100 * row["metrics"][m]["paper"])
                assert float(diff) == pytest.approx(
                    round(100 * (want[m] - row["metrics"][m]["paper"]), 2), abs=0.011
                )
            ci = (
                audit["summary"]["mean_auc_ci"]
                if m == "mean_auc"
                else audit["summary"]["attrs"][m[4:]]["gap_ci"]
            )
            assert row["metrics"][m]["ci"] == ci  # one seed: the study's interval is the audit's own
            if ci:
                low, high = re.search(r"\[(-?[\d.]+), (-?[\d.]+)\]", ours).groups()
                assert float(low) == pytest.approx(round(100 * ci[0], 2)) and float(high) == pytest.approx(
                    round(100 * ci[1], 2)
                )
    # the paired comparison is the audit's own paired difference (the audit's reference is the first row)
    paired = d["comparison"]["comparison"]
    assert paired["reference"] == "mae"
    comp = d["comparisons"][0]["metrics"]["mean_auc"]  # mae - vit-scratch
    audit_diff = paired["paired"]["vit-scratch"]  # vit-scratch - mae
    assert comp["diff"] == pytest.approx(-audit_diff["mean_auc_diff"])
    if audit_diff["mean_auc_diff_ci"]:
        assert comp["ci"] == pytest.approx([-x for x in reversed(audit_diff["mean_auc_diff_ci"])])
    html = first_run["html"].read_text()
    for line in lines:  # the HTML shows the same cells
        for cell in [c.strip() for c in line.strip("|").split("|")][1:]:
            assert cell.replace("−", "-") in html.replace("−", "-")


def test_resume_skips_finished_steps(study_env, first_run):
    root, paths = study_env
    model = Path(paths["runs"]) / "mae" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    again = run_study("tiny", quick=True, paths=paths)
    steps = load_study(again["json"])["steps"]
    assert steps and all(s["status"] == "skipped" for s in steps)
    assert model.stat().st_mtime_ns == stamp
    # a lost predictions file is made again; nothing else runs
    lost = Path(paths["runs"]) / "vit-scratch" / "predictions" / "test.parquet"
    lost.unlink()
    steps = load_study(run_study("tiny", quick=True, paths=paths)["json"])["steps"]
    ran = [s for s in steps if s["status"] == "ran"]
    assert [s["kind"] for s in ran] == ["predict"] and lost.exists()


def test_more_seeds_only_add_the_new_runs(study_env, first_run, run_cli):
    root, paths = study_env
    code, out, err = run_cli(
        "study", "tiny:quick", "--seeds", "2", "--plan", *(f"--set=paths.{k}={v}" for k, v in paths.items())
    )
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if re.match(r"\s*\d+\.", ln)]
    todo = [ln for ln in lines if " todo " in ln]
    assert todo and all("seed" in ln or "seed1" in ln for ln in todo)
    assert sum(" done " in ln for ln in lines) == len(lines) - len(todo)
    # run them: only the seed-1 steps run, and the report shows mean +- sd over the two seeds
    written = run_study("tiny", quick=True, paths=paths, seeds=2)
    d = load_study(written["json"])
    ran = [s["out"] for s in d["steps"] if s["status"] == "ran"]
    assert ran and all("seed1" in out for out in ran)
    m = d["rows"][0]["metrics"]["mean_auc"]
    assert len(m["values"]) == 2 and m["sd"] is not None and m["mean"] == pytest.approx(sum(m["values"]) / 2)
    assert set(d["comparison"]["models"]) == {
        "mae@seed0",
        "mae@seed1",
        "vit-scratch@seed0",
        "vit-scratch@seed1",
    }
    assert " ± " in written["markdown"].read_text()
    # the paper's comparison, paired by seed, with the between-seed variance in its interval and p-value
    comp = d["comparisons"][0]["metrics"]["mean_auc"]
    per_seed = [a - b for a, b in zip(d["rows"][0]["metrics"]["mean_auc"]["values"],
                                      d["rows"][1]["metrics"]["mean_auc"]["values"])]  # fmt: skip
    assert comp["diff"] == pytest.approx(sum(per_seed) / 2) and "t-test over 2 seeds" in comp["method"]
    assert comp["seed_sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
    assert 0 < comp["p_value"] <= 1 and comp["ci"][0] < comp["diff"] < comp["ci"][1]
    # the worst subgroup, compared the same way: the seed mean of the per-seed (bias-corrected) differences
    worst = d["comparisons"][0]["metrics"]["worst_race"]
    assert "t-test over 2 seeds" in worst["method"] and worst["ci"][0] < worst["diff"] < worst["ci"][1]
    row = d["rows"][0]["worst"]["race"]  # its seed mean, sd and the interval of that mean
    assert row["mean"] == pytest.approx(sum(row["values"]) / 2) and row["sd"] is not None
    assert row["ci"] is None or row["ci"][0] <= row["ci"][1]


def test_other_settings_in_a_finished_run_are_an_error(study_env, first_run):
    _, paths = study_env
    with pytest.raises(InputError, match=r"holds a finetune run with other settings \(epochs: 1 vs 2"):
        run_study("tiny", quick=True, paths=paths, overrides=["finetune.epochs=2"])


def test_study_cli_errors(run_cli):
    code, _, err = run_cli("study", "audit-paper")
    assert code == 2 and "audit preset" in err
    code, _, err = run_cli("study", "table2", "--seeds", "0")
    assert code == 2
    code, _, err = run_cli("study", "nope")
    assert code == 2 and "unknown preset" in err


def test_study_json_round_trips(first_run):
    text = first_run["json"].read_text()
    assert json.loads(text)["units"] == "fraction"
