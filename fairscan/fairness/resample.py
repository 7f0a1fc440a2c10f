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
    """The cells one label's balanced draws pick from: per attribute column, every valid group x class cell,
    its rows (in score order) and its patients with their image counts (a replicate's size of the cell)."""

    row_cell: np.ndarray  # (rows, attributes): the row's cell in each column, -1 for none
    cell_class: np.ndarray
    cell_col: np.ndarray
    cell_seg: np.ndarray  # the cell's group segment id
    cell_size: np.ndarray  # images in the cell
    patients: tuple  # (start, patient, images): CSR of each cell's patients
    attr_keys: np.ndarray  # uint64, one per attribute: (seed, label, attribute) hashed (the point estimate)
    label_key: np.ndarray  # uint64, (seed, label) hashed (the replicates' draws)
    img_keys: np.ndarray  # uint64, one per row
    per_attr: list[dict[str, int] | None]  # n_per_group and n_pos_per_group, or None (no draw)

    @property
    def n_cols(self) -> int:
        return self.row_cell.shape[1]

    @property
    def arrays(self) -> tuple:
        """What ``kernels.balanced_segment_aucs`` takes."""
        return (self.row_cell, self.cell_class, self.cell_col, *self.patients, self.label_key, self.img_keys)

    def point_counts(self, n_draws: int) -> np.ndarray:
        """The point estimate's draws, (rows, draws x attributes) of 0/1: in every cell the images with the
        smallest hashes (of the image id and the draw), as many as the column's smallest group of that class."""
        from fairscan.fairness import kernels

        counts = np.zeros((len(self.row_cell), n_draws * self.n_cols))
        for j in range(self.n_cols):
            cells = np.flatnonzero(self.cell_col == j)
            if len(cells) == 0:  # no group of this attribute has an AUC: nothing to draw
                continue
            fewest = {c: min(self.cell_size[k] for k in cells if self.cell_class[k] == c) for c in (0, 1)}
            for k in range(n_draws):
                key = np.uint64(kernels.draw_key(self.attr_keys[j], -1, k))  # (numba hands back a Python int)
                hashes = kernels.keyed_hashes(self.img_keys, key)
                for cell in cells:
                    rows = np.flatnonzero(self.row_cell[:, j] == cell)
                    keep = fewest[self.cell_class[cell]]
                    chosen = rows if keep >= len(rows) else rows[np.argsort(hashes[rows], kind="stable")[:keep]]
                    counts[chosen, k * self.n_cols + j] = 1.0
        return counts

    def segments(self, seg: np.ndarray, n_seg: int, n_draws: int) -> np.ndarray:
        """The label's segment columns for the balanced kernels: the full-set columns ``seg`` (``n_seg`` = none),
        then one column per draw and attribute with the row's group segment offset by ``(1 + draw) * n_seg``
        (rows in no cell of that attribute: none). None is the last slot, ``(1 + n_draws) * n_seg``."""
        total = (1 + n_draws) * n_seg
        cell_seg = np.append(self.cell_seg, -1)  # row_cell -1 (no cell) reads the appended -1
        own = cell_seg[self.row_cell]
        out = [np.where(seg == n_seg, total, seg)]
        for k in range(n_draws):
            out.append(np.where(own < 0, total, own + (1 + k) * n_seg))
        return np.concatenate(out, axis=1).astype(np.int32)


def balance_cells(
    y: np.ndarray,
    unit: np.ndarray,
    keys: np.ndarray,
    columns: list[tuple[str, np.ndarray, list[str], np.ndarray, int]],
    *,
    seed: int,
    label: str,
) -> BalanceCells:
    """Cells of one label (rows in score order, ``unit`` their resampling unit, ``keys`` their image keys) for
    ``columns`` = (attribute name, group code per row, group names, which groups have an AUC, segment offset).

    A draw keeps, in every valid group, as many positives and as many negatives as the smallest valid group
    has; groups without an AUC are left out, so a tiny group does not shrink the others. ``per_attr`` reports
    those sizes on the test set itself.
    """
    row_cell = np.full((len(y), len(columns)), -1, dtype=np.int32)
    cls, col, seg, size, pstart, ppat, pcnt, attr_keys, per_attr = [], [], [], [], [0], [], [], [], []
    for j, (attr, codes, _groups, valid, offset) in enumerate(columns):
        attr_keys.append(name_key("balance", seed, label, attr))
        groups_in = [g for g in range(len(valid)) if valid[g]]
        if not groups_in:
            per_attr.append(None)
            continue
        cells = {(g, c): np.flatnonzero((codes == g) & (y == c)) for g in groups_in for c in (0, 1)}
        for (g, c), rows in cells.items():
            row_cell[rows, j] = len(cls)
            patients, images = np.unique(unit[rows], return_counts=True)
            pstart.append(pstart[-1] + len(patients))
            ppat.append(patients)
            pcnt.append(images)
            cls.append(c)
            col.append(j)
            seg.append(offset + g)
            size.append(len(rows))
        need = {c: min(len(cells[g, c]) for g in groups_in) for c in (0, 1)}
        per_attr.append({"n_per_group": need[0] + need[1], "n_pos_per_group": need[1]})

    def ints(x, dtype=np.int64):
        return np.asarray(x, dtype=dtype)

    return BalanceCells(
        row_cell=row_cell, cell_class=ints(cls), cell_col=ints(col), cell_seg=ints(seg, np.int32),
        cell_size=ints(size),
        patients=(ints(pstart), np.concatenate(ppat).astype(np.int64) if ppat else ints([]),
                  np.concatenate(pcnt).astype(np.float64) if pcnt else np.zeros(0)),
        attr_keys=np.asarray(attr_keys, dtype=np.uint64), img_keys=np.ascontiguousarray(keys, dtype=np.uint64),
        label_key=np.asarray([name_key("balance", seed, label)], dtype=np.uint64),
        per_attr=per_attr,
    )  # fmt: skip
