"""The audit's JSON (``docs/audit-json.md``), laid out from the zipped statistics.

``Trees`` turns segment AUCs into the tree of every statistic (``estimates``) for any leading axis; ``Zip`` holds
the point estimates, the replicates and what the replicates are centred on, and reads any statistic off them as
(value, interval) by ``stats``'s one rule; ``Layout`` writes the audit dict from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fairscan import __version__
from fairscan.fairness import curves, estimates, stats, thresholds
from fairscan.fairness.groups import Attribute
from fairscan.fairness.multitest import adjust
from fairscan.schema import AUDIT_SCHEMA

if TYPE_CHECKING:
    from fairscan.fairness.audit import AuditConfig


GAP_TEST = (
    "H0: every subgroup has the same (mean) AUC. Patient bootstrap centred under H0: p = (1 + #{range of the "
    "replicates' deviations from the subgroup AUCs >= FG}) / (B + 1). Each image keeps its own group."
)
ADJUSTED_GAP = (
    "FG minus the bootstrap's estimate of its upward bias (best minus worst is positive even with no real "
    "difference), floored at 0; its interval [max(0, FG - q), FG + q] contains 0 exactly when p >= 1 - level."
)
MULTIPLICITY = (
    "p_value_holm: Holm over the audit's attributes; q_value: Benjamini-Hochberg over each attribute's "
    "per-label gap tests."
)



# The per-attribute statistics that paired comparisons take (``compare.metric``): key prefix -> summary entry.
HEADLINE = {"gap": "gap", "worst": "worst_group_auc"}


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


class Trees:
    """Segment AUCs per label -> the tree of every statistic (``estimates``), for any leading axis."""

    def __init__(self, attrs, valid, used, with_auc):
        self.attrs, self.valid, self.used, self.with_auc = attrs, valid, used, with_auc

    def __call__(self, aucs: dict[str, np.ndarray]) -> dict[str, Any]:
        labels = {lab: estimates.per_label(a, self.attrs, self.valid[lab]) for lab, a in aucs.items()}
        return {"labels": labels, "summary": estimates.summary(labels, self.with_auc, self.attrs, self.used)}


class Zip:
    """Point estimates, replicates and centres zipped into (value, interval) by one rule (``stats``)."""

    def __init__(self, point, reps, centre, level, min_count):
        self.point, self.reps, self.centre = point, reps, centre
        self.level, self.min_count = level, min_count

    @staticmethod
    def leaf(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    def arrays(self, *path, i=None):
        """(point (G,) or scalar, replicates (B, ...) or None, centre or None) of one statistic."""

        def pick(tree):
            if tree is None:
                return None
            x = self.leaf(tree, path)
            return x[:, i] if i is not None else x

        point, reps, centre = pick(self.point), pick(self.reps), pick(self.centre)
        return point[0], reps, (None if centre is None else centre[0])

    def __call__(self, *path, i=None) -> tuple[float | None, list[float] | None]:
        point, reps, centre = self.arrays(*path, i=i)
        value = _num(point)
        return value, stats.interval(value, reps, None if centre is None else float(centre), self.level,
                                     min_count=self.min_count)  # fmt: skip

    def ci(self, reps: np.ndarray | None) -> list[float] | None:
        return stats.percentile_ci(reps, self.level, min_count=self.min_count)

    def gap_test(self, *path) -> dict[str, Any] | None:
        """Gap test of the groups at ``path`` (a tree node with ``groups`` or ``group_mean_auc``)."""
        if self.reps is None:
            return None
        key = "group_mean_auc" if path[0] == "summary" else "groups"
        point, reps, centre = self.arrays(*path, key)
        have = ~np.isnan(point)
        centre = point if centre is None else centre
        return stats.gap_test(point[have], reps[:, have], centre[have], self.level, min_count=self.min_count)

    def worst(self, *path) -> list[float] | None:
        if self.reps is None:
            return None
        point, reps, centre = self.arrays(*path, "group_mean_auc")
        return stats.worst_group(point, reps, point if centre is None else centre, self.level,
                                 min_count=self.min_count)  # fmt: skip

    def headline_replicates(self) -> dict[str, np.ndarray]:
        """Replicates of the mean AUC, each headline gap and each worst subgroup's mean AUC, for paired
        comparisons between models."""
        if self.reps is None:
            return {}
        s = self.reps["summary"]
        out = {"mean_auc": s["mean_auc"]}
        out.update({f"{key}:{a}": sd[stat] for key, stat in HEADLINE.items() for a, sd in s["attrs"].items()})
        return out

    def headline_centres(self) -> dict[str, float]:
        """What those replicates are centred on (absent: on the point estimates)."""
        if self.centre is None:
            return {}
        s = self.centre["summary"]
        out = {"mean_auc": float(s["mean_auc"][0])}
        out.update({f"{key}:{a}": float(sd[stat][0]) for key, stat in HEADLINE.items() for a, sd in s["attrs"].items()})
        return out


class Layout:
    """The audit dict of ``docs/audit-json.md``, read off the zipped statistics."""

    def __init__(self, auditor, data, counts, z: Zip, draw_tree, delong, rates, tree: Trees):
        self.a, self.data, self.counts, self.z = auditor, data, counts, z
        self.draw_tree, self.delong, self.rates = draw_tree, delong, rates
        self.used, self.with_auc = tree.used, tree.with_auc
        self.cfg = auditor.cfg

    def audit_dict(self, thr) -> dict[str, Any]:
        a, cfg = self.a, self.cfg
        labels_out = {lab: self._label(lab) for lab in a.labels}
        self._q_values(labels_out)
        summary_attrs = {attr.name: self._summary_attr(attr) for attr in a.attrs}
        holm = adjust([s.get("p_value") for s in summary_attrs.values()], "holm")
        for s, ph in zip(summary_attrs.values(), holm, strict=True):
            s["p_value_holm"] = ph
        if self.z.reps is not None:
            dropped = int(np.isnan(self.z.reps["summary"]["mean_auc"]).sum())
            if dropped:
                a.notes.append(f"{dropped} of {cfg.n_boot} bootstrap replicates lost a class in some label")
        if cfg.intervals != "bootstrap":
            a.notes.append("no p-values: the gap test uses the bootstrap (--intervals bootstrap)")
        settings = cfg.model_dump()
        settings["labels"] = a.labels
        mean_auc, mean_auc_ci = self.z("summary", "mean_auc")
        return {
            "schema": AUDIT_SCHEMA, "fairscan_version": __version__, "model": a.name, "source": a.p.source,
            "provenance": a.p.provenance, "units": "fraction", "settings": settings,
            "inference": {"gap_test": GAP_TEST, "gap_adjusted": ADJUSTED_GAP, "multiplicity": MULTIPLICITY,
                          "balanced": self._balanced_note()},
            "notes": a.notes, "n_images": len(a.p.frame), "n_patients": a.units.n_patients,
            "labels": labels_out,
            "summary": {"mean_auc": mean_auc, "mean_auc_ci": mean_auc_ci, "labels": self.with_auc,
                        "attrs": summary_attrs},
            "thresholds": None if thr is None else {k: v for k, v in thr.items() if k != "raw"},
            "curves": self._curves(),
            "gate": None,
        }  # fmt: skip

    def _curves(self) -> dict[str, Any]:
        """ROC and reliability curves per label, overall and per subgroup, on the full test set."""
        roc, rel = {}, {}
        for lab, r in self.data.items():
            p = self.a.p.p(lab)[r.order]
            roc[lab] = {"overall": curves.roc_tpr(r.y, r.scores)}
            rel[lab] = {"overall": curves.reliability(r.y, p, self.cfg.ece_bins)}
            for j, attr in enumerate(self.a.attrs, start=1):
                roc[lab][attr.name], rel[lab][attr.name] = {}, {}
                for gi, g in enumerate(attr.groups):
                    rows = r.seg[:, j] == attr.offset + gi
                    roc[lab][attr.name][g] = curves.roc_tpr(r.y[rows], r.scores[rows])
                    rel[lab][attr.name][g] = curves.reliability(r.y[rows], p[rows], self.cfg.ece_bins) if rows.any() else None
        return {"fpr": [float(x) for x in curves.FPR_GRID], "roc": roc, "reliability": rel}

    def _balanced_note(self) -> str | None:
        if not self.cfg.balanced_test:
            return None
        k = self.cfg.balanced_draws
        return (
            f"subgroup AUCs on balanced test sets (every subgroup with the same positives and negatives, drawn "
            f"without replacement), averaged over {k} draw(s); each bootstrap replicate draws its own sets, and "
            f"intervals and tests are centred on the full-set values that balancing leaves unchanged in "
            f"expectation"
        )

    def _label(self, lab: str) -> dict[str, Any]:
        r, (n, pos), z = self.data[lab], self.counts[lab], self.z
        auc, ci = z("labels", lab, "overall")
        if self.delong is not None:
            ci = _nan_list(self.delong[lab][0])
        thr = self.rates.get(lab)
        return {
            "n": int(n[0]), "n_pos": int(pos[0]), "auc": auc, "ci": ci if auc is not None else None,
            "ece": thresholds.ece(r.y, self.a.p.p(lab)[r.order], self.cfg.ece_bins),
            "threshold": thr["overall"] if thr else None,
            "attrs": {attr.name: self._label_attr(lab, attr, thr) for attr in self.a.attrs},
        }  # fmt: skip

    def _label_attr(self, lab: str, attr: Attribute, thr) -> dict[str, Any]:
        r, z = self.data[lab], self.z
        path = ("labels", lab, "attrs", attr.name)
        groups = {g: self._group(lab, attr, gi, thr) for gi, g in enumerate(attr.groups)}
        gap, gap_ci = z(*path, "gap")
        best, worst = _best_worst(z.arrays(*path, "groups")[0], attr.groups)
        test = z.gap_test(*path) if gap is not None else None
        balanced = None
        if r.cells is not None and r.cells.per_attr[self.a.attrs.index(attr)] is not None:
            balanced = {**r.cells.per_attr[self.a.attrs.index(attr)], "draws": self.cfg.balanced_draws,
                        "balance_sd": self._balance_sd(*path)}  # fmt: skip
        return {
            "groups": groups, "gap": gap, "gap_ci": gap_ci, "p_value": test["p_value"] if test else None,
            "q_value": None, "best_group": best, "worst_group": worst, "balanced": balanced,
            "threshold_gaps": thr[attr.name]["gaps"] if thr else None,
        }  # fmt: skip

    def _group(self, lab: str, attr: Attribute, gi: int, thr) -> dict[str, Any]:
        r, (n, pos), z = self.data[lab], self.counts[lab], self.z
        path, k = ("labels", lab, "attrs", attr.name), attr.offset + gi
        auc, ci = z(*path, "groups", i=gi)
        if self.delong is not None:
            ci = _nan_list(self.delong[lab][k])
        in_group = r.seg[:, 1 + self.a.attrs.index(attr)] == k  # the full test set, balanced or not
        dgm, dgm_ci = z(*path, "delta_vs_group_mean", i=gi)
        dpop, dpop_ci = z(*path, "delta_vs_population", i=gi)
        return {
            "n": int(n[k]), "n_pos": int(pos[k]), "auc": auc, "ci": ci if auc is not None else None,
            "delta_vs_group_mean": dgm, "delta_vs_group_mean_ci": dgm_ci,
            "delta_vs_population": dpop, "delta_vs_population_ci": dpop_ci,
            "threshold": thr[attr.name]["groups"][attr.groups[gi]] if thr else None,
            "ece": thresholds.ece(r.y[in_group], self.a.p.p(lab)[r.order][in_group], self.cfg.ece_bins),
            "note": None if auc is not None else _why_missing(n[k], pos[k], self.cfg),
        }  # fmt: skip

    def _balance_sd(self, *path) -> float | None:
        """Standard deviation of a balanced gap over the draws (None with one draw)."""
        if self.draw_tree is None:
            return None
        gaps = self.z.leaf(self.draw_tree, (*path, "gap"))
        gaps = gaps[~np.isnan(gaps)]
        return float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None

    def _q_values(self, labels_out: dict) -> None:
        """Benjamini-Hochberg over each attribute's per-label gap tests."""
        for attr in self.a.attrs:
            ps = [labels_out[lab]["attrs"][attr.name]["p_value"] for lab in self.a.labels]
            for lab, q in zip(self.a.labels, adjust(ps, "fdr_bh"), strict=True):
                labels_out[lab]["attrs"][attr.name]["q_value"] = q

    def _summary_attr(self, attr: Attribute) -> dict[str, Any]:
        a, z, name = self.a, self.z, attr.name
        if len(attr.groups) < 2 or name not in z.point["summary"]["attrs"]:
            why = (f"{name} has one group only ({attr.groups[0]})" if len(attr.groups) == 1
                   else f"no label has an AUC in every {name} subgroup")  # fmt: skip
            return {"groups": attr.groups, "gap": None, "gap_ci": None, "gap_adjusted": None, "gap_adjusted_ci": None,
                    "p_value": None, "why_no_gap": why, "labels_used": [], "labels_left_out": list(a.labels),
                    "patients_varying": attr.patients_varying}  # fmt: skip
        path = ("summary", "attrs", name)
        per_group = {key: {g: z(*path, key, i=gi)[0] for gi, g in enumerate(attr.groups)}
                     for key in ("group_mean_auc", "delta_vs_group_mean", "delta_vs_population")}  # fmt: skip
        per_group_ci = {f"{key}_ci": {g: z(*path, key, i=gi)[1] for gi, g in enumerate(attr.groups)}
                        for key in per_group}  # fmt: skip
        gap, gap_ci = z(*path, "gap")
        best, worst = _best_worst(z.arrays(*path, "group_mean_auc")[0], attr.groups)
        test = z.gap_test(*path) if gap is not None else None
        label_gaps = {lab: z(*("labels", lab, "attrs", name, "gap"))[0] for lab in self.used[name]}
        max_lab = max(label_gaps, key=lambda k: -np.inf if label_gaps[k] is None else label_gaps[k])
        out = {
            "groups": attr.groups, "group_mean_auc": per_group["group_mean_auc"],
            "group_mean_auc_ci": per_group_ci["group_mean_auc_ci"], "gap": gap, "gap_ci": gap_ci,
            "gap_adjusted": test["gap_adjusted"] if test else None,
            "gap_adjusted_ci": test["gap_adjusted_ci"] if test else None,
            "p_value": test["p_value"] if test else None, "best_group": best, "worst_group": worst,
            "worst_group_auc": z(*path, "worst_group_auc")[0], "worst_group_auc_ci": z.worst(*path),
            "pairwise": self._pairwise(attr, path),
            "delta_vs_group_mean": per_group["delta_vs_group_mean"],
            "delta_vs_group_mean_ci": per_group_ci["delta_vs_group_mean_ci"],
            "delta_vs_population": per_group["delta_vs_population"],
            "delta_vs_population_ci": per_group_ci["delta_vs_population_ci"],
            "labels_used": self.used[name], "labels_left_out": [lab for lab in a.labels if lab not in self.used[name]],
            "mean_label_gap": z(*path, "mean_label_gap")[0], "mean_label_gap_ci": z(*path, "mean_label_gap")[1],
            "max_label_gap": z(*path, "max_label_gap")[0], "max_label_gap_ci": z(*path, "max_label_gap")[1],
            "max_label_gap_label": max_lab, "patients_varying": attr.patients_varying,
            "balance_sd": self._balance_sd(*path), "equalized_odds": self._mean_eo(name),
        }  # fmt: skip
        return out

    def _pairwise(self, attr: Attribute, path) -> list[dict[str, Any]]:
        out = []
        for k, (i, j) in enumerate(estimates.pairs(attr.groups)):
            diff, ci = self.z(*path, "pairwise", i=k)
            out.append({"a": attr.groups[i], "b": attr.groups[j], "diff": diff, "ci": ci})
        return out

    def _mean_eo(self, attr: str) -> float | None:
        """Mean over labels of the equalized-odds gap at the thresholds (None without thresholds)."""
        values = [r[attr]["gaps"]["equalized_odds"] for r in self.rates.values()]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None


def _nan_list(ci) -> list[float] | None:
    return None if np.isnan(ci).any() else [float(ci[0]), float(ci[1])]


def _best_worst(values: np.ndarray, groups: list[str]) -> tuple[str | None, str | None]:
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None, None
    idx = np.flatnonzero(ok)
    return groups[idx[np.argmax(values[idx])]], groups[idx[np.argmin(values[idx])]]


def _why_missing(n: int, pos: int, cfg: AuditConfig) -> str:
    if n == 0:
        return "no images"
    if pos == 0 or pos == n:
        return "one class only"
    return f"too few positives or negatives ({pos}/{n - pos}; minimum {cfg.min_pos}/{cfg.min_neg}, see --min-count)"
