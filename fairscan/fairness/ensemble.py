"""Ensembles of models' predictions (paper Table 3: the mean of member probabilities)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import numpy as np

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.fairness.align import align
from fairscan.schema import LABEL_PREFIX, PROB_PREFIX, Predictions, read_predictions, write_predictions

if TYPE_CHECKING:
    import pandas as pd

Method = Literal["mean-prob", "mean-logit", "mean-rank"]
METHODS = ("mean-prob", "mean-logit", "mean-rank")


def _combine(columns: list[np.ndarray], weights: np.ndarray, method: str) -> np.ndarray:
    stack = np.stack(columns)
    if method == "mean-prob":
        return np.tensordot(weights, stack, axes=1)
    if method == "mean-logit":
        eps = 1e-7  # keeps logit finite for probabilities of exactly 0 or 1
        clipped = np.clip(stack, eps, 1 - eps)
        z = np.tensordot(weights, np.log(clipped) - np.log1p(-clipped), axes=1)
        return 1.0 / (1.0 + np.exp(-z))
    # mean-rank: each member's scores as normalised ranks in (0, 1]; a score, not a calibrated probability
    from scipy.stats import rankdata

    ranks = np.stack([rankdata(c) / len(c) for c in stack])
    return np.tensordot(weights, ranks, axes=1)


def ensemble(
    preds: list[Predictions | str | os.PathLike],
    *,
    method: Method = "mean-prob",
    weights: list[float] | None = None,
    labels: list[str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Combine aligned prediction tables; returns the ensemble's predictions table and its provenance."""
    if method not in METHODS:
        raise InputError(f"unknown ensemble method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    members = [p if isinstance(p, Predictions) else read_predictions(p) for p in preds]
    members = align(members, labels)
    want = labels or members[0].labels
    if weights is None:
        w = np.full(len(members), 1.0 / len(members))
    else:
        if len(weights) != len(members):
            raise InputError(
                f"{len(weights)} weights for {len(members)} prediction files", hint="give one weight per file"
            )
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise InputError("ensemble weights must be non-negative and not all zero")
        w = w / w.sum()
    ref = members[0].frame
    keep = ["image_id", *[c for c in ["patient_id", *members[0].attribute_columns] if c in ref.columns]]
    out = ref[keep].copy()
    for lab in want:
        out[LABEL_PREFIX + lab] = ref[LABEL_PREFIX + lab]
        out[PROB_PREFIX + lab] = _combine([m.p(lab) for m in members], w, method)
    provenance = {
        "stage": "ensemble",
        "fairscan_version": __version__,
        "method": method,
        "members": [
            {"source": m.source, "weight": float(wi), "provenance": m.provenance} for m, wi in zip(members, w)
        ],
    }
    return out, provenance


def write_ensemble(preds: list, out: str | os.PathLike, **kwargs) -> pd.DataFrame:
    df, provenance = ensemble(preds, **kwargs)
    write_predictions(df, out, provenance=provenance)
    return df
