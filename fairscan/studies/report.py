"""A study's report as Markdown and as one self-contained HTML page, both from the same tables.

Every number is the study JSON's (``fairscan.study/1``), converted from fractions to AUC points by the audit
report's own formatter, so the Markdown, the HTML and the JSON agree digit for digit (a test parses them).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from fairscan.report._format import MISSING, interval, intervals_text, label_name, pts

METRIC_NAMES = {
    "mean_auc": "Mean AUC", "gap_sex": "FG sex", "gap_race": "FG race",
    "worst_sex": "Worst subgroup by sex", "worst_race": "Worst subgroup by race",
}  # fmt: skip
QUICK_NOTE = (
    "Quick variant: synthetic data and tiny models, a few steps. These numbers test the pipeline; they say "
    "nothing about the paper's."
)
DIRECTION = {"higher": "model > reference", "lower": "model < reference"}


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    numeric: list[bool] = field(default_factory=list)
    key: str = ""  # what the console summary picks sections by


def ours_cell(m: dict[str, Any]) -> str:
    """``80.12 ± 0.30 [79.80, 80.45]``: seed mean, sd over seeds (several seeds), interval of the seed mean."""
    if m.get("mean") is None:
        return MISSING
    text = pts(m["mean"])
    if m.get("sd") is not None:
        text += f" ± {pts(m['sd'])}"
    ci = interval(m.get("ci"))
    return f"{text} {ci}" if ci else text


def _label(d: dict, preset: str) -> str:
    return next((r["label"] for r in d["rows"] if r["preset"] == preset), preset)


def _side(d: dict, names: list[str]) -> str:
    labels = [_label(d, n) for n in names]
    return labels[0] if len(labels) == 1 else "mean of " + ", ".join(labels)


def sections(d: dict[str, Any]) -> list[Section]:
    """The report's tables, in order."""
    out: list[Section] = []
    metrics = d["metrics"]
    k = len(d["seeds"])
    ours_note = (
        f"ours = mean ± sd over {k} fine-tuning seeds [{d['ci_level'] * 100:g}% bootstrap interval of that mean]"
        if k > 1
        else f"ours = one fine-tuning seed [{d['ci_level'] * 100:g}% bootstrap interval], as the paper ran"
    )
    has_paper = any(r["metrics"][m]["paper"] is not None for r in d["rows"] for m in metrics)
    columns = ["Row"]
    for m in metrics:
        name = METRIC_NAMES[m]
        columns += [f"{name}: paper", f"{name}: ours", f"{name}: Δ"] if has_paper else [name]
    rows = []
    for r in d["rows"]:
        cells = [r["label"]]
        for m in metrics:
            v = r["metrics"][m]
            cells += (
                [pts(v["paper"]), ours_cell(v), pts(v["diff"], signed=True)] if has_paper else [ours_cell(v)]
            )
        rows.append(cells)
    sources = "; ".join(f"{r['label']}: {r['expected_source'] or 'no number'}" for r in d["rows"])
    out.append(
        Section(
            title=f"{d['table']}: the paper vs ours"
            if has_paper
            else f"{d['table']}: ours (the paper has no numbers)",
            columns=columns,
            rows=rows,
            note=f"AUC points; {ours_note}"
            + ("; Δ = ours − paper" if has_paper else "")
            + ". FG = best minus worst subgroup's mean AUC; its interval is the bootstrap's percentiles, as the "
            "audit's, and sits above a FG near 0 (noise alone makes FG positive: the audit's adjusted FG corrects "
            "for it). Paper: "
            + sources,
            numeric=[False] + [True] * (len(columns) - 1),
        )
    )
    if d["comparisons"]:
        paper_cols = any(
            v["expect"] or v["paper_diff"] is not None
            for c in d["comparisons"]
            for v in c["metrics"].values()
        )
        crows = []
        for c in d["comparisons"]:
            for m, v in c["metrics"].items():
                agrees = "—" if v["agrees"] is None else ("yes" if v["agrees"] else "no")
                if v["agrees"] and v["significant"]:
                    agrees += " (p <= 0.05)"
                p = v.get("p_value")
                ours = [pts(v["diff"], signed=True), interval(v["ci"], signed=True) or MISSING,
                        MISSING if p is None else f"{p:.3g}"]  # fmt: skip
                paper = [DIRECTION.get(v["expect"] or "", MISSING), pts(v["paper_diff"], signed=True)]
                crows.append([c["name"], METRIC_NAMES[m], *paper, *ours, agrees] if paper_cols else [
                    c["name"], METRIC_NAMES[m], *ours])  # fmt: skip
        notes = "; ".join(
            f"{c['name']}: {_side(d, c['model'])} − {_side(d, c['reference'])}"
            + (f" (paper: “{c['paper_says']}”)" if c["paper_says"] else "")
            for c in d["comparisons"]
        )
        columns = ["Comparison", "Metric", "Paper's direction", "Paper Δ", "Ours Δ", "Interval", "p", "Agrees"]
        numeric = [False, False, False, True, True, True, True, False]
        if not paper_cols:
            columns, numeric = columns[:2] + columns[4:7], numeric[:2] + numeric[4:7]
        methods = sorted({v["method"] for c in d["comparisons"] for v in c["metrics"].values() if v.get("method")})
        out.append(
            Section(
                title="Comparisons (model − reference, paired bootstrap)",
                columns=columns,
                rows=crows,
                note="AUC points. Differences are taken on the same patient-bootstrap replicates for every model "
                "(paired), and paired by seed; interval and p (H0: no difference): " + ", ".join(methods) + ". "
                + notes,
                numeric=numeric,
            )
        )
    if "groups" in d["show"]:
        for attr in [m.removeprefix("gap_") for m in metrics if m.startswith("gap_")]:
            groups: list[str] = []
            for r in d["rows"]:
                groups += [g for g in r["groups"].get(attr, {}) if g not in groups]
            grows = []
            for r in d["rows"]:
                gd = r["groups"].get(attr, {})
                grows.append(
                    [r["label"]]
                    + [
                        f"{pts(gd[g]['mean_auc'])} ({pts(gd[g]['delta_vs_group_mean'], signed=True)})"
                        if g in gd
                        else MISSING
                        for g in groups
                    ]
                )
            out.append(
                Section(
                    title=f"Subgroups by {attr} (Fig. 3): mean AUC over labels (Δ vs mean over subgroups)",
                    columns=["Row", *groups],
                    rows=grows,
                    note="AUC points; subgroup AUCs on the balanced test sets where the audit balances them.",
                    numeric=[False] + [True] * len(groups),
                )
            )
    if "worst" in d["show"]:
        attrs = [m.removeprefix("gap_") for m in metrics if m.startswith("gap_")]
        wrows = []
        for r in d["rows"]:
            cells = []
            for attr in attrs:
                w = (r.get("worst") or {}).get(attr) or {}
                names = sorted({g for g in w.get("groups", []) if g})
                cells.append(f"{ours_cell(w)} ({', '.join(names)})" if w.get("mean") is not None else MISSING)
            wrows.append([r["label"], *cells])
        out.append(
            Section(
                title="Worst subgroup: its mean AUC over labels",
                columns=["Row", *(f"worst by {a}" for a in attrs)],
                rows=wrows,
                note="AUC points; "
                + ("mean ± sd over seeds [bootstrap interval of that mean] (the worst subgroup of each seed named)" if k > 1 else
                   f"[{d['ci_level'] * 100:g}% simultaneous interval of the worst subgroup's AUC, as the audit's]"),
                numeric=[False] + [True] * len(attrs),
            )
        )
    if "labels" in d["show"]:
        for attr in [m.removeprefix("gap_") for m in metrics if m.startswith("gap_")]:
            labels = list(d["rows"][0]["labels"]) if d["rows"] else []
            groups = []
            for r in d["rows"]:
                for lab in labels:
                    groups += [g for g in r["labels"].get(lab, {}).get(attr, {}) if g not in groups]
            columns = ["Row"] + [f"{label_name(lab)}: {g}" for lab in labels for g in groups]
            lrows = [
                [r["label"]]
                + [
                    pts(r["labels"].get(lab, {}).get(attr, {}).get(g), signed=True)
                    for lab in labels
                    for g in groups
                ]
                for r in d["rows"]
            ]
            out.append(
                Section(
                    title=f"Per disease by {attr} (Figs. 5 and 6): subgroup AUC − whole population's AUC",
                    columns=columns,
                    rows=lrows,
                    note="AUC points; positive: the model does better on that subgroup than on the population.",
                    numeric=[False] + [True] * (len(columns) - 1),
                )
            )
    if d.get("representations"):
        from fairscan.studies.representations import representations_sections

        out += representations_sections(d)
    if d["checks"]:
        krows = []
        for c in d["checks"]:
            what = f"{label_name(c['label'])}, " if c["label"] else "mean over labels, "
            values = ", ".join(
                f"{_label(d, name)} {pts(v['value'], signed=True)}" for name, v in c["rows"].items()
            )
            krows.append(
                [
                    f"{what}{c['attr']}={c['group']}",
                    "above 0" if c["expect"] == "higher" else "below 0",
                    f"{c['agree']} of {c['of']}",
                    values,
                ]
            )
        out.append(
            Section(
                title="Subgroup claims, model by model",
                columns=["Subgroup Δ", "Claim", "Ours agree", "Ours (AUC points)"],
                rows=krows,
                note="; ".join(c["paper"] for c in d["checks"] if c["paper"]),
            )
        )
    return out


def _lists(d: dict[str, Any]) -> list[tuple[str, list[str]]]:
    claims = list(d.get("claims") or [])
    for r in d["rows"]:
        claims += [f"{r['label']}: {c}" for c in r.get("claims") or []]
    steps = [
        f"{s['step']} -> {s['out']}: {s['status']}" + (f" ({s['seconds']} s)" if "seconds" in s else "")
        for s in d.get("steps") or []
    ]
    notes = list(d.get("notes") or [])
    shown = notes[:12] + (
        [f"... and {len(notes) - 12} more (see audit/report.html)"] if len(notes) > 12 else []
    )
    return [
        ("Claims (qualitative; see the tables)", claims),
        ("Assumptions where the paper is silent", list(d.get("assumptions") or [])),
        ("Audit notes", shown),
        ("Steps", steps),
    ]


def _intro(d: dict[str, Any]) -> list[str]:
    seeds = len(d["seeds"])
    lines = [
        f"Study `{d['study']}`{' (quick variant)' if d['quick'] else ''}: {len(d['rows'])} row(s), "
        f"{seeds} fine-tuning seed(s) each; fairscan {d['fairscan_version']}.",
        "Units: AUC points (fraction × 100, 2 decimals); study.json holds fractions. "
        + intervals_text({"settings": d["settings"]}),
    ]
    if d["quick"]:
        lines.append(QUICK_NOTE)
    return lines


def study_markdown(d: dict[str, Any]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {esc(d['title'])}", ""]
    lines += [f"> {esc(x)}" for x in _intro(d)] + [""]
    for s in sections(d):
        lines += [f"## {esc(s.title)}", ""]
        lines.append("| " + " | ".join(esc(c) for c in s.columns) + " |")
        numeric = s.numeric or [False] * len(s.columns)
        lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in s.rows]
        if s.note:
            lines += ["", f"_{esc(s.note)}_"]
        lines.append("")
    for title, items in _lists(d):
        if items:
            lines += [f"## {title}", ""] + [f"- {esc(x)}" for x in items] + [""]
    lines += [
        "Full audit of every model (per label, per subgroup, intervals, p-values): `audit/report.html`.",
        "",
    ]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2ea;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d5dbe5;padding:.3rem .55rem;vertical-align:top}
th{background:#f3f5f9;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#4a5568;font-size:.85rem;max-width:70rem}.intro{background:#f7f9fc;border-left:4px solid #5b7bd5;
padding:.5rem .9rem}.quick{color:#9a3412}
"""


def study_html(d: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(d['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(d['title'])}</h1><div class='intro'>",
    ]
    parts += [f"<p{' class=quick' if x == QUICK_NOTE else ''}>{e(x)}</p>" for x in _intro(d)]
    parts.append("</div>")
    for s in sections(d):
        numeric = s.numeric or [False] * len(s.columns)
        parts.append(f"<h2>{e(s.title)}</h2><table><thead><tr>")
        parts += [f"<th>{e(c)}</th>" for c in s.columns]
        parts.append("</tr></thead><tbody>")
        for row in s.rows:
            parts.append(
                "<tr>"
                + "".join(f"<td{' class=num' if n else ''}>{e(c)}</td>" for c, n in zip(row, numeric))
                + "</tr>"
            )
        parts.append("</tbody></table>")
        if s.note:
            parts.append(f"<p class='note'>{e(s.note)}</p>")
    for title, items in _lists(d):
        if items:
            parts.append(f"<h2>{e(title)}</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in items) + "</ul>")
    parts.append(
        "<p>Full audit of every model (per label, per subgroup, intervals, p-values): "
        "<a href='audit/report.html'>audit/report.html</a>.</p></body></html>"
    )
    return "\n".join(parts)
