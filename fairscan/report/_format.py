"""Number formatting shared by every renderer: one place decides how a fraction reads to a person.

The audit's JSON holds fractions (0.0143); people read AUC points (1.43), as the paper writes them. Every
renderer goes through these helpers so the console, Markdown and HTML show the same digits, and a test
can parse them back and compare them with the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fairscan.errors import InputError
from fairscan.schema import AUDIT_SCHEMA, COMPARISON_SCHEMA  # noqa: F401  re-exported for the report modules
from fairscan.schema import OLD_AUDIT_SCHEMAS as OLD_SCHEMAS  # noqa: F401

UNITS_NOTE = "AUC points (fraction × 100, 2 decimals); JSON holds fractions"
MISSING = "—"
EXCLUDES_ZERO_MARK = "*"

DELTA_GROUP_MEAN = "Δ vs mean over subgroups"
DELTA_POPULATION = "Δ vs whole population"

ERR_NOT_A_DICT = "the report input is not an audit: expected a dict, got {kind}"
ERR_SCHEMA = "the report input has schema {found!r}; expected {expected}"
HINT_SCHEMA = "pass the dict that `fairscan audit` writes (docs/audit-json.md)"


def check_schema(d: Any, *expected: str) -> str:
    """Return ``d["schema"]`` if it is one the caller renders; otherwise an InputError naming both."""
    if not isinstance(d, dict):
        raise InputError(ERR_NOT_A_DICT.format(kind=type(d).__name__), hint=HINT_SCHEMA)
    found = d.get("schema")
    if found not in expected:
        raise InputError(ERR_SCHEMA.format(found=found, expected=" or ".join(expected)), hint=HINT_SCHEMA)
    return found


def is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pts(x: Any, *, signed: bool = False) -> str:
    """A fraction as points with two decimals (``0.0143`` -> ``1.43``); missing -> an em dash."""
    if is_missing(x):
        return MISSING
    text = f"{x * 100:+.2f}" if signed else f"{x * 100:.2f}"
    if text in ("-0.00", "+0.00"):  # no signed zeros: a delta of -0.00001 reads as 0
        text = "+0.00" if signed else "0.00"
    return text


def has_interval(ci: Any) -> bool:
    return isinstance(ci, Sequence) and len(ci) == 2 and not any(is_missing(v) for v in ci)


def interval(ci: Any, *, signed: bool = False) -> str:
    """``[low, high]`` in points, or ``""`` when intervals are off or the bounds are missing."""
    if not has_interval(ci):
        return ""
    return f"[{pts(ci[0], signed=signed)}, {pts(ci[1], signed=signed)}]"


def excludes_zero(ci: Any) -> bool:
    return has_interval(ci) and (ci[0] > 0 or ci[1] < 0)


def p_value(p: Any) -> str:
    return MISSING if is_missing(p) else f"{p:.3g}"


def count(n: Any) -> str:
    return MISSING if is_missing(n) else f"{int(n):,}"


def label_name(label_id: str) -> str:
    """``pleural_effusion`` -> ``Pleural Effusion`` (CheXpert's and ChestX-ray14's own spelling)."""
    return label_id.replace("_", " ").title()


def ci_header(d: dict) -> str:
    level = (d.get("settings") or {}).get("ci_level")
    return f"{level * 100:g}% CI" if isinstance(level, (int, float)) else "CI"


def interval_method(d: dict) -> str | None:
    """``bootstrap``, ``delong`` or ``none``; the contract names the setting ``interval_method``, the audit
    code ``intervals``: read either."""
    s = d.get("settings") or {}
    return s.get("interval_method", s.get("intervals"))


def intervals_on(d: dict) -> bool:
    return interval_method(d) != "none"


def ci_suffix(d: dict) -> str:
    """`` [95% CI]`` for headers of columns that carry intervals; empty when intervals are off."""
    return f" [{ci_header(d)}]" if intervals_on(d) else ""


def intervals_text(d: dict) -> str:
    """One sentence on how the intervals and p-values were made, from the settings."""
    s = d.get("settings") or {}
    method = interval_method(d)
    if method == "none":
        text = "Intervals: off."
    elif method == "delong":
        text = f"Intervals: {ci_header(d)}s, DeLong."
    else:
        unit = "patients" if s.get("resample", "patient") == "patient" else "images"
        n_boot = s.get("n_boot")
        boot = f", {n_boot} resamples" if n_boot else ""
        text = f"Intervals: {ci_header(d)}s, bootstrap percentile over {unit}{boot}."
    if method == "bootstrap" and "balanced_draws" in s:  # fairscan.audit/2: the centred-bootstrap gap test
        text += (
            " p: gap test (H0: equal subgroup AUCs), patient bootstrap centred under H0; Holm over the "
            "attributes, Benjamini-Hochberg q over each attribute's labels."
        )
    elif s.get("permutations"):  # an audit written by fairscan 0.1
        text += f" p: permutation test, {s['permutations']} permutations of group labels."
    if s.get("balanced_test"):
        draws = s.get("balanced_draws") or 1
        text += f" Subgroup AUCs on balanced test sets ({draws} draw{'s' if draws != 1 else ''})."
    return text


ADJUSTED_NOTE = (
    "Adjusted FG: FG minus its upward bias (noise alone makes best minus worst positive), estimated by the "
    "bootstrap; its interval contains 0 exactly when the gap test's p is at least 1 − the interval level."
)


def p_with_holm(p: Any, holm: Any) -> str:
    """``0.003 (Holm 0.006)``; the Holm value only where it differs."""
    text = p_value(p)
    if not is_missing(holm) and not is_missing(p) and abs(holm - p) > 1e-12:
        text += f" (Holm {p_value(holm)})"
    return text


def attrs_of(d: dict) -> list[str]:
    summary_attrs = (d.get("summary") or {}).get("attrs") or {}
    listed = (d.get("settings") or {}).get("attrs") or []
    return [a for a in listed if a in summary_attrs] + [a for a in summary_attrs if a not in listed]


def groups_of(d: dict, attr: str) -> list[str]:
    """The attribute's subgroups in the summary's order, then any that only a label mentions."""
    groups = list(((d.get("summary") or {}).get("attrs") or {}).get(attr, {}).get("groups") or [])
    for entry in (d.get("labels") or {}).values():
        for g in ((entry.get("attrs") or {}).get(attr) or {}).get("groups") or {}:
            if g not in groups:
                groups.append(g)
    return groups


def labels_of(d: dict) -> list[str]:
    return list(d.get("labels") or {})


def label_attr(d: dict, label: str, attr: str) -> dict:
    return ((d["labels"][label].get("attrs") or {}).get(attr)) or {}


def group_entry(d: dict, label: str, attr: str, group: str) -> dict:
    return (label_attr(d, label, attr).get("groups") or {}).get(group) or {}


def all_notes(d: dict) -> list[str]:
    """The audit's own notes, then each subgroup's note (``Edema, race=Black: too few positives``) that the
    audit's notes do not already give (they name a small subgroup as ``edema: race=Black has ...``)."""
    notes = [str(n) for n in d.get("notes") or []]
    said = {n.split(" has ", 1)[0] for n in notes if " has " in n}
    for label in labels_of(d):
        for attr in attrs_of(d):
            for group in groups_of(d, attr):
                note = group_entry(d, label, attr, group).get("note")
                if note and f"{label}: {attr}={group}" not in said:
                    notes.append(f"{label_name(label)}, {attr}={group}: {note}")
    return notes
