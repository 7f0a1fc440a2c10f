"""Resampling for the audit: patient bootstrap counts, balanced per-label test sets, permutations.

Everything is seeded from one integer through numpy's ``SeedSequence`` so that results are reproducible and
independent streams (bootstrap, balancing, permutation) never share random numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BOOT_STREAM, BALANCE_STREAM, PERMUTE_STREAM = 0, 1, 2


def rng_for(seed: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *extra]))


def bootstrap_counts(strata: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> Iterator[np.ndarray]:
    """Yield (replicates, patients) arrays of bootstrap counts, ``chunk`` replicates at a time.

    ``strata[p]`` is patient p's stratum: each replicate draws, within every stratum, as many patients as
    it holds, with replacement, so that subgroup sizes stay fixed (a stratified patient bootstrap). Memory
    is ``chunk x patients`` floats, never replicates x images.
    """
    rng = rng_for(seed, BOOT_STREAM)
    n_pat = len(strata)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        offsets = (np.arange(b) * n_pat)[:, None]
        draws = [offsets + idx[rng.integers(0, len(idx), size=(b, len(idx)))] for idx in members]
        flat = np.concatenate([d.ravel() for d in draws])
        yield np.bincount(flat, minlength=b * n_pat).reshape(b, n_pat).astype(np.float64)
        done += b


def balanced_rows(y: np.ndarray, groups: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a balanced test set for one label and one attribute (METHOD section 1).

    Every group keeps the same number of positives and the same number of negatives (the minimum over
    groups), drawn without replacement, so no image repeats. Rows outside any group are left out.
    """
    keep = np.zeros(len(y), dtype=bool)
    pos = [np.flatnonzero((groups == g) & (y == 1)) for g in range(n_groups)]
    neg = [np.flatnonzero((groups == g) & (y == 0)) for g in range(n_groups)]
    n_pos, n_neg = min(len(i) for i in pos), min(len(i) for i in neg)
    for idx, k in [(i, n_pos) for i in pos] + [(i, n_neg) for i in neg]:
        keep[rng.choice(idx, size=k, replace=False)] = True
    return keep


def permuted_codes(codes: np.ndarray, n_perm: int, seed: int, stream_key: int, chunk: int = 100):
    """Yield (permutations, patients) arrays: patient group codes shuffled among patients that have one."""
    rng = rng_for(seed, PERMUTE_STREAM, stream_key)
    has = np.flatnonzero(codes >= 0)
    done = 0
    while done < n_perm:
        b = min(chunk, n_perm - done)
        out = np.tile(codes, (b, 1))
        for r in range(b):
            out[r, has] = codes[has][rng.permutation(len(has))]
        yield out.astype(np.int32)
        done += b
