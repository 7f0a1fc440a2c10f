"""AUC kernels: one sort per label, then weighted rank sums for many subgroups and replicates at once.

Why a compiled kernel: the audit's default (14 labels x 6 subgroups x 1,000 patient-bootstrap replicates on
40,000 images) is ~2 billion row visits. A vectorised numpy version needs a replicates x images matrix per
step and runs 20-80 s; this kernel visits each sorted row once per block of up to 32 replicates and runs in
about a second on two cores, in bounded memory.

The statistic is the Mann-Whitney form of the AUC with integer (bootstrap-count) weights, ties counted as
half: AUC = sum_pos w_i * (W_neg below s_i + W_neg tied with s_i / 2) / (W_pos * W_neg). With unit weights it
equals scikit-learn's ``roc_auc_score``.

Balanced test sets: the point estimate keeps, in each group x class cell, the images with the smallest
keyed hashes (``resample.BalanceCells.point_counts``); every bootstrap replicate draws its own sets from its
resampled images inside the kernel (:func:`balanced_segment_aucs`), in the same sweep as the full test set's
AUCs, so that the bootstrap resamples the whole procedure (balance, then AUC). Every draw depends on the images
alone -- hashes of the image ids and of the draw (seed, label, attribute, replicate, draw index) -- never on
scores or the row order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

_GOLDEN = uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _add(acc, w):
    for b in range(acc.shape[0]):
        acc[b] += w[b]


@njit(cache=True, inline="always")
def _add_positive(num, tot_pos, neg_below, w):
    for b in range(num.shape[0]):
        num[b] += w[b] * neg_below[b]
        tot_pos[b] += w[b]


@njit(cache=True, nogil=True)
def _sweep(y, pat, seg, tied, n_seg, weights, counts, out):
    """One pass over rows sorted by score for a block of R replicates at once; ``seg[i, m]`` lists the
    segments (subgroups) row i belongs to (``n_seg`` = none: a scratch slot that is never read) and
    ``tied[i]`` says row i+1 has the same score. Writes the AUC of every segment for every replicate into
    ``out`` (R, n_seg), NaN where a segment lacks positive or negative weight.

    A row weighs ``weights[pat[i], b]`` (its patient's bootstrap count in replicate b) in the first columns of
    ``seg``, and ``counts[i, m, b]`` in the last ``counts.shape[1]`` (balanced draws, which keep some of a
    row's copies). Why blocks: the row's loads and its branch are paid once for R replicates, and the
    innermost loops over replicates are contiguous (4-5x faster than one replicate per pass, same sums in the
    same order, so the same AUCs to the last bit). The common path has no data-dependent branch but the
    label's: zero weights and missing groups are accumulated like any other (into nothing, or the scratch
    slot), which measured twice as fast as skipping them.
    """
    n = y.shape[0]
    n_extra = counts.shape[1]
    n_plain = seg.shape[1] - n_extra
    n_rep = weights.shape[1]
    blk_pos = np.zeros((n_seg + 1, n_rep))
    blk_neg = np.zeros((n_seg + 1, n_rep))
    neg_below = np.zeros((n_seg + 1, n_rep))
    tot_pos = np.zeros((n_seg + 1, n_rep))
    num = np.zeros((n_seg + 1, n_rep))
    i = 0
    while i < n:
        if not tied[i]:  # a score of its own: the usual case for probabilities
            w = weights[pat[i]]
            if y[i]:
                for m in range(n_plain):
                    _add_positive(num[seg[i, m]], tot_pos[seg[i, m]], neg_below[seg[i, m]], w)
                for m in range(n_extra):
                    k = seg[i, n_plain + m]
                    _add_positive(num[k], tot_pos[k], neg_below[k], counts[i, m])
            else:
                for m in range(n_plain):
                    _add(neg_below[seg[i, m]], w)
                for m in range(n_extra):
                    _add(neg_below[seg[i, n_plain + m]], counts[i, m])
            i += 1
            continue
        j = i  # a block of tied scores: a tied negative counts half
        while True:
            blk = blk_pos if y[j] else blk_neg
            for m in range(n_plain):
                _add(blk[seg[j, m]], weights[pat[j]])
            for m in range(n_extra):
                _add(blk[seg[j, n_plain + m]], counts[j, m])
            j += 1
            if not tied[j - 1]:
                break
        for r in range(i, j):  # close the block once per segment it touched
            for m in range(n_plain + n_extra):
                k = seg[r, m]
                for b in range(n_rep):
                    if blk_pos[k, b] != 0.0 or blk_neg[k, b] != 0.0:
                        num[k, b] += blk_pos[k, b] * (neg_below[k, b] + 0.5 * blk_neg[k, b])
                        neg_below[k, b] += blk_neg[k, b]
                        tot_pos[k, b] += blk_pos[k, b]
                        blk_pos[k, b] = 0.0
                        blk_neg[k, b] = 0.0
        i = j
    for k in range(n_seg):
        for b in range(n_rep):
            if tot_pos[k, b] > 0.0 and neg_below[k, b] > 0.0:
                out[b, k] = num[k, b] / (tot_pos[k, b] * neg_below[k, b])
            else:
                out[b, k] = np.nan


def segments(seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Segment ids as the kernels take them: -1 (no segment) becomes the scratch slot ``n_seg``."""
    return np.where(seg < 0, n_seg, seg).astype(np.int32)


def ties(sorted_scores: np.ndarray) -> np.ndarray:
    """``tied[i]``: row i+1 has the same score as row i (scores sorted ascending)."""
    t = np.zeros(len(sorted_scores), dtype=np.bool_)
    t[:-1] = sorted_scores[1:] == sorted_scores[:-1]
    return t


def block_size(n_rep: int) -> int:
    """Replicates per pass: up to 32, small enough that every thread gets a block (a multiple of 4)."""
    from numba import get_num_threads

    return 4 * max(1, min(8, -(-n_rep // (4 * get_num_threads()))))


def segment_aucs(y, pat, seg, tied, n_seg, weights):
    """AUC of every segment for every row of ``weights`` (replicates x patients) -> (replicates, n_seg).

    ``seg`` (rows x columns) holds segment ids, with ``n_seg`` for "no segment" (see :func:`segments`)."""
    return _segment_aucs(y, pat, seg, tied, n_seg, weights, block_size(len(weights)))


@njit(cache=True, parallel=True)
def _segment_aucs(y, pat, seg, tied, n_seg, weights, size):
    n_rep = weights.shape[0]
    out = np.empty((n_rep, n_seg))
    for blk in prange(-(-n_rep // size)):
        lo, hi = blk * size, min(n_rep, (blk + 1) * size)
        no_counts = np.zeros((y.shape[0], 0, hi - lo), dtype=np.float32)  # full-set segments only
        _sweep(y, pat, seg, tied, n_seg, np.ascontiguousarray(weights[lo:hi].T), no_counts, out[lo:hi])
    return out


# ------------------------------------------------------------------------------------- balanced draws


@njit(cache=True, inline="always")
def _mix(x):
    """splitmix64's finaliser: a 64-bit hash of a 64-bit integer (wraps around, as intended)."""
    x = (x ^ (x >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> uint64(27))) * uint64(0x94D049BB133111EB)
    return x ^ (x >> uint64(31))


@njit(cache=True)
def draw_key(attr_key, replicate, draw):
    """The key of one balanced draw of one attribute column: replicate -1 is the point estimate."""
    return _mix(_mix(attr_key ^ _mix(uint64(replicate + 2) * _GOLDEN)) ^ (uint64(draw) * _GOLDEN + uint64(1)))


@njit(cache=True)
def keyed_hashes(img_keys, key):
    """One 64-bit hash per image for one draw (the image's own key mixed with the draw's)."""
    out = np.empty(img_keys.shape[0], dtype=np.uint64)
    for i in range(img_keys.shape[0]):
        out[i] = _mix(img_keys[i] ^ key)
    return out


LANES = 4  # replicates that share one 64-bit hash of an image, 16 bits each


@njit(cache=True)
def _more_copies(h, shift, copies, t):
    kept = 0
    for _ in range(copies):
        h = _mix(h + _GOLDEN)
        kept += np.int64((h >> shift) & uint64(0xFFFF)) < t
    return kept


@njit(cache=True)
def _block_counts(cells, pat, weights, replicates, n_draws, counts):
    """Fill ``counts`` (rows x draws*attributes x R): the copies of each row that each replicate's balanced
    draws keep. ``weights`` is (units x R), the replicates' bootstrap counts.

    In every cell a replicate has M copies (its patients' counts); the group with the fewest copies of a
    class keeps all of them, the others keep each copy with probability fewest / M, which draws about as
    many (the point estimate draws exactly as many, see ``resample.BalanceCells.point_counts``). A copy is
    kept when 16 bits of a hash of (image, label, draw, b // LANES, copy) fall below the share: a function of
    the images and the replicate, never of the scores or the row order, so two models share their draws (and
    the attributes of one image share its uniforms: each attribute's draw is uniform all the same)."""
    row_cell, cell_cls, cell_col, pstart, ppat, pcnt, label_key, img_keys = cells
    n_cells, n_attrs = cell_cls.shape[0], row_cell.shape[1]
    n_rep = weights.shape[1]
    size = np.zeros((n_cells, n_rep))
    for c in range(n_cells):
        for t in range(pstart[c], pstart[c + 1]):
            for b in range(n_rep):
                size[c, b] += weights[ppat[t], b] * pcnt[t]
    fewest = np.full((n_attrs, 2, n_rep), np.inf)
    for c in range(n_cells):
        for b in range(n_rep):
            fewest[cell_col[c], cell_cls[c], b] = min(fewest[cell_col[c], cell_cls[c], b], size[c, b])
    share = np.zeros((n_cells + 1, n_rep))  # the last row: images in no cell keep nothing
    for c in range(n_cells):
        for b in range(n_rep):
            share[c, b] = fewest[cell_col[c], cell_cls[c], b] / size[c, b] if size[c, b] > 0 else 0.0
    thr16 = np.empty((n_cells + 1, n_rep), dtype=np.int32)  # the share in 16-bit units: uniform bits below it
    for c in range(n_cells + 1):
        for b in range(n_rep):
            thr16[c, b] = np.int32(share[c, b] * 65536.0 + 0.5) if share[c, b] < 1.0 else 65537
    first = replicates[0] // LANES
    n_keys = (replicates[n_rep - 1] // LANES) - first + 1
    keys = np.empty((n_draws, n_keys), dtype=np.uint64)
    for k in range(n_draws):
        for q in range(n_keys):
            keys[k, q] = draw_key(label_key[0], first + q, k)
    hashes = np.empty((3, n_keys * LANES), dtype=np.int32)  # 16 bits per replicate, for copies 1, 2 and 3
    for i in range(row_cell.shape[0]):
        w = weights[pat[i]]
        for k in range(n_draws):
            for q in range(n_keys):  # one hash per copy number and 4 replicates (the block starts on a multiple of 4)
                h = _mix(img_keys[i] ^ keys[k, q])
                for copy in range(3):
                    for lane in range(LANES):
                        hashes[copy, q * LANES + lane] = np.int32((h >> uint64(16 * lane)) & uint64(0xFFFF))
                    h = _mix(h + _GOLDEN)
            for j in range(n_attrs):  # every attribute of the image reads the same bits
                c = row_cell[i, j]
                t16 = thr16[c if c >= 0 else n_cells]
                out = counts[i, k * n_attrs + j]
                for b in range(n_rep):  # branch-free for up to 3 copies (98% of images in a replicate)
                    copies, t = w[b], t16[b]
                    out[b] = ((copies >= 1) * (hashes[0, b] < t) + (copies >= 2) * (hashes[1, b] < t)
                              + (copies >= 3) * (hashes[2, b] < t))  # fmt: skip
                for b in range(n_rep):
                    if w[b] > 3:  # rare: hash on
                        h = _mix(img_keys[i] ^ keys[k, b // LANES] ^ uint64(b % LANES + 7))
                        out[b] += _more_copies(h, uint64(0), np.int64(w[b]) - 3, np.int64(t16[b]))


def balanced_segment_aucs(y, pat, seg_all, tied, cells, n_draws, n_seg, weights, replicates):
    """Full-set and balanced segment AUCs of bootstrap replicates, one sweep each -> (replicates,
    (1 + n_draws) * n_seg): columns ``[0, n_seg)`` are the full test set's segments, ``[(1 + k) n_seg,
    (2 + k) n_seg)`` those of draw k. ``seg_all`` comes from ``resample.BalanceCells.segments``; replicate
    ``replicates[b]`` weighs patients by ``weights[b]`` and draws its own balanced sets from them."""
    return _balanced_segment_aucs(y, pat, seg_all, tied, cells, n_draws, n_seg, weights, replicates,
                                  block_size(len(weights)))  # fmt: skip


@njit(cache=True, parallel=True)
def _balanced_segment_aucs(y, pat, seg_all, tied, cells, n_draws, n_seg, weights, replicates, size):
    n_rep, n = weights.shape[0], y.shape[0]
    n_cols = n_draws * cells[0].shape[1]
    total = (1 + n_draws) * n_seg
    out = np.empty((n_rep, total))
    for blk in prange(-(-n_rep // size)):
        lo, hi = blk * size, min(n_rep, (blk + 1) * size)
        w = np.ascontiguousarray(weights[lo:hi].T)
        counts = np.empty((n, n_cols, hi - lo), dtype=np.float32)
        _block_counts(cells, pat, w, replicates[lo:hi], n_draws, counts)
        _sweep(y, pat, seg_all, tied, total, w, counts, out[lo:hi])
    return out


@njit(cache=True)
def counted_segment_aucs(y, pat, seg_all, tied, n_seg, weights, counts):
    """One sweep with given draw counts (the point estimate's exact draws, rows x columns) -> (n_seg,)."""
    out = np.empty((1, n_seg))
    block = counts.reshape(counts.shape[0], counts.shape[1], 1).astype(np.float32)
    _sweep(y, pat, seg_all, tied, n_seg, weights.reshape(-1, 1), block, out)
    return out[0]


# -------------------------------------------------------------------------------------------- DeLong


def delong_ci(
    y: np.ndarray, p: np.ndarray, level: float = 0.95, clusters: np.ndarray | None = None
) -> tuple[float, float, float]:
    """AUC with DeLong's analytic interval (the midrank algorithm of Sun & Xu, 2014), clipped to [0, 1].

    With ``clusters`` (a patient code per row) the variance is Obuchowski's (Biometrics 1997) for clustered
    data: each patient's structural components are summed before their variance is taken, so that several
    images of one patient do not count as independent evidence. With one image per patient it equals
    DeLong's."""
    from scipy.stats import norm, rankdata

    pos_mask = y == 1
    pos, neg = p[pos_mask], p[~pos_mask]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    all_ranks = rankdata(np.concatenate([pos, neg]))
    pos_ranks, neg_ranks = rankdata(pos), rankdata(neg)
    auc_value = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (all_ranks[:m] - pos_ranks) / n  # structural components of the positives
    v01 = 1.0 - (all_ranks[m:] - neg_ranks) / m  # ... and of the negatives
    if clusters is None:
        var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    else:
        var = _obuchowski_var(auc_value, v10, v01, clusters[pos_mask], clusters[~pos_mask])
    z = norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(max(var, 0.0))
    return float(auc_value), float(max(0.0, auc_value - half)), float(min(1.0, auc_value + half))


def _obuchowski_var(theta, v10, v01, c_pos, c_neg) -> float:
    _, code = np.unique(np.concatenate([c_pos, c_neg]), return_inverse=True)
    k_pos, k_neg = code[: len(c_pos)], code[len(c_pos) :]
    n_clusters = int(code.max()) + 1
    m, n = len(v10), len(v01)
    V10 = np.bincount(k_pos, weights=v10, minlength=n_clusters)  # noqa: N806  (the paper's names)
    V01 = np.bincount(k_neg, weights=v01, minlength=n_clusters)  # noqa: N806
    m_i = np.bincount(k_pos, minlength=n_clusters)
    n_i = np.bincount(k_neg, minlength=n_clusters)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2 or n_clusters < 2:
        return float("nan")
    d10, d01 = V10 - m_i * theta, V01 - n_i * theta
    s10 = i10 / ((i10 - 1) * m) * np.sum(d10**2)
    s01 = i01 / ((i01 - 1) * n) * np.sum(d01**2)
    s11 = n_clusters / (n_clusters - 1) * np.sum(d10 * d01)
    return float(s10 / m + s01 / n + 2 * s11 / (m * n))
