"""The probe's significance: a permutation test of the whole procedure (Ojala and Garriga, JMLR 2010).

The target is permuted between patients (exchangeability blocks of patients with the same number of images, so a
patient's images move together and the class counts stay) and the whole cross-validation rerun on each permuted
target; ``p = (1 + #{permuted macro AUC >= observed}) / (permutations + 1)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fairscan.representations.crossval import cross_validate

if TYPE_CHECKING:
    from fairscan.representations.probe import ProbeSettings

_PERMUTATION_STREAM = 0x9E0B


def permutation_rng(seed: int, index: int) -> np.random.Generator:
    """The permutations' own random stream for the ``index``-th target, apart from the folds' seed."""
    return np.random.default_rng([seed, _PERMUTATION_STREAM, index])


def permuted(y: np.ndarray, patients: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target permuted between patients: each patient takes the whole target sequence (in row order) of
    another patient with the same number of rows."""
    order = np.argsort(patients, kind="stable")  # rows grouped by patient, file order within
    sizes = np.bincount(patients)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = y.copy()
    for size in np.unique(sizes[sizes > 0]):
        members = np.flatnonzero(sizes == size)
        if len(members) < 2:
            continue
        offsets = np.arange(size)
        dst = order[starts[members][:, None] + offsets]
        src = order[starts[rng.permutation(members)][:, None] + offsets]
        out[dst] = y[src]
    return out


def permutation_p(observed: float, null: np.ndarray) -> float:
    """(1 + #{null >= observed}) / (n + 1): never 0, exact under exchangeability. A permuted value equal to
    the observed one up to rounding counts as at least as large (the conservative side)."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (len(null) + 1))


def _macro(X: np.ndarray, y: np.ndarray, groups: np.ndarray, s: ProbeSettings, k: int) -> float:
    return cross_validate(X, y, groups, s, k).macro


def null_distribution(run, s: ProbeSettings, index: int, advance) -> np.ndarray:
    """The whole procedure's macro AUC on each permuted target of ``run`` (its ``X``, ``y``, ``groups`` and
    ``k`` classes), ``advance(n)`` after each ``n`` reruns. The targets are drawn here, in order, and
    ``jobs`` processes share the reruns, so the p-value does not depend on ``jobs``."""
    rng = permutation_rng(s.seed, index)
    targets = [permuted(run.y, run.groups, rng) for _ in range(s.permutations)]
    if s.jobs == 1:
        out = []
        for y in targets:
            out.append(_macro(run.X, y, run.groups, s, run.k))
            advance(1)
        return np.array(out)
    from joblib import Parallel, delayed

    out, batch = [], 4 * s.jobs
    with Parallel(n_jobs=s.jobs) as parallel:
        for start in range(0, len(targets), batch):
            chunk = targets[start : start + batch]
            out += parallel(delayed(_macro)(run.X, y, run.groups, s, run.k) for y in chunk)
            advance(len(chunk))
    return np.array(out)
