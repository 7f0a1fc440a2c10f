"""The audit as Markdown: the console's content as GitHub-flavoured tables, in AUC points."""

from __future__ import annotations

from fairscan.report._format import (
    ADJUSTED_NOTE,
    AUDIT_SCHEMA,
    COMPARISON_SCHEMA,
    OLD_SCHEMAS,
    UNITS_NOTE,
    all_notes,
    attrs_of,
    check_schema,
    intervals_text,
)
from fairscan.report._tables import (
    Table,
    attr_summaries,
    comparison_facts,
    comparison_notes,
    comparison_table,
    gate_text,
    header_facts,
    label_tables,
    mean_auc_cell,
    subgroup_detail_table,
    threshold_table,
    thresholds_text,
    worst_comparison_table,
)


def _esc(text: str) -> str:
    """Text safe inside a table cell or a line: pipes escaped, line breaks flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def _table(t: Table, *, heading: str | None = "###") -> list[str]:
    lines = [f"{heading} {_esc(t.title)}", ""] if heading else []
    lines.append("| " + " | ".join(_esc(c) for c in t.columns) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for num in t.numeric) + "|")
    for row in t.rows:
        cells = [f"**{_esc(c.plain())}**" if c.strong else _esc(c.plain()) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    if t.caption:
        lines += ["", f"_{_esc(t.caption)}_"]
    return [*lines, ""]


def _facts(facts: list[tuple[str, str]]) -> str:
    return " · ".join(f"{_esc(k)}: {_esc(v)}" for k, v in facts)


def _units(d: dict) -> str:
    return f"> **Units: {UNITS_NOTE}.** {intervals_text(d)}"


def _summary(d: dict, *, level: str = "##") -> list[str]:
    mean = mean_auc_cell(d)
    lines = [f"**Mean AUC:** {mean.plain()}", "", f"_{_esc(ADJUSTED_NOTE)}_", ""]
    for s in attr_summaries(d):
        lines += [
            f"{level}# {_esc(s.attr)}",
            "",
            f"**Fairness gap (FG):** {s.fg.plain()} · p = {s.p} · best **{_esc(s.best)}** · "
            f"worst **{_esc(s.worst)}**",
            "",
            _facts(s.facts),
            "",
        ]
        if s.table is not None:
            lines += _table(s.table, heading=None)
    return lines


def _notes(notes: list[str]) -> list[str]:
    if not notes:
        return ["## Notes", "", "None.", ""]
    return ["## Notes", "", *(f"- {_esc(n)}" for n in notes), ""]


def audit_markdown(d: dict) -> str:
    """A single-model audit (``fairscan.audit/1``) as one Markdown document."""
    check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS)
    lines = [f"# Fairness audit: {_esc(d.get('model', ''))}", "", _facts(header_facts(d)), "", _units(d), ""]
    lines += ["## Summary", "", *_summary(d)]
    thr = thresholds_text(d)
    if thr:
        lines += [thr, ""]
    gate = gate_text(d)
    if gate is not None:
        lines += [f"**Gate:** {_esc(gate[1])}", ""]
    lines += ["## Per label", ""]
    for t in label_tables(d):
        lines += _table(t)
    thr_table = threshold_table(d)
    if thr_table is not None:
        lines += ["## Threshold metrics", "", *_table(thr_table, heading=None)]
    lines += ["## Every subgroup, label by label", ""]
    for attr in attrs_of(d):
        lines += _table(subgroup_detail_table(d, attr))
    lines += _notes(all_notes(d))
    return "\n".join(lines).rstrip() + "\n"


def comparison_markdown(d: dict) -> str:
    """A comparison (``fairscan.comparison/1``): the models side by side, then each model's summary."""
    check_schema(d, COMPARISON_SCHEMA)
    models = d.get("models") or {}
    first = next(iter(models.values()), {})
    lines = ["# Fairness comparison", "", _facts(comparison_facts(d)), "", _units(first), ""]
    gate = gate_text(d)
    if gate is not None:
        lines += [f"**Gate:** {_esc(gate[1])}", ""]
    lines += _table(comparison_table(d), heading="##")
    worst = worst_comparison_table(d)
    if worst is not None:
        lines += _table(worst, heading="##")
    lines += ["## Models", ""]
    for name, audit in models.items():
        lines += [f"### {_esc(name)}", "", _facts(header_facts(audit)), "", *_summary(audit, level="###")]
    lines += _notes(comparison_notes(d))
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["audit_markdown", "comparison_markdown"]
