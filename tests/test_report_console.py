"""Console report: readable at 100-120 columns, in AUC points, with the JSON's numbers."""

from __future__ import annotations

import re

import pytest
from _audit_fixtures import delong_style, make_audit, make_comparison
from _report_checks import NUM, assert_count, assert_points, name
from rich.console import Console

from fairscan.errors import InputError
from fairscan.report import render
from fairscan.report.console import NARROW_NOTE, render_audit, render_comparison

CELL_RE = re.compile(rf"{NUM}\*?(?: \[{NUM}, {NUM}\])?|—")
CI_RE = re.compile(rf"\[{NUM}, {NUM}\]")


def _text(fn, d, width: int = 120, **kw) -> str:
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    fn(d, console, **kw)
    return console.export_text()


def _row(lines: list[str], start: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def test_audit_summary_numbers():
    d = make_audit()
    out = _text(render_audit, d)
    assert "AUC points" in out and "JSON holds fractions" in out
    assert "Δ vs mean over subgroups" in out and "Δ vs whole population" in out
    mean = re.search(rf"Mean AUC ({NUM} \[{NUM}, {NUM}\])", out).group(1)
    assert_points(mean, d["summary"]["mean_auc"], d["summary"]["mean_auc_ci"])
    lines = [line.strip("│ ") for line in out.splitlines()]
    for attr, s in d["summary"]["attrs"].items():
        head = lines[_row(lines, f"{attr}  fairness gap FG")]
        fg = re.search(rf"FG ({NUM} \[{NUM}, {NUM}\])", head).group(1)
        assert_points(fg, s["gap"], s["gap_ci"], where=attr)
        assert f"best {s['best_group']}  worst {s['worst_group']}" in head
        facts = " ".join(lines[lines.index(head) + 1 : lines.index(head) + 4])
        adjusted = re.search(rf"adjusted FG ({NUM} \[{NUM}, {NUM}\])", facts).group(1)
        assert_points(adjusted, s["gap_adjusted"], s["gap_adjusted_ci"], where=attr)
        p = float(re.search(r"  p (\S+)", head).group(1))
        assert p == pytest.approx(s["p_value"], rel=5e-3)
        if s["p_value_holm"] != s["p_value"]:
            assert f"(Holm {s['p_value_holm']:.3g})" in head
        start = lines.index(head)
        for g in s["groups"]:
            i = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{g} "))
            cells = CELL_RE.findall(lines[i][len(g) :])
            assert_points(cells[0], s["group_mean_auc"][g], s["group_mean_auc_ci"][g], where=g)
            assert_points(cells[1], s["delta_vs_group_mean"][g], s["delta_vs_group_mean_ci"][g], where=g)
            assert_points(cells[2], s["delta_vs_population"][g], s["delta_vs_population_ci"][g], where=g)


def test_audit_label_table_numbers():
    """Each label's row holds n, AUC, subgroup AUCs and the gap; the line under it positives and intervals."""
    d = make_audit()
    lines = _text(render_audit, d).splitlines()
    start = _row(lines, "Per label, by sex")
    groups = d["summary"]["attrs"]["sex"]["groups"]
    for lab, e in d["labels"].items():
        i = next(i for i in range(start, len(lines)) if lines[i].startswith(name(lab) + " "))
        values = CELL_RE.findall(lines[i][len(name(lab)) :])
        n, rest = values[0], values[1:]
        under = lines[i + 1].split()
        pos, cis = under[0], CI_RE.findall(lines[i + 1])
        a = e["attrs"]["sex"]
        assert_count(n, e["n"])
        assert_count(pos, e["n_pos"])
        expected = [(e["auc"], e["ci"])] + [(a["groups"][g]["auc"], a["groups"][g]["ci"]) for g in groups]
        expected.append((a["gap"], a["gap_ci"]))
        shown_values, q = rest[: len(expected)], rest[len(expected)]
        for shown, ci, (value, want_ci) in zip(shown_values, cis, expected, strict=True):
            assert_points(f"{shown} {ci}", value, want_ci, where=lab)
        assert float(q) == pytest.approx(a["q_value"], rel=5e-3)  # the gap test's BH q-value
        assert lines[i].rstrip().endswith(a["worst_group"])


@pytest.mark.parametrize(
    ("width", "balanced", "narrow"),
    [(100, False, True), (120, False, False), (120, True, True), (140, True, False)],
)
def test_nothing_is_cut(width, balanced, narrow):
    """Tables never cut a number; where intervals do not fit (3 subgroups under 120 columns), they say so."""
    d = make_audit(balanced=balanced)
    out = _text(render_audit, d, width=width)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    for lab in d["labels"]:
        assert name(lab).split()[-1] in out
    assert (NARROW_NOTE.split(":")[0] in " ".join(out.split())) == narrow
    assert "AUC points" in out


def test_many_subgroups_split_into_tables_that_keep_the_label():
    groups = [f"{s}+{r}" for s in ("Male", "Female") for r in ("White", "Asian", "Black")]
    d = make_audit(attrs={"sex+race": groups}, missing=())
    out = _text(render_audit, d, width=100)
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 100
    assert "Per label, by sex+race: AUC [95% CI] (1 of 2)" in out and "(2 of 2)" in out
    assert out.count("Cardiomegaly ") >= 2  # every part repeats the label column
    row = next(line for line in out.split("(2 of 2)")[1].splitlines() if line.startswith("Cardiomegaly "))
    assert row.rstrip().endswith(d["labels"]["cardiomegaly"]["attrs"]["sex+race"]["worst_group"])


def test_delong_summary_has_no_empty_interval_headers():
    out = _text(render_audit, delong_style(make_audit()))
    assert "Mean AUC [95% CI]" not in out and "Δ vs mean over subgroups" in out
    assert "Per label, by sex: AUC [95% CI]" in out


def test_compact_puts_every_attribute_in_one_table():
    d = make_audit()
    out = _text(render_audit, d, width=100, compact=True)
    assert "…" not in out
    header = out[out.index("Per label:") :].splitlines()[:4]
    assert any("race:" in h for h in header) and any("sex:" in h for h in header)
    row = next(line for line in out.splitlines() if line.startswith("Cardiomegaly "))
    assert f"{d['labels']['cardiomegaly']['auc'] * 100:.2f}" in row
    assert "[" not in row  # no intervals in compact rows


def test_notes_thresholds_and_gate():
    d = make_audit()
    d["gate"] = {"max_gap": 0.001, "min_auc": 0.9, "passed": False, "reasons": ["race gap 0.0142 > 0.001"]}
    out = _text(render_audit, d)
    assert "Gate FAILED (max gap 0.10, min AUC 90.00): race gap 0.0142 > 0.001" in out
    assert "Notes" in out and "Fracture, race=Black: too few positives (3 < 10)" in out
    assert "Threshold metrics" in out and "Thresholds chosen on val.parquet" in out


def test_without_intervals_or_thresholds():
    out = _text(render_audit, make_audit(intervals=False, thresholds=False, gate=False))
    assert "[" not in out.split("Per label, by sex")[1]
    assert "Threshold metrics" not in out and "Gate" not in out
    assert "Intervals: off." in out


def test_comparison_rows_and_marks():
    d = make_comparison()
    out = _text(render_comparison, d)
    assert "AUC points" in out and "JSON holds fractions" in out
    attrs, c = d["comparison"]["attrs"], d["comparison"]
    for a in attrs:
        assert f"{a} {c['fs_constant'][a] * 100:.2f}" in out  # C shown
    lines = out.splitlines()
    for r in c["rows"]:
        i = _row(lines, r["model"] + " ")
        cells = CELL_RE.findall(lines[i][len(r["model"]) :])
        cis = CI_RE.findall(lines[i + 1])
        summary = d["models"][r["model"]]["summary"]
        assert_points(f"{cells[0]} {cis[0]}", r["mean_auc"], summary["mean_auc_ci"])
        for k, a in enumerate(attrs):
            assert_points(f"{cells[1 + k]} {cis[1 + k]}", r["gap"][a], summary["attrs"][a]["gap_ci"])
            assert_points(cells[1 + len(attrs) + k], r["fs"][a])
        if r["model"] == c["reference"]:
            assert "reference" in lines[i]
            continue
        p = c["paired"][r["model"]]
        diffs = [(p["mean_auc_diff"], p["mean_auc_diff_ci"])] + [
            (p["gap_diff"][a], p["gap_diff_ci"][a]) for a in attrs
        ]
        for shown, ci, (value, want) in zip(
            cells[1 + 2 * len(attrs) :], cis[1 + len(attrs) :], diffs, strict=True
        ):
            assert_points(f"{shown} {ci}", value, want)
            assert shown.endswith("*") == (want[0] > 0 or want[1] < 0)
        holm = [p["mean_auc_diff_p_holm"]] + [p["gap_diff_p_holm"][a] for a in attrs]
        assert re.findall(r"p (\S+)", lines[i + 2]) == [f"{h:.3g}" for h in holm]


def test_comparison_gate():
    d = make_comparison()
    d["gate"] = {"max_gap": 0.05, "min_auc": None, "passed": True, "reasons": []}
    assert "Gate passed (max gap 5.00)" in _text(render_comparison, d)


def test_comparison_compact_and_narrow():
    d = make_comparison()
    out = _text(render_comparison, d, width=100, compact=True)
    assert "…" not in out and "reference" in out
    assert not CI_RE.search(out.split("Models compared")[1].split("*")[0])


def test_render_picks_by_schema_and_rejects_others():
    assert "Fairness comparison" in _text(render, make_comparison())
    assert "Fairness audit" in _text(render, make_audit())
    with pytest.raises(InputError, match="schema"):
        _text(render_audit, make_comparison())
    with pytest.raises(InputError, match="schema"):
        _text(render, {"schema": "fairscan.audit/0"})


def test_minimal_audit_renders():
    out = _text(render_audit, {"schema": "fairscan.audit/1", "model": "empty", "labels": {}, "summary": {}})
    assert "Fairness audit · empty" in out and "Mean AUC —" in out


def test_a_small_subgroup_is_noted_once():
    """The audit's note on a subgroup with too few positives is not repeated by the subgroup's own note."""
    from _preds import make_preds

    import fairscan
    from fairscan.report._format import all_notes

    df = make_preds(n_images=300, labels=("edema", "effusion"), prevalence=0.1, seed=2)
    d = fairscan.audit(df, attrs=["race"], n_boot=20, min_pos=8, min_neg=8).to_dict()
    small = [g for g in ("White", "Asian", "Black")
             if (d["labels"]["edema"]["attrs"]["race"]["groups"][g].get("note"))]  # fmt: skip
    assert small, "the fixture needs a subgroup with too few positives"
    notes = all_notes(d)
    for g in small:
        assert sum(f"race={g}" in n and ("edema" in n.lower()) for n in notes) == 1, notes


def test_comparison_shows_the_worst_subgroups_and_old_files_do_without():
    d = make_comparison()
    out = _text(render_comparison, d)
    assert "Worst subgroups compared" in out and "not Holm-adjusted" in out
    for p in d["comparison"]["paired"].values():
        for a, value in p["worst_diff"].items():
            assert f"{100 * value:+.2f}" in out, a
    for p in d["comparison"]["paired"].values():  # a comparison written before worst_diff existed
        for key in ("worst_diff", "worst_diff_ci", "worst_diff_p"):
            del p[key]
    assert "Worst subgroups compared" not in _text(render_comparison, d)
