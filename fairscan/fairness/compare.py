"""Comparing models: the paper's Fig. 1 table (mean AUC, FG, FS) with paired patient-bootstrap inference.

The paper's claims rest on differences of tenths of an AUC point, so differences between models are
computed on the *same* bootstrap replicates (the files are aligned row by row and resampled with the same
seed; balanced test sets are drawn from the images alone, so both models get the same sets), which is what
makes the intervals of the differences narrow and honest. Each difference gets an interval and a two-sided
p-value (``stats.paired_difference``; a difference of FGs bias-corrected first, ``stats.bias_corrected``); Holm's method adjusts the p-values over the family of the
non-reference models x {mean AUC, FG of each attribute}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.fairness import stats
from fairscan.fairness.align import align
from fairscan.fairness.audit import (
    AuditConfig,
    AuditResult,
    as_predictions,
    audit,
    gate_reasons,
    resolve_config,
    stem,
)
from fairscan.fairness.multitest import adjust
from fairscan.schema import COMPARISON_SCHEMA, Predictions

FS_EPSILON = 0.01  # METHOD section 5: C = max FG + 1 AUC point, so the least fair model scores 1 point


@dataclass
class ComparisonResult:
    audits: list[AuditResult]
    reference: str
    _dict: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self._dict)

    def _repr_html_(self) -> str:
        from fairscan.report.html import comparison_fragment

        return comparison_fragment(self._dict)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self._dict["comparison"]["rows"])

    def check(self, *, max_gap: float | None = None, min_auc: float | None = None) -> dict[str, Any]:
        """The CI gate over every model (see :meth:`AuditResult.check`)."""
        reasons = [r for d in self._dict["models"].values() for r in gate_reasons(d, max_gap, min_auc)]
        gate = {"max_gap": max_gap, "min_auc": min_auc, "passed": not reasons, "reasons": reasons}
        self._dict["gate"] = gate
        for d in self._dict["models"].values():
            d["gate"] = gate
        return gate


def _names(preds: list[Predictions], names: list[str] | None) -> list[str]:
    if names:
        if len(names) != len(preds) or len(set(names)) != len(names):
            raise InputError("give one distinct name per prediction file")
        return list(names)
    stems = [stem(p.source) for p in preds]
    if len(set(stems)) == len(stems):
        return stems
    # Same file name in different run folders (runs/mae/preds.parquet, runs/bit/preds.parquet).
    named = [f"{os.path.basename(os.path.dirname(str(p.source))) or '.'}/{s}" for p, s in zip(preds, stems)]
    if len(set(named)) == len(named):
        return named
    return [f"{s} {i + 1}" for i, s in enumerate(stems)]  # tables without a file (DataFrames): numbered


def compare(
    preds: list[Predictions | str | os.PathLike],
    attrs: list[str] | None = None,
    *,
    names: list[str] | None = None,
    reference: str | None = None,
    config: AuditConfig | None = None,
    thresholds_from=None,
    progress=None,
    **settings: Any,
) -> ComparisonResult:
    """Audit several models' predictions of the same images and compare them, pairing the bootstrap."""
    cfg = resolve_config(config, attrs, settings)
    loaded = align([as_predictions(p) for p in preds], cfg.labels)
    model_names = _names(loaded, names)
    ref = reference or model_names[0]
    if ref not in model_names:
        raise InputError(f"unknown reference model {ref!r}", hint=f"models: {', '.join(model_names)}")
    thr = as_predictions(thresholds_from) if thresholds_from is not None else None  # read once, not per model
    audits = [
        audit(p, config=cfg, name=n, thresholds_from=thr, progress=progress) for p, n in zip(loaded, model_names)
    ]
    return ComparisonResult(audits=audits, reference=ref, _dict=comparison_dict(audits, ref, cfg))


def metric(result: AuditResult, key: str) -> tuple[float | None, Any, float | None]:
    """(point, replicates, centre) of ``mean_auc``, ``gap:<attr>`` or ``worst:<attr>`` (the worst subgroup's mean
    AUC) for paired statistics."""
    kind, _, attr = key.partition(":")
    if kind == "mean_auc":
        point = result.mean_auc
    else:
        point = result.gap(attr) if kind == "gap" else result.worst(attr)
    return point, result.replicates.get(key), result.centres.get(key)


def difference(key: str, diff: float, reps, centre: float | None):
    """(value, replicate deviations) of a paired difference of metric ``key`` (``mean_auc``, ``gap:<attr>``,
    ``worst:<attr>``, or the study's ``gap_<attr>``, ``worst_<attr>``): a difference of gaps or of worst subgroups
    is bias-corrected (a maximum or minimum over subgroups is biased, and more so near a tie); the mean AUC's is
    taken as it is."""
    if reps is None:
        return diff, None
    prepare = stats.bias_corrected if key.startswith(("gap", "worst")) else stats.centred
    return prepare(diff, reps, centre)


def paired(a: AuditResult, b: AuditResult, key: str, cfg: AuditConfig) -> dict[str, Any]:
    """Model a minus model b for one metric, on their shared replicates (``raw``: the plain difference)."""
    (pa, ra, ca), (pb, rb, cb) = metric(a, key), metric(b, key)
    if pa is None or pb is None:
        return {**stats.paired_difference(None, None, cfg.ci_level), "raw": None}
    reps = ra - rb if ra is not None and rb is not None else None
    centre = None if ca is None or cb is None else ca - cb
    value, dev = difference(key, pa - pb, reps, centre)
    out = stats.paired_difference(value, dev, cfg.ci_level, min_count=stats.boot_min_count(cfg.n_boot))
    return {**out, "raw": pa - pb}


def comparison_dict(audits: list[AuditResult], ref: str, cfg: AuditConfig) -> dict[str, Any]:
    attrs = audits[0].attrs
    gaps = {a: [r.gap(a) for r in audits] for a in attrs}
    fs_constant = {
        a: (max(g for g in gaps[a] if g is not None) + FS_EPSILON) if any(g is not None for g in gaps[a]) else None
        for a in attrs
    }
    rows = []
    for r in audits:
        rows.append(
            {
                "model": r.name, "mean_auc": r.mean_auc, "mean_auc_ci": r.summary["mean_auc_ci"],
                "gap": {a: r.gap(a) for a in attrs},
                "gap_ci": {a: r.summary["attrs"][a].get("gap_ci") for a in attrs},
                "gap_adjusted": {a: r.summary["attrs"][a].get("gap_adjusted") for a in attrs},
                "p_value": {a: r.summary["attrs"][a].get("p_value") for a in attrs},
                "fs": {a: (fs_constant[a] - r.gap(a)) if fs_constant[a] is not None and r.gap(a) is not None
                       else None for a in attrs},
            }
        )  # fmt: skip
    by_name = {r.name: r for r in audits}
    base = by_name[ref]
    paired_out = {}
    for r in audits:
        if r.name == ref:
            continue
        mean = paired(r, base, "mean_auc", cfg)
        gap = {a: paired(r, base, f"gap:{a}", cfg) for a in attrs}
        worst = {a: paired(r, base, f"worst:{a}", cfg) for a in attrs}
        paired_out[r.name] = {
            "mean_auc_diff": mean["diff"], "mean_auc_diff_ci": mean["ci"], "mean_auc_diff_p": mean["p_value"],
            "gap_diff": {a: g["diff"] for a, g in gap.items()}, "gap_diff_ci": {a: g["ci"] for a, g in gap.items()},
            "gap_diff_p": {a: g["p_value"] for a, g in gap.items()},
            "gap_diff_raw": {a: g["raw"] for a, g in gap.items()},
            "worst_diff": {a: w["diff"] for a, w in worst.items()},
            "worst_diff_ci": {a: w["ci"] for a, w in worst.items()},
            "worst_diff_p": {a: w["p_value"] for a, w in worst.items()},
            "worst_diff_raw": {a: w["raw"] for a, w in worst.items()},
        }  # fmt: skip
    _holm(paired_out, attrs)
    return {
        "schema": COMPARISON_SCHEMA, "fairscan_version": __version__, "units": "fraction",
        "models": {r.name: r.to_dict() for r in audits},
        "comparison": {
            "reference": ref, "attrs": attrs, "rows": rows, "fs_constant": fs_constant, "fs_epsilon": FS_EPSILON,
            "paired": paired_out,
            "note": "differences are model minus reference, on the same patient-bootstrap replicates; a difference "
            "of FGs is bias-corrected by the bootstrap (gap_diff_raw: the plain difference); p: two-sided paired "
            "bootstrap (H0: no difference), intervals symmetric and dual to p; p_holm: Holm over the models x "
            "{mean AUC, FG per attribute}; worst_diff: the worst subgroup's mean AUC, bias-corrected as a FG "
            "difference is (worst_diff_raw: the plain difference), outside the Holm family",
        },
    }  # fmt: skip


def _holm(paired_out: dict[str, dict], attrs: list[str]) -> None:
    """Holm-adjusted p-values over every paired difference of the comparison, written beside each p."""
    slots = [(name, None) for name in paired_out] + [(name, a) for name in paired_out for a in attrs]

    def raw(name, a):
        e = paired_out[name]
        return e["mean_auc_diff_p"] if a is None else e["gap_diff_p"][a]

    for (name, a), p in zip(slots, adjust([raw(n, a) for n, a in slots], "holm"), strict=True):
        e = paired_out[name]
        if a is None:
            e["mean_auc_diff_p_holm"] = p
        else:
            e.setdefault("gap_diff_p_holm", {})[a] = p
