"""Corrections for multiple comparisons, one implementation for every table of p-values fairscan prints.

- ``holm``: Holm's step-down method; controls the family-wise error rate under any dependence. The audit uses
  it over its attributes and over a comparison's model differences.
- ``fdr_bh``: Benjamini-Hochberg q-values; control the false discovery rate for independent or positively
  dependent tests (the audit's per-label gap tests of one attribute).
- ``fdr_by``: Benjamini-Yekutieli; the FDR under any dependence (Glocker et al.'s KS tables).
- ``none``: the p-values as they are.

Missing p-values (``None`` or NaN: a test that could not run) are left missing and do not count in the family.
Adjusted values are capped at 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("holm", "fdr_bh", "fdr_by", "none")


def adjust(p_values: Sequence[float | None], method: str) -> list[float | None]:
    """Adjusted p-values (Holm) or q-values (BH, BY), in the order given."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(METHODS)}")
    raw = np.array([np.nan if p is None else float(p) for p in p_values], dtype=float)
    out = np.full(len(raw), np.nan)
    have = np.flatnonzero(~np.isnan(raw))
    if len(have):
        out[have] = _adjust(raw[have], method)
    return [None if np.isnan(x) else float(x) for x in out]


def _adjust(p: np.ndarray, method: str) -> np.ndarray:
    m = len(p)
    if method == "none":
        return p.copy()
    order = np.argsort(p, kind="mergesort")
    ranked = p[order]
    if method == "holm":  # p_(i) * (m - i + 1), made non-decreasing from the smallest up
        scaled = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:  # p_(i) * m / i (times the harmonic sum for BY), made non-increasing from the largest down
        factor = m / np.arange(1, m + 1)
        if method == "fdr_by":
            factor = factor * np.sum(1.0 / np.arange(1, m + 1))
        scaled = np.minimum.accumulate((ranked * factor)[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    return out
