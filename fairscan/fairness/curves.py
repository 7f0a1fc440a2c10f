"""The curves behind the report's pictures: ROC curves and reliability (calibration) curves per subgroup.

Both come from the full test set. ROC curves are kept as the true-positive rate at a fixed grid of
false-positive rates (linear between the curve's corners, ties as the diagonal segment they make), so every
subgroup's curve has the same length in the JSON however many images it has.
"""

from __future__ import annotations

import numpy as np

FPR_GRID = np.round(np.linspace(0.0, 1.0, 51), 4)


def roc_tpr(y: np.ndarray, scores: np.ndarray, grid: np.ndarray = FPR_GRID) -> list[float] | None:
    """TPR at each FPR of ``grid`` for rows sorted by ascending score (None without both classes)."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    desc_y, desc_s = y[::-1].astype(float), scores[::-1]
    last = np.r_[desc_s[1:] != desc_s[:-1], True]  # the last row of each tie block: a corner of the curve
    tp = np.cumsum(desc_y)[last]
    fp = np.cumsum(1.0 - desc_y)[last]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return [round(float(v), 5) for v in np.interp(grid, fpr, tpr)]


def reliability(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, list]:
    """Per equal-width probability bin: the mean predicted probability, the observed positive rate and the
    number of images (bins without images: None), the points an ECE averages over."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, observed = conf / n, acc / n
    return {
        "mean_p": [None if k == 0 else round(float(v), 5) for v, k in zip(mean_p, n)],
        "observed": [None if k == 0 else round(float(v), 5) for v, k in zip(observed, n)],
        "n": [int(k) for k in n],
    }
