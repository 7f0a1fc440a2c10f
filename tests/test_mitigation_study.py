"""`fairscan study mitigation:quick`: ERM, the balanced set and the four methods on synthetic data with a planted
race gap, audited together; each method's difference from ERM is paired (by seed, on shared replicates)."""

from __future__ import annotations

import pytest

from fairscan.studies import load_study, run_study


@pytest.mark.slow
def test_the_mitigation_study_reports_each_method_against_erm(tmp_path):
    paths = {"data": str(tmp_path / "data"), "runs": str(tmp_path / "runs"), "studies": str(tmp_path / "studies")}
    written = run_study("mitigation", quick=True, paths=paths)
    d = load_study(written["json"])
    methods = ["resample", "reweight", "groupdro", "adversarial"]
    assert [r["preset"] for r in d["rows"]] == ["mae", "balanced-mae", *(f"mitigation-{m}-mae" for m in methods)]
    assert d["metrics"] == ["mean_auc", "gap_sex", "gap_race"]
    for comp in d["comparisons"]:
        assert comp["reference"] == ["mae"]
        assert list(comp["metrics"]) == [*d["metrics"], "worst_sex", "worst_race"]  # the worst subgroup too
        for m in comp["metrics"]:
            assert set(comp["metrics"][m]) >= {"diff", "ci", "p_value", "method"}
        # one seed: the study's difference is the comparison's paired one, bias-corrected like a FG difference
        paired = d["comparison"]["comparison"]["paired"][comp["model"][0]]
        assert comp["metrics"]["worst_race"]["diff"] == pytest.approx(paired["worst_diff"]["race"])
        assert comp["metrics"]["worst_race"]["p_value"] == pytest.approx(paired["worst_diff_p"]["race"])
    for row in d["rows"]:
        assert set(row["groups"]["race"]) == {"White", "Asian", "Black"}
        worst = row["worst"]["race"]  # the audit's worst subgroup, with its interval (one seed)
        audit = d["comparison"]["models"][row["preset"]]["summary"]["attrs"]["race"]
        assert worst["mean"] == audit["worst_group_auc"] and worst["ci"] == audit["worst_group_auc_ci"]
    assert "## Worst subgroup: its mean AUC over labels" in written["markdown"].read_text()
    assert "Worst subgroup by race" in written["markdown"].read_text()  # in the comparisons' table
    assert "groupdro vs ERM" in written["markdown"].read_text().replace("Group DRO", "groupdro")
