"""Comparing models: the paper's Fig. 1 table (mean AUC, FG, FS) with paired patient-bootstrap intervals.

The paper's claims rest on differences of tenths of an AUC point, so differences between models are
computed on the *same* bootstrap replicates (the files are aligned row by row and resampled with the same
seed), which is what makes the intervals of the differences narrow and honest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.fairness.align import align
from fairscan.fairness.audit import (
    AuditConfig,
    AuditResult,
    _as_predictions,
    _resolve_config,
    _stem,
    audit,
    percentile_ci,
)
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

    def table(self):
        import pandas as pd

        return pd.DataFrame(self._dict["comparison"]["rows"])


def _names(preds: list[Predictions], names: list[str] | None) -> list[str]:
    if names:
        if len(names) != len(preds) or len(set(names)) != len(names):
            raise InputError("give one distinct name per prediction file")
        return list(names)
    stems = [_stem(p.source) for p in preds]
    if len(set(stems)) == len(stems):
        return stems
    # Same file name in different run folders (runs/mae/preds.parquet, runs/bit/preds.parquet).
    return [f"{os.path.basename(os.path.dirname(str(p.source))) or '.'}/{s}" for p, s in zip(preds, stems)]


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
    cfg = _resolve_config(config, attrs, settings)
    loaded = align([_as_predictions(p) for p in preds], cfg.labels)
    model_names = _names(loaded, names)
    ref = reference or model_names[0]
    if ref not in model_names:
        raise InputError(f"unknown reference model {ref!r}", hint=f"models: {', '.join(model_names)}")
    thr = (
        _as_predictions(thresholds_from) if thresholds_from is not None else None
    )  # read once, not per model
    audits = [
        audit(p, config=cfg, name=n, thresholds_from=thr, progress=progress)
        for p, n in zip(loaded, model_names)
    ]
    return ComparisonResult(audits=audits, reference=ref, _dict=_comparison_dict(audits, ref, cfg))


def _comparison_dict(audits: list[AuditResult], ref: str, cfg: AuditConfig) -> dict[str, Any]:
    attrs = audits[0].attrs
    gaps = {a: [r.gap(a) for r in audits] for a in attrs}
    fs_constant = {
        a: (max(g for g in gaps[a] if g is not None) + FS_EPSILON)
        if any(g is not None for g in gaps[a])
        else None
        for a in attrs
    }
    rows = []
    for r in audits:
        rows.append(
            {
                "model": r.name,
                "mean_auc": r.mean_auc,
                "mean_auc_ci": r.summary["mean_auc_ci"],
                "gap": {a: r.gap(a) for a in attrs},
                "gap_ci": {a: r.summary["attrs"][a].get("gap_ci") for a in attrs},
                "p_value": {a: r.summary["attrs"][a].get("p_value") for a in attrs},
                "fs": {
                    a: (fs_constant[a] - r.gap(a))
                    if fs_constant[a] is not None and r.gap(a) is not None
                    else None
                    for a in attrs
                },
            }
        )
    by_name = {r.name: r for r in audits}
    base = by_name[ref]
    paired = {}
    for r in audits:
        if r.name == ref:
            continue
        entry: dict[str, Any] = {
            "mean_auc_diff": _diff(r.mean_auc, base.mean_auc),
            "mean_auc_diff_ci": None,
            "gap_diff": {a: _diff(r.gap(a), base.gap(a)) for a in attrs},
            "gap_diff_ci": {a: None for a in attrs},
        }
        if r.replicates and base.replicates:
            entry["mean_auc_diff_ci"] = percentile_ci(
                r.replicates["mean_auc"] - base.replicates["mean_auc"], cfg.ci_level
            )
            for a in attrs:
                key = f"gap:{a}"
                if key in r.replicates and key in base.replicates:
                    entry["gap_diff_ci"][a] = percentile_ci(
                        r.replicates[key] - base.replicates[key], cfg.ci_level
                    )
        paired[r.name] = entry
    return {
        "schema": COMPARISON_SCHEMA,
        "fairscan_version": __version__,
        "units": "fraction",
        "models": {r.name: r.to_dict() for r in audits},
        "comparison": {
            "reference": ref,
            "attrs": attrs,
            "rows": rows,
            "fs_constant": fs_constant,
            "fs_epsilon": FS_EPSILON,
            "paired": paired,
            "note": "differences are model minus reference, on the same patient-bootstrap replicates",
        },
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
