"""The report's content, once: tables of formatted cells that the console, Markdown and HTML lay out.

Building the content in one place keeps the three outputs saying the same thing. Nothing here computes a
statistic: every number is read from the audit dict and only formatted (fraction -> points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fairscan.report._format import (
    DELTA_GROUP_MEAN,
    DELTA_POPULATION,
    EXCLUDES_ZERO_MARK,
    MISSING,
    all_notes,
    attrs_of,
    ci_suffix,
    count,
    excludes_zero,
    group_entry,
    groups_of,
    interval,
    is_missing,
    label_attr,
    label_name,
    labels_of,
    p_value,
    p_with_holm,
    pts,
)

BALANCED_COLUMN = "Balanced n / positives per group"


@dataclass(frozen=True)
class Cell:
    """One table cell: the value as text, its interval (``""`` if none), and whether to emphasise it."""

    text: str
    ci: str = ""
    strong: bool = False
    extra: str = ""  # a last detail (a p-value), on a line of its own where lines are stacked

    def plain(self) -> str:
        return " ".join(x for x in (self.text, self.ci, self.extra) if x)


@dataclass
class Table:
    key: str  # a stable id (HTML anchors, tests)
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    numeric: list[bool]  # right-align this column
    caption: str = ""


def _trim_ci_headers(t: Table, suffix: str) -> Table:
    """Take " [95% CI]" off the header of a column none of whose cells has an interval (DeLong intervals
    cover single AUCs only, so deltas and means have none)."""
    if suffix:
        for i, name in enumerate(t.columns):
            if name.endswith(suffix) and not any(r[i].ci for r in t.rows):
                t.columns[i] = name[: -len(suffix)]
        if t.title.endswith(suffix) and not any(c.ci for r in t.rows for c in r):
            t.title = t.title[: -len(suffix)]
    return t


@dataclass
class AttrSummary:
    attr: str
    fg: Cell
    p: str
    best: str
    worst: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    table: Table | None = None
    fg_adjusted: Cell = field(default_factory=lambda: Cell(MISSING))


def _value(x, ci=None, *, signed: bool = False, strong: bool = False) -> Cell:
    return Cell(pts(x, signed=signed), interval(ci, signed=signed), strong)


def _text(x) -> Cell:
    return Cell(MISSING if is_missing(x) or x == "" else str(x))


def header_facts(d: dict) -> list[tuple[str, str]]:
    facts = [("Model", str(d.get("model", MISSING)))]
    if d.get("source"):
        facts.append(("Source", str(d["source"])))
    facts += [
        ("Images", count(d.get("n_images"))),
        ("Patients", count(d.get("n_patients"))),
        ("Labels", str(len(labels_of(d)))),
    ]
    if d.get("fairscan_version"):
        facts.append(("fairscan", str(d["fairscan_version"])))
    return facts


def mean_auc_cell(d: dict) -> Cell:
    s = d.get("summary") or {}
    return _value(s.get("mean_auc"), s.get("mean_auc_ci"))


def attr_summaries(d: dict) -> list[AttrSummary]:
    """Per attribute: the headline gap (FG), best/worst subgroup, and each subgroup's mean AUC and deltas."""
    ci = ci_suffix(d)
    out = []
    for attr in attrs_of(d):
        s = d["summary"]["attrs"][attr]
        used, left_out = s.get("labels_used") or [], s.get("labels_left_out") or []
        facts = []
        if not is_missing(s.get("gap_adjusted")):
            facts.append(("adjusted FG", _value(s.get("gap_adjusted"), s.get("gap_adjusted_ci")).plain()))
        if not is_missing(s.get("worst_group_auc")):
            facts.append(
                (f"worst subgroup's mean AUC ({s.get('worst_group')})",
                 _value(s.get("worst_group_auc"), s.get("worst_group_auc_ci")).plain())
            )  # fmt: skip
        pairs = [p for p in s.get("pairwise") or [] if not is_missing(p.get("diff"))]
        if pairs:
            facts.append(
                ("pairwise", "; ".join(f"{p['a']} − {p['b']} {_value(p['diff'], p.get('ci'), signed=True).plain()}"
                                       for p in pairs))
            )  # fmt: skip
        facts += [
            ("mean per-label gap", _value(s.get("mean_label_gap"), s.get("mean_label_gap_ci")).plain()),
            (
                "largest per-label gap",
                _value(s.get("max_label_gap"), s.get("max_label_gap_ci")).plain()
                + (f" ({label_name(s['max_label_gap_label'])})" if s.get("max_label_gap_label") else ""),
            ),
            ("labels in the subgroup means", f"{len(used)} of {len(used) + len(left_out)}"),
        ]
        if left_out:
            facts.append(("left out (a subgroup AUC missing)", ", ".join(label_name(x) for x in left_out)))
        if not is_missing(s.get("balance_sd")):
            facts.append(("FG's sd over the balanced draws", pts(s["balance_sd"])))
        if not is_missing(s.get("equalized_odds")):
            facts.append(("mean equalized-odds gap", pts(s["equalized_odds"])))
        if s.get("patients_varying"):
            facts.append(("patients in more than one subgroup", count(s["patients_varying"])))
        if s.get("why_no_gap"):
            facts.append(("no gap", str(s["why_no_gap"])))
        rows = []
        for g in groups_of(d, attr):
            rows.append(
                [
                    Cell(g, strong=g == s.get("worst_group")),
                    _value(
                        (s.get("group_mean_auc") or {}).get(g),
                        (s.get("group_mean_auc_ci") or {}).get(g),
                        strong=g == s.get("worst_group"),
                    ),
                    _value(
                        (s.get("delta_vs_group_mean") or {}).get(g),
                        (s.get("delta_vs_group_mean_ci") or {}).get(g),
                        signed=True,
                    ),
                    _value(
                        (s.get("delta_vs_population") or {}).get(g),
                        (s.get("delta_vs_population_ci") or {}).get(g),
                        signed=True,
                    ),
                ]
            )
        table = Table(
            key=f"summary-{attr}",
            title=f"{attr}: subgroup mean AUC over the labels",
            columns=[
                "Subgroup",
                f"Mean AUC{ci}",
                f"{DELTA_GROUP_MEAN}{ci}",
                f"{DELTA_POPULATION}{ci}",
            ],
            rows=rows,
            numeric=[False, True, True, True],
        )
        out.append(
            AttrSummary(
                attr=attr,
                fg=_value(s.get("gap"), s.get("gap_ci")),
                fg_adjusted=_value(s.get("gap_adjusted"), s.get("gap_adjusted_ci")),
                p=p_with_holm(s.get("p_value"), s.get("p_value_holm")),
                best=str(s.get("best_group") or MISSING),
                worst=str(s.get("worst_group") or MISSING),
                facts=facts,
                table=_trim_ci_headers(table, ci),
            )
        )
    return out


def _balanced(b) -> str:
    if not b:
        return MISSING
    return f"{count(b.get('n_per_group'))} / {count(b.get('n_pos_per_group'))}"


def label_tables(d: dict) -> list[Table]:
    """One table per attribute: each label's AUC overall and per subgroup, its gap and worst subgroup."""
    ci = ci_suffix(d)
    tables = []
    for attr in attrs_of(d):
        groups = groups_of(d, attr)
        with_balanced = any(label_attr(d, lab, attr).get("balanced") for lab in labels_of(d))
        with_q = any(not is_missing(label_attr(d, lab, attr).get("q_value")) for lab in labels_of(d))
        columns = ["Label", "n", "Positives", "AUC (all)", *groups, "Gap", *(["Gap q"] if with_q else []), "Worst"]
        if with_balanced:
            columns.append(BALANCED_COLUMN)
        rows = []
        for lab in labels_of(d):
            e, a = d["labels"][lab], label_attr(d, lab, attr)
            worst = a.get("worst_group")
            row = [
                Cell(label_name(lab)),
                Cell(count(e.get("n"))),
                Cell(count(e.get("n_pos"))),
                _value(e.get("auc"), e.get("ci")),
            ]
            for g in groups:
                ge = group_entry(d, lab, attr, g)
                row.append(_value(ge.get("auc"), ge.get("ci"), strong=g == worst))
            row.append(_value(a.get("gap"), a.get("gap_ci")))
            if with_q:
                row.append(Cell(p_value(a.get("q_value"))))
            row.append(_text(worst))
            if with_balanced:
                row.append(Cell(_balanced(a.get("balanced"))))
            rows.append(row)
        tables.append(
            _trim_ci_headers(
                Table(
                    key=f"labels-{attr}",
                    title=f"Per label, by {attr}: AUC{ci}",
                    columns=columns,
                    rows=rows,
                    numeric=[False] + [True] * (len(groups) + 4 + with_q) + [False] * (1 + with_balanced),
                    caption="The worst subgroup's AUC is in bold."
                    + (" Gap q: the gap test's p-value, Benjamini-Hochberg over the labels." if with_q else ""),
                ),
                ci,
            )
        )
    return tables


def compact_label_table(d: dict) -> Table:
    """All attributes in one table, without intervals: for many labels or a narrow terminal."""
    columns, numeric = ["Label", "n", "Pos.", "AUC"], [False, True, True, True]
    for attr in attrs_of(d):
        columns += [f"{attr}: {g}" for g in groups_of(d, attr)] + [f"Gap ({attr})"]
        numeric += [True] * (len(groups_of(d, attr)) + 1)
    rows = []
    for lab in labels_of(d):
        e = d["labels"][lab]
        row = [
            Cell(label_name(lab)),
            Cell(count(e.get("n"))),
            Cell(count(e.get("n_pos"))),
            _value(e.get("auc")),
        ]
        for attr in attrs_of(d):
            a = label_attr(d, lab, attr)
            for g in groups_of(d, attr):
                row.append(_value(group_entry(d, lab, attr, g).get("auc"), strong=g == a.get("worst_group")))
            row.append(_value(a.get("gap")))
        rows.append(row)
    return Table(
        key="labels-compact",
        title="Per label: AUC overall and per subgroup, and the gap",
        columns=columns,
        rows=rows,
        numeric=numeric,
        caption="The worst subgroup's AUC is in bold; intervals are in the full tables and the JSON.",
    )


def threshold_table(d: dict) -> Table | None:
    """Gaps in TPR, FPR and FNR between subgroups at each label's threshold, or None when not computed."""
    if not any(label_attr(d, lab, a).get("threshold_gaps") for lab in labels_of(d) for a in attrs_of(d)):
        return None
    values = (d.get("thresholds") or {}).get("values") or {}
    columns, numeric = ["Label", "Threshold"], [False, True]
    for attr in attrs_of(d):
        columns += [f"TPR gap ({attr})", f"FPR gap ({attr})", f"FNR gap ({attr})", f"EO gap ({attr})"]
        numeric += [True] * 4
    rows = []
    for lab in labels_of(d):
        thr = values.get(lab)
        row = [Cell(label_name(lab)), Cell(MISSING if is_missing(thr) else f"{thr:.3g}")]
        for attr in attrs_of(d):
            tg = label_attr(d, lab, attr).get("threshold_gaps") or {}
            row += [_value(tg.get(k), tg.get(f"{k}_ci")) for k in ("tpr", "fpr", "fnr", "equalized_odds")]
        rows.append(row)
    return Table(
        key="thresholds",
        title="Threshold metrics: largest minus smallest subgroup rate",
        columns=columns,
        rows=rows,
        numeric=numeric,
        caption="Rates in points (fraction × 100); thresholds are probabilities. EO gap (equalized odds): the "
        "larger of the TPR and FPR gaps.",
    )


def thresholds_text(d: dict) -> str | None:
    t = d.get("thresholds")
    if not t:
        return None
    fpr = t.get("target_fpr")
    target = f" at a target false-positive rate of {fpr:g}" if not is_missing(fpr) else ""
    return f"Thresholds chosen on {t.get('source', MISSING)}{target}."


def gate_text(d: dict) -> tuple[bool, str] | None:
    """(passed, one line) for the audit gate, or None when no gate was set."""
    g = d.get("gate")
    if not g:
        return None
    limits = []
    if not is_missing(g.get("max_gap")):
        limits.append(f"max gap {pts(g['max_gap'])}")
    if not is_missing(g.get("min_auc")):
        limits.append(f"min AUC {pts(g['min_auc'])}")
    passed = bool(g.get("passed"))
    text = ("passed" if passed else "FAILED") + (f" ({', '.join(limits)})" if limits else "")
    if g.get("reasons"):
        text += ": " + "; ".join(str(r) for r in g["reasons"])
    return passed, text


def subgroup_detail_table(d: dict, attr: str) -> Table:
    """Every subgroup field of one attribute, label by label (HTML's collapsible detail)."""
    ci = ci_suffix(d)
    rows = []
    for lab in labels_of(d):
        for g in groups_of(d, attr):
            ge = group_entry(d, lab, attr, g)
            th = ge.get("threshold") or {}
            rows.append(
                [
                    Cell(label_name(lab)),
                    Cell(g),
                    Cell(count(ge.get("n"))),
                    Cell(count(ge.get("n_pos"))),
                    _value(ge.get("auc"), ge.get("ci")),
                    _value(ge.get("delta_vs_group_mean"), ge.get("delta_vs_group_mean_ci"), signed=True),
                    _value(ge.get("delta_vs_population"), ge.get("delta_vs_population_ci"), signed=True),
                    *(_value(th.get(k), th.get(f"{k}_ci")) for k in ("tpr", "fpr", "fnr")),
                    _value(ge.get("ece")),
                    _text(ge.get("note")),
                ]
            )
    columns = ["Label", "Subgroup", "n", "Positives", f"AUC{ci}", DELTA_GROUP_MEAN, DELTA_POPULATION]
    columns += ["TPR", "FPR", "FNR", "ECE", "Note"]
    table = Table(
        key=f"detail-{attr}",
        title=f"Every subgroup of {attr}, label by label",
        columns=columns,
        rows=rows,
        numeric=[False, False] + [True] * 9 + [False],
        caption="AUCs, deltas, rates and ECE in points (fraction × 100).",
    )
    return _trim_ci_headers(table, ci)


# --- comparisons ---------------------------------------------------------------------------------------


def _diff(x, ci, holm=None) -> Cell:
    """A paired difference: value (marked when its interval excludes 0), interval and Holm-adjusted p."""
    marked = excludes_zero(ci)
    extra = "" if is_missing(holm) else f"p {p_value(holm)}"
    return Cell(pts(x, signed=True) + (EXCLUDES_ZERO_MARK if marked else ""), interval(ci, signed=True), marked, extra)


def comparison_facts(d: dict) -> list[tuple[str, str]]:
    c = d.get("comparison") or {}
    consts = c.get("fs_constant") or {}
    facts = [("Models", str(len(d.get("models") or {}))), ("Reference", str(c.get("reference", MISSING)))]
    if consts:
        facts.append(
            ("FS = C − FG, with C", ", ".join(f"{a} {pts(consts.get(a))}" for a in c.get("attrs") or consts))
        )
    return facts


def comparison_table(d: dict) -> Table:
    """One row per model: mean AUC, FG and FS per attribute, and paired differences vs the reference."""
    c = d.get("comparison") or {}
    attrs = list(c.get("attrs") or [])
    consts = c.get("fs_constant") or {}
    ref = c.get("reference")
    paired = c.get("paired") or {}
    models = d.get("models") or {}
    columns = ["Model", "Mean AUC"] + [f"FG {a}" for a in attrs] + [f"FS {a}" for a in attrs]
    columns += ["Δ mean AUC"] + [f"Δ FG {a}" for a in attrs]
    rows = []
    for r in c.get("rows") or []:
        name = r.get("model")
        summary = (models.get(name) or {}).get("summary") or {}
        row = [Cell(str(name), strong=name == ref), _value(r.get("mean_auc"), summary.get("mean_auc_ci"))]
        for a in attrs:
            row.append(
                _value((r.get("gap") or {}).get(a), ((summary.get("attrs") or {}).get(a) or {}).get("gap_ci"))
            )
        row += [_value((r.get("fs") or {}).get(a)) for a in attrs]
        p = paired.get(name)
        if name == ref or not p:
            row += [Cell("reference" if name == ref else MISSING)] * (1 + len(attrs))
        else:
            row.append(_diff(p.get("mean_auc_diff"), p.get("mean_auc_diff_ci"), p.get("mean_auc_diff_p_holm")))
            for a in attrs:
                row.append(
                    _diff((p.get("gap_diff") or {}).get(a), (p.get("gap_diff_ci") or {}).get(a),
                          (p.get("gap_diff_p_holm") or {}).get(a))
                )  # fmt: skip
        rows.append(row)
    return Table(
        key="comparison",
        title=f"Models compared (values{_comparison_ci_suffix(d)}; Δ = model − {ref})",
        columns=columns,
        rows=rows,
        numeric=[False] + [True] * (len(columns) - 1),
        caption=(
            f"{EXCLUDES_ZERO_MARK} and bold: the interval of the difference excludes 0; Δ FG is bias-corrected "
            f"by the bootstrap (the plain difference in the JSON); p: paired bootstrap, "
            f"Holm-adjusted over the table's differences (raw p in the JSON). FS = C − FG (higher is "
            f"fairer), C = the largest FG over the models + 1 point: "
            + ", ".join(f"{a} {pts(consts.get(a))}" for a in attrs)
            + "."
        ),
    )


def worst_comparison_table(d: dict) -> Table | None:
    """One row per model: each attribute's worst subgroup (its mean AUC, simultaneous interval and name) and
    the paired difference from the reference's worst subgroup. None for a comparison without them (0.1's)."""
    c = d.get("comparison") or {}
    attrs, ref, paired = list(c.get("attrs") or []), c.get("reference"), c.get("paired") or {}
    if not attrs or not any("worst_diff" in p for p in paired.values()):
        return None
    rows = []
    for r in c.get("rows") or []:
        name = r.get("model")
        summary = ((d.get("models") or {}).get(name) or {}).get("summary") or {}
        row = [Cell(str(name), strong=name == ref)]
        for a in attrs:
            s = (summary.get("attrs") or {}).get(a) or {}
            cell = _value(s.get("worst_group_auc"), s.get("worst_group_auc_ci"))
            row.append(Cell(cell.text, cell.ci, extra=str(s.get("worst_group") or "")))
        p = paired.get(name)
        if name == ref or not p:
            row += [Cell("reference" if name == ref else MISSING)] * len(attrs)
        else:
            row += [_diff((p.get("worst_diff") or {}).get(a), (p.get("worst_diff_ci") or {}).get(a),
                          (p.get("worst_diff_p") or {}).get(a)) for a in attrs]  # fmt: skip
        rows.append(row)
    return Table(
        key="worst-comparison",
        title=f"Worst subgroups compared (Δ = model − {ref})",
        columns=["Model", *(f"Worst {a}" for a in attrs), *(f"Δ worst {a}" for a in attrs)],
        rows=rows,
        numeric=[False] + [True] * (2 * len(attrs)),
        caption=(
            "Each attribute's worst subgroup: its mean AUC over labels with the audit's simultaneous interval, "
            f"and its name. Δ worst is the paired difference of the worst subgroups' mean AUCs (whichever "
            f"subgroup is worst for each model), bias-corrected as Δ FG is; {EXCLUDES_ZERO_MARK} and bold: its "
            "interval excludes 0; p: paired bootstrap, not Holm-adjusted (outside the table above's family)."
        ),
    )


def _comparison_ci_suffix(d: dict) -> str:
    for audit in (d.get("models") or {}).values():
        return ci_suffix(audit)
    return ""


def comparison_notes(d: dict) -> list[str]:
    notes = [str(n) for n in (d.get("notes") or [])]
    for name, audit in (d.get("models") or {}).items():
        notes += [f"{name}: {n}" for n in all_notes(audit)]
    return notes


__all__ = [
    "AttrSummary",
    "Cell",
    "Table",
    "attr_summaries",
    "compact_label_table",
    "comparison_facts",
    "comparison_notes",
    "comparison_table",
    "gate_text",
    "header_facts",
    "label_tables",
    "mean_auc_cell",
    "subgroup_detail_table",
    "threshold_table",
    "thresholds_text",
]
