"""Read a report's tables back (Markdown or HTML) and check every number against the audit dict.

The renderers show fractions as points with two decimals; a shown number is right when it is within half
a unit of the last digit (0.005 points) of the dict's value x 100. Expected values come from the dict's
fields directly, never from the renderers' own helpers.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

NUM = r"[+-]?\d[\d,]*(?:\.\d+)?"
CELL = re.compile(rf"^(?P<v>{NUM})\*?(?: \[(?P<lo>{NUM}), (?P<hi>{NUM})\])?(?: p (?P<p>\S+))?$")
DASH = "—"
TOL = 0.005 + 1e-9


def clean(text: str) -> str:
    t = " ".join(text.replace("\\*", "*").replace("\\|", "|").split())
    if t.startswith("**") and t.endswith("**"):
        t = t[2:-2]
    return t


def parse_cell(text: str) -> tuple[float | None, tuple[float, float] | None]:
    t = clean(text)
    if t == DASH:
        return None, None
    m = CELL.match(t)
    assert m, f"not a number cell: {text!r}"
    ci = (float(m["lo"].replace(",", "")), float(m["hi"].replace(",", ""))) if m["lo"] else None
    return float(m["v"].replace(",", "")), ci


def assert_points(text: str, frac, ci=None, *, where: str = "") -> None:
    """``text`` shows ``frac`` (and ``ci``, or no interval when ``ci`` is None) in points."""
    value, shown_ci = parse_cell(text)
    if frac is None:
        assert value is None, f"{where}: expected a dash, got {text!r}"
        return
    assert value is not None and abs(value - frac * 100) <= TOL, f"{where}: {text!r} != {frac * 100:.6f}"
    if ci is None:
        assert shown_ci is None, f"{where}: interval shown but none in the dict: {text!r}"
    else:
        assert shown_ci is not None, f"{where}: interval missing in {text!r}"
        for got, want in zip(shown_ci, ci, strict=True):
            assert abs(got - want * 100) <= TOL, f"{where}: interval {text!r} != {ci}"


def assert_count(text: str, n, *, where: str = "") -> None:
    if n is None:
        assert clean(text) == DASH, where
    else:
        assert int(clean(text).replace(",", "")) == n, f"{where}: {text!r} != {n}"


def name(label_id: str) -> str:
    return label_id.replace("_", " ").title()


# --- reading tables back ---------------------------------------------------------------------------------


def markdown_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table in the document, in order: (header, rows), cells as shown."""
    tables, block = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif block:
            assert all(set(c) <= set("-:") for c in block[1]), f"no separator row under {block[0]}"
            tables.append((block[0], block[2:]))
            block = []
    return tables


def keyed_markdown_tables(md: str, attrs: list[str]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Name the audit's tables as the HTML ids do, from their header rows and the order of attributes."""
    out: dict = {}
    seen = {"summary": 0, "labels": 0, "detail": 0}
    for header, rows in markdown_tables(md):
        if header[0] == "Subgroup":
            kind = "summary"
        elif header[:3] == ["Label", "n", "Positives"]:
            kind = "labels"
        elif header[:2] == ["Label", "Threshold"]:
            out["thresholds"] = (header, rows)
            continue
        elif header[:2] == ["Label", "Subgroup"]:
            kind = "detail"
        elif header[0] == "Model":
            out["comparison"] = (header, rows)
            continue
        else:
            raise AssertionError(f"unexpected table {header}")
        out[f"{kind}-{attrs[seen[kind] % len(attrs)]}"] = (header, rows)
        seen[kind] += 1
    return out


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, tuple[list[str], list[list[str]]]] = {}
        self._id = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._header: list[str] = []
        self._rows: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id, self._header, self._rows = dict(attrs).get("id"), [], []
        elif tag == "tr" and self._id is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join(x.strip() for x in self._cell if x.strip()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._header:
                self._rows.append(self._row)
            else:
                self._header = self._row
            self._row = None
        elif tag == "table" and self._id is not None:
            self.tables[self._id] = (self._header, self._rows)
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(html: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


# --- checking them against the dict ----------------------------------------------------------------------


def check_audit_tables(d: dict, tables: dict) -> int:
    """Check every number of the audit's tables against ``d``; returns how many cells were checked."""
    checked = 0
    s_attrs = d["summary"]["attrs"]
    labels = list(d["labels"])
    for attr, s in s_attrs.items():
        groups = s["groups"]
        ci = s.get("group_mean_auc_ci") or {}
        header, rows = tables[f"summary-{attr}"]
        assert [clean(r[0]) for r in rows] == groups
        for g, row in zip(groups, rows, strict=True):
            where = f"summary {attr}={g}"
            assert_points(row[1], s["group_mean_auc"][g], ci.get(g), where=where)
            assert_points(
                row[2],
                s["delta_vs_group_mean"][g],
                (s.get("delta_vs_group_mean_ci") or {}).get(g),
                where=where,
            )
            assert_points(
                row[3],
                s["delta_vs_population"][g],
                (s.get("delta_vs_population_ci") or {}).get(g),
                where=where,
            )
            checked += 3

        header, rows = tables[f"labels-{attr}"]
        assert [clean(r[0]) for r in rows] == [name(x) for x in labels]
        col = {h: i for i, h in enumerate(header)}
        for lab, row in zip(labels, rows, strict=True):
            e, a = d["labels"][lab], d["labels"][lab]["attrs"][attr]
            where = f"{lab} {attr}"
            assert_count(row[col["n"]], e["n"], where=where)
            assert_count(row[col["Positives"]], e["n_pos"], where=where)
            assert_points(row[col["AUC (all)"]], e["auc"], e["ci"], where=where)
            for g in groups:
                ge = a["groups"][g]
                assert_points(row[col[g]], ge["auc"], ge["ci"], where=f"{where}={g}")
            assert_points(row[col["Gap"]], a["gap"], a["gap_ci"], where=where)
            if "Gap q" in col:
                q = clean(row[col["Gap q"]])
                assert (q == DASH) if a.get("q_value") is None else abs(float(q) - a["q_value"]) <= 5e-3 * a["q_value"]
            assert clean(row[col["Worst"]]) == (a["worst_group"] or DASH)
            bal = [h for h in header if h.startswith("Balanced")]
            if a.get("balanced"):
                n, pos = clean(row[col[bal[0]]]).split(" / ")
                assert_count(n, a["balanced"]["n_per_group"])
                assert_count(pos, a["balanced"]["n_pos_per_group"])
            elif bal:
                assert clean(row[col[bal[0]]]) == DASH
            checked += 5 + len(groups)

        header, rows = tables[f"detail-{attr}"]
        pairs = [(lab, g) for lab in labels for g in groups]
        assert len(rows) == len(pairs)
        for (lab, g), row in zip(pairs, rows, strict=True):
            ge = d["labels"][lab]["attrs"][attr]["groups"][g]
            where = f"detail {lab} {attr}={g}"
            assert clean(row[0]) == name(lab) and clean(row[1]) == g
            assert_count(row[2], ge["n"], where=where)
            assert_count(row[3], ge["n_pos"], where=where)
            assert_points(row[4], ge["auc"], ge["ci"], where=where)
            assert_points(row[5], ge["delta_vs_group_mean"], ge["delta_vs_group_mean_ci"], where=where)
            assert_points(row[6], ge["delta_vs_population"], ge["delta_vs_population_ci"], where=where)
            th = ge["threshold"] or {}
            for i, k in enumerate(("tpr", "fpr", "fnr")):
                assert_points(row[7 + i], th.get(k), th.get(f"{k}_ci"), where=f"{where} {k}")
            assert_points(row[10], ge["ece"], where=where)
            assert clean(row[11]) == (ge["note"] or DASH)
            checked += 10

    if d.get("thresholds"):
        header, rows = tables["thresholds"]
        col = {h: i for i, h in enumerate(header)}
        for lab, row in zip(labels, rows, strict=True):
            thr = d["thresholds"]["values"][lab]
            assert abs(float(row[1]) - thr) <= 0.005 * abs(thr), f"threshold {lab}: {row[1]} != {thr}"
            for attr in s_attrs:
                tg = d["labels"][lab]["attrs"][attr]["threshold_gaps"] or {}
                for k, head in (("tpr", "TPR"), ("fpr", "FPR"), ("fnr", "FNR"), ("equalized_odds", "EO")):
                    assert_points(row[col[f"{head} gap ({attr})"]], tg.get(k), where=f"{lab} {attr} {k} gap")
                    checked += 1
    else:
        assert "thresholds" not in tables
    return checked


def _model_rows(d: dict, header: list[str], rows: list[list[str]]):
    """A comparison table's rows, one per model in the JSON's order: (JSON row, table row, column index)."""
    c = d["comparison"]
    col = {h: i for i, h in enumerate(header)}
    assert [clean(r[0]) for r in rows] == [r["model"] for r in c["rows"]]
    return [(r, row, col) for r, row in zip(c["rows"], rows, strict=True)]


def check_comparison_table(d: dict, header: list[str], rows: list[list[str]]) -> int:
    c = d["comparison"]
    ref, attrs = c["reference"], c["attrs"]
    checked = 0
    for r, row, col in _model_rows(d, header, rows):
        name_ = r["model"]
        summary = d["models"][name_]["summary"]
        assert_points(row[col["Mean AUC"]], r["mean_auc"], summary.get("mean_auc_ci"), where=name_)
        for a in attrs:
            assert_points(
                row[col[f"FG {a}"]], r["gap"][a], summary["attrs"][a].get("gap_ci"), where=f"{name_} FG {a}"
            )
            assert_points(row[col[f"FS {a}"]], r["fs"][a], where=f"{name_} FS {a}")
        if name_ == ref:
            assert clean(row[col["Δ mean AUC"]]) == "reference"
            continue
        p = c["paired"][name_]
        cells = [(row[col["Δ mean AUC"]], p["mean_auc_diff"], p.get("mean_auc_diff_ci"), p.get("mean_auc_diff_p_holm"))]
        cells += [
            (row[col[f"Δ FG {a}"]], p["gap_diff"][a], (p.get("gap_diff_ci") or {}).get(a),
             (p.get("gap_diff_p_holm") or {}).get(a))
            for a in attrs
        ]  # fmt: skip
        for text, value, ci, holm in cells:
            assert_points(text, value, ci, where=f"{name_} paired")
            shown_p = CELL.match(clean(text))["p"]
            assert (shown_p is None) if holm is None else float(shown_p) == float(f"{holm:.3g}"), text
            excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
            assert ("*" in clean(text).split(" ")[0]) == excludes, f"{name_}: mark wrong in {text!r} for {ci}"
            checked += 1
        checked += 1 + 2 * len(attrs)
    return checked


def check_worst_comparison_table(d: dict, header: list[str], rows: list[list[str]]) -> int:
    """The worst-subgroup table: each model's worst subgroup (value, interval, name) and its paired Δ."""
    c = d["comparison"]
    ref, attrs = c["reference"], c["attrs"]
    checked = 0
    for r, row, col in _model_rows(d, header, rows):
        name_ = r["model"]
        for a in attrs:
            s = d["models"][name_]["summary"]["attrs"][a]
            text = clean(row[col[f"Worst {a}"]])
            assert text.endswith(f" {s['worst_group']}"), text
            assert_points(text[: -len(s["worst_group"]) - 1], s["worst_group_auc"], s.get("worst_group_auc_ci"))
            checked += 1
        if name_ == ref:
            assert clean(row[col[f"Δ worst {attrs[0]}"]]) == "reference"
            continue
        p = c["paired"][name_]
        for a in attrs:
            text, ci = row[col[f"Δ worst {a}"]], (p.get("worst_diff_ci") or {}).get(a)
            assert_points(text, p["worst_diff"][a], ci, where=f"{name_} Δ worst {a}")
            assert float(CELL.match(clean(text))["p"]) == float(f"{p['worst_diff_p'][a]:.3g}"), text  # raw p
            excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
            assert ("*" in clean(text).split(" ")[0]) == excludes, f"{name_}: mark wrong in {text!r}"
            checked += 1
    return checked
