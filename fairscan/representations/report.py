"""The probe's and the inspection's reports: one table of formatted cells each, laid out for the console,
Markdown and one self-contained HTML page (the audit report's cells, tables, style and figures).

AUCs are fractions here (0.5 = chance), as the probing literature prints them; the inspection's p-values
are printed to 6 decimals as Glocker et al.'s tables, in scientific notation below 1e-6.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from fairscan import __version__
from fairscan.report._format import p_value
from fairscan.report._tables import Cell, Table

PROBE_FILES = {"json": "probe.json", "markdown": "probe.md", "html": "probe.html"}
INSPECT_FILES = {"json": "inspect.json", "markdown": "inspect.md", "html": "inspect.html"}
ALPHA = 0.05  # adjusted p-values below it are shown in bold


def _auc(x) -> str:
    return "—" if x is None or x != x else f"{x:.3f}"


def p_value_text(p) -> str:
    """A p-value with six decimals (a permutation p's floor stays readable), or "—"."""
    if p is None:
        return "—"
    return f"{p:.6f}" if p == 0 or p >= 1e-6 else f"{p:.1e}"


# ---------------------------------------------------------------------------------------------------- probe


def _columns(conf: dict | None) -> str:
    if not conf:
        return ""
    n = len(conf["features"])
    return f"{n} column" + ("" if n == 1 else "s")


def probe_tables(d: dict) -> list[Table]:
    """The summary (one row per target) and the per-class table."""
    summary, per_class = [], []
    for p in d["probes"]:
        folds = p["auc_macro_folds"]
        conf = p.get("confounders")
        summary.append(
            [
                Cell(p["target"]),
                Cell(
                    _auc(p["auc_macro"]),
                    f"folds {min(folds):.3f}–{max(folds):.3f}" if len(folds) > 1 else "",
                    strong=True,
                ),
                Cell(f"{p['balanced_accuracy']:.3f}", f"chance {p['chance']:.3f}"),
                Cell(p_value(p["p_value"]), f"{p['permutations']} perm." if p["p_value"] is not None else ""),
                Cell(_auc(conf["auc_macro"]) if conf else "—", _columns(conf)),
            ]
        )
        for i, c in enumerate(p["classes"]):
            per_class.append(
                [
                    Cell(p["target"]),
                    Cell(c),
                    Cell(f"{p['images'][c]:,}"),
                    Cell(f"{p['patients'][c]:,}"),
                    Cell(_auc(p["auc"][c])),
                    Cell(_auc(conf["auc"][i]) if conf else "—"),
                ]
            )
    where = (
        "fitted on the first table, evaluated on the second"
        if d.get("evaluate_on")
        else (f"{d['settings']['folds']}-fold cross-validation over patients")
    )
    return [
        Table(
            key="probe",
            title="How well each attribute can be read from the features",
            columns=["Target", "Macro AUC", "Balanced acc.", "p", "Confounders"],
            rows=summary,
            numeric=[False, True, True, True, True],
            caption=f"Logistic probe, {where}. AUCs are fractions (0.5 = chance); p: permutation test of the "
            "whole procedure; Confounders: the same probe's macro AUC from the labels, age and sex alone.",
        ),
        Table(
            key="probe-classes",
            title="Each class against the others",
            columns=["Target", "Class", "Images", "Patients", "AUC", "Confounders"],
            rows=per_class,
            numeric=[False, False, True, True, True, True],
            caption="One-vs-rest AUC of each class, averaged over the folds.",
        ),
    ]


def _probe_facts(d: dict) -> list[tuple[str, str]]:
    facts = [("Features", str(d["source"]))]
    if d.get("evaluate_on"):
        facts.append(("Evaluated on", str(d["evaluate_on"])))
    s = d["settings"]
    facts += [
        ("Images", f"{d['images']:,}"),
        ("Patients", f"{d['patients']:,}"),
        ("Feature columns", f"{d['features']:,}"),
        ("C grid", ", ".join(f"{c:g}" for c in s["grid"])),
        ("Seed", str(s["seed"])),
    ]
    return facts


# -------------------------------------------------------------------------------------------------- inspect


def inspect_table(result) -> Table:
    named = {g.attr: g.column for g in result.groupings}
    rows = []
    for t in result.tests:
        significant = t.p_adjusted is not None and t.p_adjusted < ALPHA
        rows.append(
            [
                Cell(str(t.mode)),
                Cell(named[t.attr]),
                Cell(f"{t.a} vs {t.b}"),
                Cell(f"{t.n_a:,}/{t.n_b:,}"),
                Cell(f"{t.ks:.4f}"),
                Cell(p_value_text(t.p)),
                Cell(p_value_text(t.p_adjusted), strong=significant),
            ]
        )
    return Table(
        key="ks-tests",
        title="Kolmogorov-Smirnov tests per mode",
        columns=["Mode", "Attribute", "Subgroups", "n", "KS", "p", "p adj."],
        rows=rows,
        numeric=[True, False, False, True, True, True, True],
        caption=f"Two-sample KS tests of each mode's marginal distribution; p adj.: the p-values corrected "
        f"together over all {len(result.tests)} tests ({result.correction}); bold: below {ALPHA:g}.",
    )


def _inspect_facts(result) -> list[tuple[str, str]]:
    facts = [("Features", result.source), ("Rows", f"{result.rows:,}"), ("Modes", str(result.modes))]
    if result.explained_variance is not None:
        share = ", ".join(f"{100 * v:.1f}%" for v in result.explained_variance)
        facts.append(("Variance explained", share))
    else:
        facts.append(("Components", "read from the file"))
    return facts


# ------------------------------------------------------------------------------------------------- layouts


def console_tables(tables: list[Table], console) -> None:
    """Each table as the audit's console report lays one out (its title above it)."""
    from fairscan.report.console import _rich_table

    for t in tables:
        console.print(f"[bold]{t.title}[/]", highlight=False)
        console.print(_rich_table(t))


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(title: str, facts: list[tuple[str, str]], tables: list[Table], notes: list[str]) -> str:
    lines = [f"# {title}", "", " · ".join(f"{k}: {_md_escape(v)}" for k, v in facts), ""]
    for t in tables:
        lines += [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |"]
        lines.append("|" + "|".join("---:" if n else "---" for n in t.numeric) + "|")
        for row in t.rows:
            cells = [_md_escape(f"{c.text} ({c.ci})" if c.ci else c.text) for c in row]
            lines.append("| " + " | ".join(f"**{x}**" if c.strong else x for x, c in zip(cells, row)) + " |")
        lines += ["", f"_{_md_escape(t.caption)}_", ""] if t.caption else [""]
    lines += ["## Notes", ""] + ([f"- {_md_escape(n)}" for n in notes] or ["None."]) + [""]
    return "\n".join(lines)


def html(
    title: str, facts, tables: list[Table], notes: list[str], figures=(), record: dict | None = None
) -> str:
    """A self-contained page in the audit report's style: facts, figures, tables, notes, the JSON record."""
    from fairscan.report.html import CSS, _facts, _figure, _notes, _table

    body = [f"<header><h1>{escape(title)}</h1>{_facts(facts)}</header>"]
    if figures:
        body.append(
            '<section id="figures"><h2>Figures</h2>' + "".join(_figure(*f) for f in figures) + "</section>"
        )
    body += [
        f'<section id="{escape(t.key)}"><h2>{escape(t.title)}</h2>{_table(t, heading=None)}</section>'
        for t in tables
    ]
    body.append(_notes(notes))
    if record is not None:
        text = escape(json.dumps(record, indent=2, default=str))
        body.append(
            f'<section id="record"><h2>Record</h2><details><summary>The JSON</summary><pre>{text}</pre></details></section>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>{''.join(body)}"
        f"<footer>Made by fairscan {escape(__version__)}.</footer></main></body></html>\n"
    )


def fragment(title: str, facts, tables: list[Table], notes: list[str]) -> str:
    """A result as an HTML fragment for a notebook cell (``_repr_html_``): the facts, tables and notes in the
    audit fragment's style, scoped under a ``fairscan`` class so the notebook's own style is left alone."""
    from fairscan.report.html import FRAGMENT_CSS, _facts, _table

    css = "".join(f".fairscan {rule}" for rule in FRAGMENT_CSS)
    body = "".join(f"<h4>{escape(t.title)}</h4>{_table(t, heading=None)}" for t in tables)
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return (
        f'<div class="fairscan"><style>{css}</style><b>{escape(title)}</b>{_facts(facts)}{body}'
        + (f"<ul>{items}</ul>" if items else "")
        + "</div>"
    )


def probe_fragment(d: dict) -> str:
    return fragment("Attribute probe", _probe_facts(d), probe_tables(d), d["notes"])


def inspect_fragment(result) -> str:
    return fragment("Bias inspection", _inspect_facts(result), [inspect_table(result)], result.notes)


def _write(
    out_dir: str | os.PathLike, names: dict[str, str], record: dict, md: str, page: str
) -> dict[str, Path]:
    """Every file rendered first, then each written atomically."""
    from fairscan.io import write_json, write_text

    paths = {k: Path(out_dir) / v for k, v in names.items()}
    write_json(paths["json"], record)
    write_text(paths["markdown"], md)
    write_text(paths["html"], page)
    return paths


def write_probe_report(d: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``probe.json``, ``probe.md`` and ``probe.html`` in ``out_dir``."""
    title, facts, tables = "Attribute probe", _probe_facts(d), probe_tables(d)
    md = markdown(title, facts, tables, d["notes"])
    return _write(out_dir, PROBE_FILES, d, md, html(title, facts, tables, d["notes"], record=d))


def write_inspect_report(result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``inspect.json``, ``inspect.md`` and ``inspect.html`` (with the projections and densities)."""
    from fairscan.representations._plots import density_figure, projection_figure

    title, facts, tables = "Bias inspection", _inspect_facts(result), [inspect_table(result)]
    figures = []
    scatter = projection_figure(result)
    if scatter is not None:
        figures.append(
            (
                scatter,
                "Scatter plots of the projections coloured by subgroup",
                "Projections on the modes (and the t-SNE, if computed), one row per attribute, coloured "
                "by subgroup.",
                "fig-projections",
            )
        )
    figures.append(
        (
            density_figure(result),
            "Density curves of each mode per subgroup",
            "Each mode's marginal distribution per subgroup (Gaussian kernel density estimates): what the "
            "KS tests compare.",
            "fig-densities",
        )
    )
    record = result.to_dict()
    md = markdown(title, facts, tables, result.notes)
    return _write(
        out_dir, INSPECT_FILES, record, md, html(title, facts, tables, result.notes, figures, record)
    )
