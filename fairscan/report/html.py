"""The audit as one self-contained HTML file: inline CSS, figures as inline PNG data URIs, no scripts.

The file opens offline and can be mailed or attached to a CI run as is: it fetches nothing.
"""

from __future__ import annotations

import json
from html import escape

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
    Cell,
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

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d8dee4; --bg2: #f6f8fa; --accent: #0969da;
        --ok: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font: 14px/1.45 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0; }
.facts { color: var(--muted); }
.facts b { color: var(--fg); font-weight: 600; }
.units { background: #fff8c5; border: 1px solid #eac54f; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 190px; background: var(--bg2); }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .ci, td .ci { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 12px; color: var(--muted); }
.table-wrap { overflow-x: auto; margin: 6px 0 10px; }
table { border-collapse: collapse; font-size: 13px; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 12px; padding-top: 4px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg2); text-align: left; font-weight: 600; white-space: nowrap; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .ci { display: block; }
tbody tr:hover { background: #f3f7fc; }
td.strong { font-weight: 700; }
tr.ref td { background: #f1f8ff; }
td.strong .ci { font-weight: 400; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.gate { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; color: #fff; }
.gate.ok { background: var(--ok); } .gate.bad { background: var(--bad); }
ul.notes li { margin: 3px 0; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
pre { background: var(--bg2); padding: 10px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print { main { max-width: none; } details { display: block; } }
"""


def _e(x) -> str:
    return escape(str(x), quote=True)


def _class(*names: str) -> str:
    names = tuple(n for n in names if n)
    return f' class="{" ".join(names)}"' if names else ""


def _cell(c: Cell, numeric: bool) -> str:
    ci = "".join(f'<span class="ci">{_e(x)}</span>' for x in (c.ci, c.extra) if x)
    return f"<td{_class('n' if numeric else '', 'strong' if c.strong else '')}>{_e(c.text)}{ci}</td>"


def _table(t: Table, *, heading: str | None = "h3", row_class=None) -> str:
    head = "".join(
        f"<th{_class('n' if num else '')}>{_e(c)}</th>" for c, num in zip(t.columns, t.numeric, strict=True)
    )
    body = []
    for row in t.rows:
        cells = "".join(_cell(c, num) for c, num in zip(row, t.numeric, strict=True))
        body.append(f"<tr{_class(row_class(row) if row_class else '')}>{cells}</tr>")
    caption = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    title = f"<{heading}>{_e(t.title)}</{heading}>" if heading else ""
    return (
        f'{title}<div class="table-wrap"><table id="{_e(t.key)}">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _facts(facts: list[tuple[str, str]]) -> str:
    return '<p class="facts">' + " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in facts) + "</p>"


def _card(key: str, cell: Cell, sub: str = "") -> str:
    ci = f'<div class="ci">{_e(cell.ci)}</div>' if cell.ci else ""
    sub = f'<div class="sub">{sub}</div>' if sub else ""
    return (
        f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(cell.text)}</div>{ci}{sub}</div>'
    )


def _figure(uri: str, alt: str, caption: str, key: str) -> str:
    return (
        f'<figure id="{_e(key)}"><img src="{uri}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _notes(notes: list[str]) -> str:
    items = "".join(f"<li>{_e(n)}</li>" for n in notes) or "<li>None.</li>"
    return f'<section id="notes"><h2>Notes</h2><ul class="notes">{items}</ul></section>'


def _page(title: str, body: str, version: str | None) -> str:
    made = f"fairscan {_e(version)}" if version else "fairscan"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}<footer>Made by {made} from the audit's JSON. Units: {_e(UNITS_NOTE)}."
        "</footer></main></body></html>\n"
    )


def _units(d: dict) -> str:
    return f'<p class="units"><b>Units: {_e(UNITS_NOTE)}.</b> {_e(intervals_text(d))}</p>'


def _summary(d: dict, heading: str = "h3") -> str:
    parts = []
    summaries = attr_summaries(d)
    cards = [_card("Mean AUC", mean_auc_cell(d))]
    for s in summaries:
        sub = (f"adjusted {_e(s.fg_adjusted.plain())} · p = {_e(s.p)} · best <b>{_e(s.best)}</b> · worst "
               f"<b>{_e(s.worst)}</b>")  # fmt: skip
        cards.append(_card(f"Fairness gap (FG), {s.attr}", s.fg, sub))
    parts.append(f'<div class="cards">{"".join(cards)}</div><p class="facts">{_e(ADJUSTED_NOTE)}</p>')
    for s in summaries:
        parts.append(f"<{heading}>{_e(s.attr)}</{heading}>{_facts(s.facts)}")
        if s.table is not None:
            parts.append(_table(s.table, heading=None))
    return "".join(parts)


def audit_html(d: dict) -> str:
    """A single-model audit (``fairscan.audit/1``) as one self-contained HTML page with its figures."""
    from fairscan.report import _plots

    check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS)
    model = d.get("model", "")
    body = [f"<header><h1>Fairness audit: {_e(model)}</h1>{_facts(header_facts(d))}{_units(d)}</header>"]
    body.append(f'<section id="summary"><h2>Summary</h2>{_summary(d)}')
    thr = thresholds_text(d)
    if thr:
        body.append(f"<p>{_e(thr)}</p>")
    body.append(_gate(d))
    body.append("</section>")

    if attrs_of(d) and d.get("labels"):
        figs = [
            _figure(
                _plots.group_delta_figure(d),
                "Bar chart: each subgroup's mean AUC minus the mean over subgroups",
                "Each subgroup's mean AUC over the labels minus the mean over subgroups (as the paper's Fig. 3), "
                "in AUC points, with its interval.",
                "fig-group-delta",
            ),
            _figure(
                _plots.label_aucs_figure(d),
                "Per-label AUC for each subgroup with intervals",
                "AUC per label for each subgroup (dots, with intervals) and for the whole population (black tick); "
                "a grey × marks a subgroup whose AUC is missing (see the notes).",
                "fig-label-auc",
            ),
            _figure(
                _plots.label_delta_figure(d),
                "Grouped bars: per-label AUC of each subgroup minus the whole population's",
                "Per label, each subgroup's AUC minus the whole population's AUC for that label (as the paper's "
                "Figs. 5 and 6), in AUC points, with intervals.",
                "fig-label-delta",
            ),
        ]
        body.append(f'<section id="figures"><h2>Figures</h2>{"".join(figs)}</section>')
    if (d.get("curves") or {}).get("roc"):
        body.append(_curve_figures(d))

    body.append('<section id="labels"><h2>Per label</h2>')
    body += [_table(t) for t in label_tables(d)]
    body.append("</section>")
    thr_table = threshold_table(d)
    if thr_table is not None:
        body.append(
            f'<section id="threshold-metrics"><h2>Threshold metrics</h2>{_table(thr_table, heading=None)}'
        )
        body.append("</section>")
    details = "".join(
        f"<details><summary>{_e(attr)}</summary>{_table(subgroup_detail_table(d, attr), heading=None)}</details>"
        for attr in attrs_of(d)
    )
    body.append(f'<section id="details"><h2>Every subgroup, label by label</h2>{details}</section>')
    body.append(_notes(all_notes(d)))
    body.append(_settings(d))
    return _page(f"Fairness audit · {model}", "".join(body), d.get("fairscan_version"))


def _curve_figures(d: dict) -> str:
    """ROC and reliability curves per label, one collapsible pair of figures per attribute."""
    from fairscan.report import _plots

    parts = []
    for attr in attrs_of(d):
        roc = _figure(_plots.roc_figure(d, attr), f"ROC curves per label for each {attr} subgroup",
                      f"ROC curve of each label for each {attr} subgroup (the whole population dashed), on the full "
                      "test set.", f"fig-roc-{attr}")  # fmt: skip
        rel = _figure(_plots.reliability_figure(d, attr), f"Reliability curves per label for each {attr} subgroup",
                      f"Reliability: the observed positive rate against the mean predicted probability in each of "
                      f"the ECE's bins, per {attr} subgroup; on the diagonal a model is calibrated.",
                      f"fig-reliability-{attr}")  # fmt: skip
        parts.append(f"<details><summary>{_e(attr)}: ROC and reliability curves</summary>{roc}{rel}</details>")
    return f'<section id="curves"><h2>ROC and reliability curves</h2>{"".join(parts)}</section>'


def audit_fragment(d: dict) -> str:
    """The audit's summary as an HTML fragment for a notebook cell (``AuditResult._repr_html_``): the cards
    and the per-attribute tables, styled under a ``fairscan`` class so the notebook's own style is left alone."""
    check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS)
    css = "".join(f".fairscan {rule}" for rule in FRAGMENT_CSS)
    head = f"<b>Fairness audit · {_e(d.get('model', ''))}</b>{_facts(header_facts(d))}"
    return f'<div class="fairscan"><style>{css}</style>{head}{_summary(d, heading="h4")}{_notes(all_notes(d))}</div>'


def comparison_fragment(d: dict) -> str:
    """The comparison table as an HTML fragment for a notebook cell."""
    check_schema(d, COMPARISON_SCHEMA)
    css = "".join(f".fairscan {rule}" for rule in FRAGMENT_CSS)
    return f'<div class="fairscan"><style>{css}</style>{_table(comparison_table(d), heading="h4")}</div>'


FRAGMENT_CSS = (
    "table { border-collapse: collapse; font-size: 12px; margin: 4px 0 8px; }",
    "th, td { padding: 2px 8px; border-bottom: 1px solid #d8dee4; text-align: left; }",
    "td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }",
    "td.strong { font-weight: 700; } .ci { display: block; color: #656d76; font-size: 11px; }",
    ".cards { display: flex; flex-wrap: wrap; gap: 8px; } .card { border: 1px solid #d8dee4; padding: 6px 10px; }",
    ".card .k { color: #656d76; font-size: 11px; } .card .v { font-size: 18px; font-weight: 650; }",
    ".facts { color: #656d76; }",
)


def _gate(d: dict) -> str:
    gate = gate_text(d)
    if gate is None:
        return ""
    passed, text = gate
    return f'<p>Gate: <span class="gate {"ok" if passed else "bad"}">{_e(text)}</span></p>'


def _settings(d: dict) -> str:
    shown = {k: d.get(k) for k in ("settings", "provenance", "thresholds", "gate") if d.get(k) is not None}
    text = json.dumps(shown, indent=2, default=str)
    return (
        '<section id="settings"><h2>Settings and provenance</h2><details><summary>As recorded in the JSON'
        f"</summary><pre>{_e(text)}</pre></details></section>"
    )


def comparison_html(d: dict) -> str:
    """A comparison (``fairscan.comparison/1``): the models table, the AUC-vs-FS scatter, each model's summary."""
    from fairscan.report import _plots

    check_schema(d, COMPARISON_SCHEMA)
    models = d.get("models") or {}
    first = next(iter(models.values()), {})
    ref = (d.get("comparison") or {}).get("reference")
    body = [
        f"<header><h1>Fairness comparison</h1>{_facts(comparison_facts(d))}{_units(first)}{_gate(d)}</header>"
    ]
    body.append('<section id="comparison-table"><h2>Models</h2>')
    body.append(
        _table(comparison_table(d), heading=None, row_class=lambda r: "ref" if r[0].text == ref else "")
    )
    worst = worst_comparison_table(d)
    if worst is not None:
        body.append(_table(worst, heading="h3", row_class=lambda r: "ref" if r[0].text == ref else ""))
    body.append("</section>")
    if (d.get("comparison") or {}).get("attrs") and (d.get("comparison") or {}).get("rows"):
        fig = _figure(
            _plots.comparison_scatter_figure(d),
            "Scatter: mean AUC against the fairness score FS, one point per model",
            "Mean AUC against the fairness score FS = C − FG (as the paper's Fig. 1): right is fairer, up is "
            "more accurate. The reference model is the diamond.",
            "fig-scatter",
        )
        body.append(f'<section id="figures"><h2>Figures</h2>{fig}</section>')
    body.append('<section id="models"><h2>Each model</h2>')
    for name, audit in models.items():
        body.append(f"<h3>{_e(name)}</h3>{_facts(header_facts(audit))}{_summary(audit, heading='h4')}")
    body.append("</section>")
    body.append(_notes(comparison_notes(d)))
    return _page("Fairness comparison", "".join(body), d.get("fairscan_version"))


__all__ = ["audit_fragment", "audit_html", "comparison_fragment", "comparison_html"]
