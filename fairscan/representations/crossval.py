"""The probe's procedure, run once: patient-grouped folds, standardised inputs, C chosen by an inner
cross-validation, an L2 logistic regression per training fold, and each test fold's one-vs-rest AUCs and balanced
accuracy (``fairscan.representations.probe`` has the method; ``permutation`` reruns this on permuted targets).

The settings ``s`` are a :class:`~fairscan.representations.probe.ProbeSettings` (its ``folds``, ``inner_folds``,
``grid``, ``seed`` and ``max_iter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fairscan.representations.probe import ProbeSettings


@dataclass
class Scores:
    """One run of the procedure: per fold, each class's one-vs-rest AUC and the balanced accuracy."""

    auc: np.ndarray  # (folds, classes); NaN where a test fold lacks the class
    balanced_accuracy: np.ndarray  # (folds,)
    C: list[float]

    @property
    def macro_folds(self) -> np.ndarray:
        return np.nanmean(self.auc, axis=1)

    @property
    def macro(self) -> float:
        return float(np.mean(self.macro_folds))


def class_proba(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities with a column for every class (0 for a class the fit never saw)."""
    scaler, lr = model
    out = np.zeros((len(X), n_classes))
    out[:, lr.classes_] = lr.predict_proba(scaler.transform(X))
    return out


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """The Mann-Whitney AUC (ties count half), as scikit-learn's ``roc_auc_score`` gives it without its
    per-call input checks, which cost more than the statistic in a permutation test's thousands of folds."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_metrics(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, float]:
    """One-vs-rest AUC per class (NaN if the rows lack it or hold only it) and the balanced accuracy."""
    k = proba.shape[1]
    auc = np.full(k, np.nan)
    for c in range(k):
        pos = y == c
        if 0 < pos.sum() < len(y):
            auc[c] = _auc(pos, proba[:, c])
    pred = proba.argmax(axis=1)
    recalls = [np.mean(pred[y == c] == c) for c in range(k) if (y == c).any()]
    return auc, float(np.mean(recalls))


def patient_folds(
    y: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) of ``folds`` folds with no group (patient) in two folds, stratified: patients
    are shuffled (seeded), ordered by class (a patient's class is its first row's), and dealt to the folds in
    turn, so every fold holds about 1/folds of each class's patients."""
    groups = np.unique(groups, return_inverse=True)[1]
    n_groups = int(groups.max()) + 1
    first = np.zeros(n_groups, dtype=np.int64)
    first[groups[::-1]] = np.arange(len(groups))[::-1]
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(y[first][order], kind="stable")]
    fold_of = np.empty(n_groups, dtype=np.int64)
    fold_of[order] = np.arange(n_groups) % folds
    row_fold = fold_of[groups]
    return [(np.flatnonzero(row_fold != j), np.flatnonzero(row_fold == j)) for j in range(folds)]


def _choose_c(Xs: np.ndarray, y: np.ndarray, groups: np.ndarray, s: ProbeSettings, k: int) -> float:
    """The grid's C with the lowest mean log loss over an inner patient-grouped cross-validation."""
    from sklearn.linear_model import LogisticRegression

    if len(s.grid) == 1:
        return s.grid[0]
    loss = np.zeros(len(s.grid))
    for train, test in patient_folds(y, groups, s.inner_folds, s.seed):
        # Strongest penalty first, each fit starting from the last one's weights: the path is cheap.
        lr = LogisticRegression(max_iter=s.max_iter, warm_start=True)
        for j, c in enumerate(s.grid):
            lr.set_params(C=c).fit(Xs[train], y[train])
            proba = np.zeros((len(test), k))
            proba[:, lr.classes_] = lr.predict_proba(Xs[test])
            loss[j] += -np.mean(
                np.log(np.clip(proba[np.arange(len(test)), y[test]], 1e-15, None))
            )  # log loss
    return s.grid[int(np.argmin(loss))]


SMALL = 4_000_000  # features x rows below which one BLAS thread is fastest


def blas_threads(X: np.ndarray):
    """One BLAS thread for small problems: their matrix products are too small to share, and threads that
    wait for work made the permutation test 5x slower on a busy 2-core machine (15 s vs 87 s, measured)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if X.size < SMALL else contextlib.nullcontext()


def _checked_once():
    """scikit-learn without its per-call checks: the inputs were validated once, and on small folds the checks
    cost more than the fits (the permutation test runs thousands of them)."""
    import sklearn

    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, s: ProbeSettings, k: int):
    """Standardise, choose C by inner CV, refit on all of X: returns (scaler, logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with _checked_once():
        scaler = StandardScaler().fit(X)
        Xs = scaler.transform(X)
        c = _choose_c(Xs, y, groups, s, k)
        return scaler, LogisticRegression(C=c, max_iter=s.max_iter).fit(Xs, y)


def cross_validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, s: ProbeSettings, k: int) -> Scores:
    """The whole procedure once: outer folds over ``groups`` (patients; pass one group per row to see what
    an image-level split does), a fit per training fold, metrics per test fold."""
    aucs, bals, cs = [], [], []
    for train, test in patient_folds(y, groups, s.folds, s.seed):
        model = fit_probe(X[train], y[train], groups[train], s, k)
        with _checked_once():
            auc, bal = class_metrics(y[test], class_proba(model, X[test], k))
        aucs.append(auc)
        bals.append(bal)
        cs.append(float(model[1].C))
    return Scores(np.array(aucs), np.array(bals), cs)
