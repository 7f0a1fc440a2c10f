"""Markdown report: every number read back from the tables equals the audit dict's (in points)."""

from __future__ import annotations

import re

import pytest
from _audit_fixtures import delong_style, make_audit, make_comparison
from _report_checks import (
    assert_points,
    check_audit_tables,
    check_comparison_table,
    check_worst_comparison_table,
    keyed_markdown_tables,
    markdown_tables,
)

from fairscan.errors import InputError
from fairscan.report._format import ERR_SCHEMA
from fairscan.report.markdown import audit_markdown, comparison_markdown


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"balanced": True},
        {"intervals": False, "thresholds": False, "gate": False},
        {"missing": (("fracture", "race", "Black"), ("edema", "sex", "Female"))},
    ],
    ids=["full", "balanced", "no-intervals-no-thresholds", "two-missing"],
)
def test_audit_numbers_round_trip(kwargs):
    d = make_audit(**kwargs)
    md = audit_markdown(d)
    tables = keyed_markdown_tables(md, list(d["summary"]["attrs"]))
    assert check_audit_tables(d, tables) > 200

    mean = re.search(r"\*\*Mean AUC:\*\* (.+)", md).group(1)
    assert_points(mean, d["summary"]["mean_auc"], d["summary"]["mean_auc_ci"], where="mean AUC")
    heads = re.findall(r"\*\*Fairness gap \(FG\):\*\* (.+?) · p = (\S+)", md)
    assert len(heads) == len(d["summary"]["attrs"])
    for (fg, p), s in zip(heads, d["summary"]["attrs"].values(), strict=True):
        assert_points(fg, s["gap"], s["gap_ci"], where="FG")
        assert float(p) == pytest.approx(s["p_value"], rel=5e-3)


def test_delong_intervals_only_where_the_json_has_them():
    """DeLong covers single AUCs: headers of columns without any interval do not promise one."""
    d = delong_style(make_audit())
    md = audit_markdown(d)
    tables = keyed_markdown_tables(md, ["sex", "race"])
    check_audit_tables(d, tables)
    assert tables["summary-sex"][0] == [
        "Subgroup",
        "Mean AUC",
        "Δ vs mean over subgroups",
        "Δ vs whole population",
    ]
    assert "### Per label, by sex: AUC [95% CI]" in md
    assert "Intervals: 95% CIs, DeLong." in md


def test_audit_states_units_and_sections():
    md = audit_markdown(make_audit())
    assert "AUC points" in md and "JSON holds fractions" in md
    for heading in (
        "# Fairness audit: preds",
        "## Summary",
        "### sex",
        "### race",
        "## Per label",
        "## Notes",
    ):
        assert heading in md.splitlines()
    assert "Δ vs mean over subgroups" in md and "Δ vs whole population" in md
    assert "- Fracture, race=Black: too few positives (3 < 10)" in md
    assert "**Gate:** passed (max gap 5.00)" in md


def test_nulls_read_as_dashes_and_sections_drop_out():
    d = make_audit(intervals=False, thresholds=False, gate=False)
    md = audit_markdown(d)
    assert "Intervals: off." in md
    assert "## Threshold metrics" not in md and "**Gate:**" not in md
    header, rows = keyed_markdown_tables(md, ["sex", "race"])["labels-race"]
    fracture = rows[list(d["labels"]).index("fracture")]
    assert fracture[header.index("Black")] == "—" and fracture[header.index("Gap")] == "—"


def test_comparison_round_trip():
    d = make_comparison()
    md = comparison_markdown(d)
    assert "AUC points" in md and "JSON holds fractions" in md
    header, rows = next(t for t in markdown_tables(md) if t[0][0] == "Model")
    assert check_comparison_table(d, header, rows) > 10
    header, rows = next(t for t in markdown_tables(md) if t[0][0] == "Model" and "Worst sex" in t[0])
    assert check_worst_comparison_table(d, header, rows) == 3 * 2 + 2 * 2
    for a, c in d["comparison"]["fs_constant"].items():
        assert f"{a} {c * 100:.2f}" in md  # C is stated
    for name in d["models"]:
        assert f"### {name}" in md


def test_comparison_gate():
    d = make_comparison()
    d["gate"] = {
        "max_gap": 0.01,
        "min_auc": None,
        "passed": False,
        "reasons": ["mae: race gap 0.0142 > 0.01"],
    }
    assert "**Gate:** FAILED (max gap 1.00): mae: race gap 0.0142 > 0.01" in comparison_markdown(d)


def test_comparison_without_intervals():
    d = make_comparison(intervals=False)
    header, rows = next(t for t in markdown_tables(comparison_markdown(d)) if t[0][0] == "Model")
    check_comparison_table(d, header, rows)


def test_user_text_cannot_break_a_table():
    d = make_audit(model="a|b*c")
    d["notes"] = ["group | with pipe"]
    md = audit_markdown(d)
    assert "# Fairness audit: a\\|b\\*c" in md
    assert "- group \\| with pipe" in md


def test_wrong_schema_is_an_input_error():
    with pytest.raises(InputError) as err:
        audit_markdown(make_comparison())
    assert str(err.value).startswith(
        ERR_SCHEMA.format(found="fairscan.comparison/2", expected="fairscan.audit/2 or fairscan.audit/1")
    )
    with pytest.raises(InputError):
        comparison_markdown({"schema": "nope"})
    with pytest.raises(InputError):
        audit_markdown([1, 2])


def test_minimal_audit_renders():
    md = audit_markdown({"schema": "fairscan.audit/1", "model": "empty", "labels": {}, "summary": {}})
    assert "# Fairness audit: empty" in md and "**Mean AUC:** —" in md
