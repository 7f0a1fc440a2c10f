"""From segment AUCs to every statistic of the audit, for the point estimate and each replicate alike.

Both functions take arrays with a leading replicate axis R (1 for the point estimate, B for the bootstrap,
K for the balanced draws) and return trees of arrays with the same leading axis, so that one code path makes
the point estimates, the replicates and the values they are centred on, and intervals are taken leaf by leaf.

Terms (METHOD section 5): the per-label *gap* of an attribute is the best minus the worst subgroup AUC; the
headline *FG* is the gap of the subgroups' mean AUCs over labels, using only labels with an AUC in every
subgroup. *delta_vs_group_mean* compares a subgroup with the mean over subgroups (Fig. 3),
*delta_vs_population* with the whole population's AUC (Figs. 5 and 6). *pairwise* holds the signed
difference of every pair of subgroups (``a`` minus ``b``, in the attribute's group order). All fractions.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from fairscan.fairness.groups import Attribute


def pairs(groups: list[str]) -> list[tuple[int, int]]:
    """The ordered pairs (i, j), i < j, of an attribute's groups: differences are group i minus group j."""
    return list(combinations(range(len(groups)), 2))


def _gap(x: np.ndarray) -> np.ndarray:
    """max - min over the last axis; NaN if any entry is NaN (a replicate that lost a subgroup)."""
    return x.max(axis=-1) - x.min(axis=-1)


def per_label(aucs: np.ndarray, attrs: list[Attribute], valid: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-label statistics from segment AUCs of shape (R, segments).

    ``valid[attr]`` masks the groups that have an AUC in the point estimate; the others are left out of
    gaps and means everywhere so that replicates and point estimate describe the same quantity.
    """
    out: dict[str, Any] = {"overall": aucs[:, 0], "attrs": {}}
    for a in attrs:
        g = aucs[:, a.offset : a.offset + len(a.groups)]
        keep = valid[a.name]
        kept = g[:, keep]
        if keep.sum() >= 2:
            gap = _gap(kept)
            mean = kept.mean(axis=1)
        else:
            gap = np.full(len(g), np.nan)
            mean = kept.mean(axis=1) if keep.any() else np.full(len(g), np.nan)
        masked = np.where(keep[None, :], g, np.nan)
        out["attrs"][a.name] = {
            "groups": masked,
            "gap": gap,
            "delta_vs_group_mean": masked - mean[:, None],
            "delta_vs_population": masked - aucs[:, :1],
        }
    return out


def summary(per_label_trees: dict[str, dict], labels: list[str], attrs: list[Attribute], used: dict) -> dict:
    """Summary statistics across labels, from :func:`per_label` trees (point or replicates alike)."""
    overall = np.stack([per_label_trees[lab]["overall"] for lab in labels], axis=-1)
    out: dict[str, Any] = {"mean_auc": overall.mean(axis=-1), "attrs": {}}
    for a in attrs:
        labs = used[a.name]
        if not labs:
            continue
        g = np.stack([per_label_trees[lab]["attrs"][a.name]["groups"] for lab in labs], axis=-1)  # (R, G, L)
        # Labels used have an AUC in every subgroup, so a NaN here is a replicate that lost a class.
        group_mean = g.mean(axis=-1)
        pop_mean = np.stack([per_label_trees[lab]["overall"] for lab in labs], axis=-1).mean(axis=-1)
        label_gaps = np.stack([per_label_trees[lab]["attrs"][a.name]["gap"] for lab in labs], axis=-1)
        two = group_mean.shape[1] >= 2
        out["attrs"][a.name] = {
            "group_mean_auc": group_mean,
            "gap": _gap(group_mean) if two else np.full(len(group_mean), np.nan),
            "delta_vs_group_mean": group_mean - group_mean.mean(axis=1, keepdims=True),
            "delta_vs_population": group_mean - pop_mean[:, None],
            "mean_label_gap": label_gaps.mean(axis=-1),
            "max_label_gap": label_gaps.max(axis=-1),
            "pairwise": np.stack([group_mean[:, i] - group_mean[:, j] for i, j in pairs(a.groups)], axis=-1)
            if two
            else np.zeros((len(group_mean), 0)),
            "worst_group_auc": group_mean.min(axis=-1),
        }
    return out
