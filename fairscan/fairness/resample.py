"""Resampling for the audit: stratified patient-bootstrap counts and the cells of balanced test sets.

Everything is seeded from one integer. The bootstrap draws from numpy's ``SeedSequence`` streams; balanced
draws are keyed by hashes of names and image ids (see ``kernels.balanced_segment_aucs``), so that they
depend on the images alone -- the seed, the label and attribute names, each image's id, label value and
group -- and never on a model's scores, the row order, or which other labels and attributes are audited.
Two models audited on the same images therefore get the same balanced sets, replicate by replicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

BOOT_STREAM = 0


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


# --------------------------------------------------------------------------------------- balanced sets


def name_key(*parts: object) -> np.uint64:
    """A 64-bit key of a tuple of names and numbers (stable across runs, machines and Python versions)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return np.frombuffer(hashlib.blake2b(text, digest_size=8).digest(), dtype="<u8")[0]


def image_keys(image_ids: Sequence[str]) -> np.ndarray:
    """One 64-bit key per image id: the canonical order of a cell's images."""
    raw = b"".join(hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in image_ids)
    return np.frombuffer(raw, dtype="<u8").copy()


@dataclass
class BalanceCells:
    """The cells one label's balanced draws pick from: per attribute column, group and class, the rows (in
    score order) listed by image key, and how many of them each draw keeps (the smallest group's count)."""

    arrays: tuple  # (start, rows, class, col, seg, cell_key, attr_keys), as the kernel takes them
    n_cols: int
    per_attr: list[dict[str, int] | None]  # n_per_group and n_pos_per_group, or None (no draw)


def balance_cells(
    y: np.ndarray,
    keys: np.ndarray,
    columns: list[tuple[str, np.ndarray, list[str], np.ndarray, int]],
    *,
    seed: int,
    label: str,
) -> BalanceCells:
    """Cells of one label (rows in score order) for ``columns`` = (attribute name, group code per row,
    group names, which groups have an AUC, segment offset), one per attribute.

    A draw keeps, in every valid group, as many positives and as many negatives as the smallest valid group
    has (``kernels.balanced_draw``); groups without an AUC are left out, so a tiny group does not shrink the
    others. ``per_attr`` reports those sizes on the test set itself.
    """
    starts, rows, cls, col, seg, cell_key, attr_keys, per_attr = [0], [], [], [], [], [], [], []
    for j, (attr, codes, groups, valid, offset) in enumerate(columns):
        attr_keys.append(name_key("balance", seed, label, attr))
        groups_in = [g for g in range(len(groups)) if valid[g]]
        cells = {(g, c): np.flatnonzero((codes == g) & (y == c)) for g in groups_in for c in (0, 1)}
        if not groups_in:
            per_attr.append(None)
            continue
        need = {c: min(len(cells[g, c]) for g in groups_in) for c in (0, 1)}
        for (g, c), idx in cells.items():
            idx = idx[np.argsort(keys[idx], kind="stable")]
            rows.append(idx)
            starts.append(starts[-1] + len(idx))
            cls.append(c)
            col.append(j)
            seg.append(offset + g)
            cell_key.append(name_key(groups[g], c))
        per_attr.append({"n_per_group": need[0] + need[1], "n_pos_per_group": need[1]})
    arrays = (
        np.asarray(starts, dtype=np.int64),
        np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64),
        np.asarray(cls, dtype=np.int64),
        np.asarray(col, dtype=np.int64),
        np.asarray(seg, dtype=np.int32),
        np.asarray(cell_key, dtype=np.uint64),
        np.asarray(attr_keys, dtype=np.uint64),
    )
    return BalanceCells(arrays=arrays, n_cols=len(columns), per_attr=per_attr)
