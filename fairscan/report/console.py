"""Rich tables for the terminal: the audit's summary, per-label tables and notes, in AUC points.

Written for 100-120 columns: intervals sit on a second, dimmed line under each value; ``compact=True`` puts
every attribute in one table without intervals (many labels, or a narrow terminal).
"""

from __future__ import annotations

import re

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from fairscan.report._format import (
    ADJUSTED_NOTE,
    AUDIT_SCHEMA,
    COMPARISON_SCHEMA,
    MISSING,
    OLD_SCHEMAS,
    UNITS_NOTE,
    all_notes,
    check_schema,
    intervals_text,
)
from fairscan.report._tables import (
    BALANCED_COLUMN,
    Cell,
    Table,
    attr_summaries,
    compact_label_table,
    comparison_facts,
    comparison_notes,
    comparison_table,
    gate_text,
    header_facts,
    label_tables,
    mean_auc_cell,
    threshold_table,
    thresholds_text,
    worst_comparison_table,
)

NARROW_NOTE = "Intervals left out: the terminal is too narrow for them (see report.md or the JSON)."


def _cell(c: Cell, *, two_lines: bool = True, intervals: bool = True) -> Text:
    t = Text(c.text, style="bold" if c.strong else "")
    for detail in (c.ci, c.extra) if intervals else ():
        if detail:
            t.append("\n" if two_lines else " ")
            t.append(detail, style="dim")
    return t


def _header(name: str, width: int) -> str:
    """A numeric column's header wrapped to the width of its numbers (at spaces, and after the ``+`` of an
    intersectional group such as ``Female+Black``), so it does not widen the column."""
    lines, line = [], ""
    for tok in (t for t in re.split(r"(?<=\+)|\s+", name) if t):
        sep = "" if not line or line.endswith("+") else " "
        if line and len(line) + len(sep) + len(tok) > max(width, 4):
            lines.append(line)
            line = tok
        else:
            line += sep + tok
    return "\n".join([*lines, line])


def _rich_table(
    t: Table,
    *,
    two_lines: bool = True,
    intervals: bool = True,
    wrap_headers: bool = False,
    title: bool = True,
) -> RichTable:
    """``two_lines``: each interval under its value; ``intervals=False`` leaves them out (narrow terminals)."""
    has_ci = any(c.ci for r in t.rows for c in r)
    caption = t.caption if intervals or not has_ci or not t.caption else f"{t.caption} {NARROW_NOTE}"
    rt = RichTable(
        caption=caption or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )
    columns, rows = list(t.columns), [list(r) for r in t.rows]
    texts = [[_cell(c, two_lines=two_lines, intervals=intervals) for c in r] for r in rows]
    numeric = list(t.numeric)
    if two_lines and intervals and has_ci:
        # counts stacked over each other, like the value-over-interval cells: saves ~20 columns
        if columns[1:3] == ["n", "Positives"]:
            columns[1:3], numeric[1:3] = ["n\npos."], [True]
            for r, tr in zip(rows, texts, strict=True):
                tr[1:3] = [Text(r[1].text + "\n").append(r[2].text, style="dim")]
        if columns[-1] == BALANCED_COLUMN:
            columns[-1], numeric[-1] = "balanced\nn / pos.\nper group", True
            for r, tr in zip(rows, texts, strict=True):
                n, _, pos = r[-1].text.partition(" / ")
                tr[-1] = Text(n + "\n").append(pos, style="dim")
    words = [w for r in rows for w in r[0].text.split()] if rows else []
    first_width = max((len(w) for w in words), default=None)
    for i, (name, num) in enumerate(zip(columns, numeric, strict=True)):
        widths = [len(line) for tr in texts for line in tr[i].plain.splitlines()]
        rt.add_column(
            _header(name, max(widths, default=0)) if num and wrap_headers else name,
            justify="right" if num else "left",
            no_wrap=i > 0,  # only the label column wraps (at spaces); numbers and group names never do
            min_width=first_width if i == 0 else None,
        )
    for tr in texts:
        rt.add_row(*tr)
    return rt


def _needed_width(console: Console, table: RichTable, t: Table) -> int:
    """Columns the table needs without squeezing anything but the label column down to its longest word."""
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    labels = [r[0].text for r in t.rows]
    longest = max((len(x) for x in labels), default=0)
    slack = longest - max((len(w) for x in labels for w in x.split()), default=0)
    return natural - slack


def _fitted(console: Console, t: Table, width: int, layouts: list[dict], *, title: bool = True) -> list:
    """The first layout of ``t`` that fits in ``width`` columns without cutting anything; failing all, the
    last layout split into several tables, each repeating the first column (many subgroups). Titles are
    printed above the tables, so a narrow table never wraps its title."""
    for layout in layouts:
        table = _rich_table(t, **layout)
        if _needed_width(console, table, t) <= width:
            return [Text(t.title, style="bold"), table] if title else [table]
    out: list = []
    for part in _split(console, t, width, layouts[-1]):
        out += [Text(part.title, style="bold")] if title else []
        out.append(_rich_table(part, **layouts[-1]))
    return out


def _columns(t: Table, cols: list[int], title: str = "", caption: str = "") -> Table:
    return Table(
        key=t.key,
        title=title,
        columns=[t.columns[i] for i in cols],
        rows=[[r[i] for i in cols] for r in t.rows],
        numeric=[t.numeric[i] for i in cols],
        caption=caption,
    )


def _split(console: Console, t: Table, width: int, layout: dict) -> list[Table]:
    """The columns after the first in the fewest consecutive, even chunks whose tables each fit."""
    rest = list(range(1, len(t.columns)))
    for n in range(2, len(rest) + 1):
        size = -(-len(rest) // n)
        chunks = [[0, *rest[i : i + size]] for i in range(0, len(rest), size)]
        parts = [_columns(t, cols) for cols in chunks]
        if all(_needed_width(console, _rich_table(p, **layout), p) <= width for p in parts):
            break
    n = len(chunks)
    return [
        _columns(t, cols, f"{t.title} ({k + 1} of {n})", t.caption if k == n - 1 else "")
        for k, cols in enumerate(chunks)
    ]


# From the most to the least detailed: full headers, wrapped headers, then no intervals.
_TWO_LINES = [{}, {"wrap_headers": True}, {"two_lines": False, "intervals": False, "wrap_headers": True}]
_ONE_LINE = [{"two_lines": False}, {"two_lines": False, "wrap_headers": True}, *_TWO_LINES[1:]]
_NO_INTERVALS = [{"two_lines": False, "intervals": False}, _TWO_LINES[-1]]


def _facts(facts: list[tuple[str, str]]) -> Text:
    t = Text()
    for i, (k, v) in enumerate(facts):
        if i:
            t.append(" · ", style="dim")
        t.append(f"{k} ", style="dim")
        t.append(v)
    return t


def _summary_panel(d: dict, console: Console) -> Panel:
    parts: list[RenderableType] = [_facts(header_facts(d))]
    mean = mean_auc_cell(d)
    line = Text("Mean AUC ", style="bold")
    line.append(mean.text, style="bold")
    if mean.ci:
        line.append(f" {mean.ci}")
    parts += [line, Text(f"Units: {UNITS_NOTE}. {intervals_text(d)}", style="dim")]
    for s in attr_summaries(d):
        head = Text(f"\n{s.attr}", style="bold cyan")
        head.append("  fairness gap FG ", style="dim")
        head.append(s.fg.text, style="bold")
        if s.fg.ci:
            head.append(f" {s.fg.ci}")
        head.append("  p ", style="dim")
        head.append(s.p)
        head.append("  best ", style="dim")
        head.append(s.best, style="green")
        head.append("  worst ", style="dim")
        head.append(s.worst, style="red")
        parts += [head, _facts(s.facts)]
        if s.table is not None:
            parts += _fitted(console, s.table, console.width - 4, _ONE_LINE, title=False)
    if any(s.fg_adjusted.text != MISSING for s in attr_summaries(d)):
        parts.append(Text(ADJUSTED_NOTE, style="dim"))
    thr = thresholds_text(d)
    if thr:
        parts.append(Text(thr, style="dim"))
    gate = _gate_line(d)
    if gate is not None:
        parts.append(gate)
    return Panel(Group(*parts), title=f"[bold]Fairness audit · {d.get('model', '')}[/]", title_align="left")


def _gate_line(d: dict) -> Text | None:
    gate = gate_text(d)
    if gate is None:
        return None
    passed, text = gate
    line = Text("Gate ", style="bold")
    line.append(text, style="green" if passed else "bold red")
    return line


def _notes_panel(notes: list[str]) -> Panel | None:
    if not notes:
        return None
    body = Text("\n".join(f"• {n}" for n in notes))
    return Panel(body, title="[bold yellow]Notes[/]", title_align="left", border_style="yellow")


def render_audit(d: dict, console: Console, *, compact: bool = False) -> None:
    """Print a single-model audit (``fairscan.audit/1``): summary, per-label tables, notes."""
    check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS)
    console.print(_summary_panel(d, console))
    for t in [compact_label_table(d)] if compact else label_tables(d):
        console.print()
        console.print(Group(*_fitted(console, t, console.width, _TWO_LINES)))
    thr = threshold_table(d)
    if thr is not None:
        console.print()
        console.print(Group(*_fitted(console, thr, console.width, _ONE_LINE)))
    console.print(Text(f"Units: {UNITS_NOTE}.", style="dim"))
    notes = _notes_panel(all_notes(d))
    if notes is not None:
        console.print(notes)


def render_comparison(d: dict, console: Console, *, compact: bool = False) -> None:
    """Print a comparison (``fairscan.comparison/1``): one row per model, paired differences vs the reference.

    ``compact`` leaves the intervals out (the marks for intervals that exclude 0 stay).
    """
    check_schema(d, COMPARISON_SCHEMA)
    first = next(iter((d.get("models") or {}).values()), {})
    head = Group(
        _facts(comparison_facts(d)),
        Text(f"Units: {UNITS_NOTE}. {intervals_text(first)}", style="dim"),
        *filter(None, [_gate_line(d)]),
    )
    console.print(Panel(head, title="[bold]Fairness comparison[/]", title_align="left"))
    for table in filter(None, [comparison_table(d), worst_comparison_table(d)]):
        console.print(Group(*_fitted(console, table, console.width, _NO_INTERVALS if compact else _TWO_LINES)))
    notes = _notes_panel(comparison_notes(d))
    if notes is not None:
        console.print(notes)
