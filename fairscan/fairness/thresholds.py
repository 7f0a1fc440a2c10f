"""Threshold metrics: TPR, FPR and FNR per subgroup at a label's threshold, their gaps, equalized odds, ECE.

Thresholds are set on validation predictions at a global false-positive rate (METHOD 7: thresholds tuned on
test labels inflate threshold metrics), on the scale the audited file ranks by (logits when it has them, so
that scores beyond what a probability can hold apart never tie). They are computed on the full test set:
TPR and FPR are rates within a class, so balancing classes does not change what they estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fairscan.errors import InputError
from fairscan.fairness.groups import Attribute


def choose(val, labels: list[str], target_fpr: float, logit_scale: dict[str, bool]) -> dict[str, float | None]:
    """Per label, the smallest threshold whose FPR on ``val`` (share of negatives scored >= it) does not
    exceed ``target_fpr``; on the logit scale for labels where ``logit_scale[label]``."""
    values: dict[str, float | None] = {}
    for lab in labels:
        if lab not in val.labels:
            raise InputError(
                f"{val.source}: no label_{lab} with prob_{lab} or logit_{lab} to take its threshold from",
                hint="the validation predictions need the same labels as the audited file",
            )
        y = val.y(lab)
        s = val.logit(lab) if logit_scale[lab] else val.p(lab)
        neg = s[y == 0]
        if len(neg) == 0:
            values[lab] = None
            continue
        srt = np.sort(neg)
        k = int(np.floor(target_fpr * len(srt)))
        t = srt[-k] if k > 0 else np.nextafter(srt[-1], np.inf)
        if (neg >= t).sum() > k:  # ties at the cut would overshoot the target FPR
            t = np.nextafter(t, np.inf)
        values[lab] = float(t)
    return values


def as_probability(t: float | None, logit: bool) -> float | None:
    """A threshold as the probability it corresponds to (how reports show it)."""
    if t is None or not logit:
        return t
    return float(1.0 / (1.0 + np.exp(-t)))


def rate_units(
    y: np.ndarray, unit: np.ndarray, seg: np.ndarray, scores: np.ndarray, t: float, n_units: int, n_seg: int
) -> np.ndarray:
    """Image counts per resampling unit, (units, 4, segments): true positives, positives, false positives
    and negatives at threshold ``t``. Any weighting of the units (1 each, or a bootstrap replicate's counts)
    turns them into the weighted counts behind TPR and FPR with one matrix product."""
    pred = scores >= t
    pos = y == 1
    kinds = np.select([pos & pred, pos, ~pos & pred], [0, 1, 2], 3)  # tp, fn (a positive), fp, tn
    slots = 4 * (n_seg + 1)  # + the "no segment" slot, dropped below
    counts = np.zeros(n_units * slots)
    for col in seg.T:
        counts += np.bincount(unit.astype(np.int64) * slots + kinds * (n_seg + 1) + col, minlength=len(counts))
    counts = counts.reshape(n_units, 4, n_seg + 1)[:, :, :n_seg]
    tp, fn, fp, tn = (counts[:, k] for k in range(4))
    return np.stack([tp, tp + fn, fp, fp + tn], axis=1)


def _rates(c: np.ndarray) -> dict[str, np.ndarray]:  # c: (..., 4, segments) weighted counts
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(c[..., 1, :] > 0, c[..., 0, :] / c[..., 1, :], np.nan)
        fpr = np.where(c[..., 3, :] > 0, c[..., 2, :] / c[..., 3, :], np.nan)
    return {"tpr": tpr, "fpr": fpr, "fnr": 1.0 - tpr}


def metrics(units: np.ndarray, boot: np.ndarray | None, attrs: list[Attribute], ci) -> dict[str, Any]:
    """TPR, FPR and FNR per subgroup and their gaps (largest minus smallest subgroup rate), and the
    equalized-odds gap (the larger of the TPR and FPR gaps), each with ``ci(replicates)`` when the audit runs
    a bootstrap."""
    point = _rates(units.sum(axis=0))
    reps = _rates(boot) if boot is not None else None

    def entry(cols: list[int] | int, gap: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rep_gaps = {}
        for m, v in point.items():
            if gap:  # over the subgroups with a rate; a replicate missing one of them has no gap
                have = [k for k in cols if not np.isnan(v[k])]
                value = float(v[have].max() - v[have].min()) if len(have) >= 2 else None
                rep = reps[m][:, have].max(axis=1) - reps[m][:, have].min(axis=1) if reps and value is not None else None
                rep_gaps[m] = rep
            else:
                value = None if np.isnan(v[cols]) else float(v[cols])
                rep = reps[m][:, cols] if reps else None
            out[m] = value
            out[f"{m}_ci"] = ci(rep) if value is not None and rep is not None else None
        if gap:
            have = out["tpr"] is not None and out["fpr"] is not None
            out["equalized_odds"] = max(out["tpr"], out["fpr"]) if have else None
            rep = np.maximum(rep_gaps["tpr"], rep_gaps["fpr"]) if have and reps else None
            out["equalized_odds_ci"] = ci(rep) if rep is not None else None
        return out

    out: dict[str, Any] = {"overall": entry(0)}
    for a in attrs:
        cols = list(a.segments)
        out[a.name] = {"groups": {g: entry(k) for g, k in zip(a.groups, cols, strict=True)},
                       "gaps": entry(cols, gap=True)}  # fmt: skip
    return out


def ece(y: np.ndarray, p: np.ndarray, bins: int) -> float | None:
    """Expected calibration error with equal-width probability bins."""
    if len(y) == 0:
        return None
    idx = np.minimum((p * bins).astype(int), bins - 1)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y.astype(float), minlength=bins)
    return float(np.abs(acc - conf).sum() / len(y))
