"""Audit and comparison dicts in the shape of docs/audit-json.md, for the renderers' tests.

Numbers are random but consistent with each other (gaps are max - min, deltas are differences), so a
report built from them looks like a real one. Every field of the contract is filled; options switch on the
nulls a real audit can hold: a missing subgroup AUC, intervals off, no thresholds, balanced sets.
"""

from __future__ import annotations

import random

from fairscan.schema import CHEXPERT_LABELS

ATTRS = {"sex": ["Female", "Male"], "race": ["White", "Asian", "Black"]}


def _ci(rng: random.Random, x: float | None, on: bool, half: float = 0.012) -> list[float] | None:
    if not on or x is None:
        return None
    return [x - half * rng.uniform(0.6, 1.0), x + half * rng.uniform(0.6, 1.0)]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def make_audit(
    *,
    model: str = "preds",
    labels: list[str] | None = None,
    attrs: dict[str, list[str]] | None = None,
    seed: int = 0,
    intervals: bool = True,
    thresholds: bool = True,
    balanced: bool = False,
    missing: tuple[tuple[str, str, str], ...] = (("fracture", "race", "Black"),),
    gate: bool = True,
) -> dict:
    """A single-model audit (``fairscan.audit/2``); ``missing`` lists (label, attr, group) with no AUC."""
    rng = random.Random(seed)
    labels = list(labels or CHEXPERT_LABELS)
    attrs = attrs or ATTRS
    n_img, n_pat = 40_000, 13_000
    out_labels: dict = {}
    for lab in labels:
        auc = rng.uniform(0.70, 0.92)
        n_pos = rng.randint(300, 8000)
        entry = {"n": n_img, "n_pos": n_pos, "auc": auc, "ci": _ci(rng, auc, intervals, 0.006), "attrs": {}}
        for attr, groups in attrs.items():
            gaucs = {g: None if (lab, attr, g) in missing else auc + rng.uniform(-0.03, 0.03) for g in groups}
            present = [v for v in gaucs.values() if v is not None]
            gmean = _mean(present)
            gdict = {}
            for g in groups:
                a = gaucs[g]
                gn = n_img // len(groups)
                th = None
                if thresholds and a is not None:
                    tpr, fpr = rng.uniform(0.6, 0.9), rng.uniform(0.1, 0.3)
                    th = {
                        "tpr": tpr,
                        "fpr": fpr,
                        "fnr": 1 - tpr,
                        "tpr_ci": _ci(rng, tpr, intervals, 0.02),
                        "fpr_ci": _ci(rng, fpr, intervals, 0.02),
                        "fnr_ci": _ci(rng, 1 - tpr, intervals, 0.02),
                    }
                dgm = None if a is None else a - gmean
                dpop = None if a is None else a - auc
                gdict[g] = {
                    "n": gn,
                    "n_pos": 3 if a is None else n_pos // len(groups),
                    "auc": a,
                    "ci": _ci(rng, a, intervals),
                    "delta_vs_group_mean": dgm,
                    "delta_vs_group_mean_ci": _ci(rng, dgm, intervals),
                    "delta_vs_population": dpop,
                    "delta_vs_population_ci": _ci(rng, dpop, intervals),
                    "threshold": th,
                    "ece": None if a is None else rng.uniform(0.01, 0.06),
                    "note": "too few positives (3 < 10)" if a is None else None,
                }
            complete = len(present) == len(groups)
            best = max((g for g in groups if gaucs[g] is not None), key=lambda g: gaucs[g])
            worst = min((g for g in groups if gaucs[g] is not None), key=lambda g: gaucs[g])
            gap = max(present) - min(present) if complete else None
            tgaps = None
            if thresholds and complete:
                tgaps = {
                    k: max(gdict[g]["threshold"][k] for g in groups)
                    - min(gdict[g]["threshold"][k] for g in groups)
                    for k in ("tpr", "fpr", "fnr")
                }
                tgaps["equalized_odds"] = max(tgaps["tpr"], tgaps["fpr"])
            entry["attrs"][attr] = {
                "groups": gdict,
                "gap": gap,
                "gap_ci": _ci(rng, gap, intervals and complete, 0.01),
                "p_value": rng.uniform(0, 0.2) if complete and intervals else None,
                "q_value": rng.uniform(0.1, 0.4) if complete and intervals else None,
                "best_group": best if complete else None,
                "worst_group": worst if complete else None,
                "balanced": {"n_per_group": 1200, "n_pos_per_group": 300, "draws": 1, "balance_sd": None}
                if balanced
                else None,
                "threshold_gaps": tgaps,
            }
        out_labels[lab] = entry

    summary_attrs = {}
    for attr, groups in attrs.items():
        used = [
            lab for lab in labels if all(out_labels[lab]["attrs"][attr]["groups"][g]["auc"] for g in groups)
        ]
        left = [lab for lab in labels if lab not in used]
        gm = {g: _mean([out_labels[lab]["attrs"][attr]["groups"][g]["auc"] for lab in used]) for g in groups}
        pop = _mean([out_labels[lab]["auc"] for lab in used])
        mean_of_groups = _mean(list(gm.values()))
        gaps = {lab: out_labels[lab]["attrs"][attr]["gap"] for lab in used}
        max_lab = max(gaps, key=gaps.get)
        best, worst = max(gm, key=gm.get), min(gm, key=gm.get)
        gap = gm[best] - gm[worst]
        dgm = {g: gm[g] - mean_of_groups for g in groups}
        dpop = {g: gm[g] - pop for g in groups}
        summary_attrs[attr] = {
            "groups": list(groups),
            "group_mean_auc": gm,
            "group_mean_auc_ci": {g: _ci(rng, gm[g], intervals, 0.005) for g in groups}
            if intervals
            else None,
            "gap": gap,
            "gap_ci": _ci(rng, gap, intervals, 0.004),
            "gap_adjusted": max(0.0, gap - 0.002),
            "gap_adjusted_ci": [max(0.0, gap - 0.006), gap + 0.006] if intervals else None,
            "p_value": 1 / 1001 if attr == "race" else 0.0428,
            "p_value_holm": 2 / 1001 if attr == "race" else 0.0428,
            "best_group": best,
            "worst_group": worst,
            "worst_group_auc": gm[worst],
            "worst_group_auc_ci": [gm[worst] - 0.008, gm[worst] + 0.006] if intervals else None,
            "pairwise": [
                {"a": a, "b": b, "diff": gm[a] - gm[b], "ci": _ci(rng, gm[a] - gm[b], intervals, 0.006)}
                for i, a in enumerate(groups)
                for b in groups[i + 1 :]
            ],
            "delta_vs_group_mean": dgm,
            "delta_vs_group_mean_ci": {g: _ci(rng, dgm[g], intervals, 0.003) for g in groups}
            if intervals
            else None,
            "delta_vs_population": dpop,
            "delta_vs_population_ci": {g: _ci(rng, dpop[g], intervals, 0.003) for g in groups}
            if intervals
            else None,
            "labels_used": used,
            "labels_left_out": left,
            "mean_label_gap": _mean(list(gaps.values())),
            "mean_label_gap_ci": _ci(rng, _mean(list(gaps.values())), intervals, 0.004),
            "max_label_gap": gaps[max_lab],
            "max_label_gap_label": max_lab,
            "patients_varying": 0,
            "balance_sd": None,
            "equalized_odds": 0.03 if thresholds else None,
        }
    mean_auc = _mean([out_labels[lab]["auc"] for lab in labels])
    notes = ["1 label-subgroup pair has too few positives for a stable AUC"] if missing else []
    if balanced:
        notes.append("AUCs computed on balanced test sets (--balanced-test)")
    max_gap = 0.05
    race_gap = summary_attrs.get("race", {}).get("gap", 0.0)
    return {
        "schema": "fairscan.audit/2",
        "fairscan_version": "0.1.0",
        "model": model,
        "source": f"runs/{model}/predictions.parquet",
        "provenance": {"stage": "predict", "run": f"runs/{model}", "fairscan_version": "0.1.0"},
        "units": "fraction",
        "settings": {
            "attrs": list(attrs),
            "labels": labels,
            "n_boot": 1000 if intervals else 0,
            "ci_level": 0.95,
            "resample": "patient",
            "seed": seed,
            "balanced_test": balanced,
            "balanced_draws": 1,
            "min_pos": 10,
            "min_neg": 10,
            "interval_method": "bootstrap" if intervals else "none",
        },
        "notes": notes,
        "n_images": n_img,
        "n_patients": n_pat,
        "labels": out_labels,
        "summary": {
            "mean_auc": mean_auc,
            "mean_auc_ci": _ci(rng, mean_auc, intervals, 0.004),
            "labels": labels,
            "attrs": summary_attrs,
        },
        "thresholds": (
            {
                "source": "val.parquet",
                "target_fpr": 0.2,
                "values": {lab: rng.uniform(0.05, 0.6) for lab in labels},
            }
            if thresholds
            else None
        ),
        "gate": (
            {
                "max_gap": max_gap,
                "min_auc": None,
                "passed": race_gap <= max_gap,
                "reasons": [] if race_gap <= max_gap else [f"race gap {race_gap:.4f} > {max_gap}"],
            }
            if gate
            else None
        ),
    }


def delong_style(d: dict) -> dict:
    """What DeLong intervals give: single AUCs keep theirs; gaps, deltas and means have none (``*_ci`` null).

    Also names the setting ``intervals`` instead of ``interval_method``, as the audit code does."""

    def walk(x):
        if isinstance(x, dict):
            return {
                k: None if k.endswith("_ci") and k[:3] not in ("tpr", "fpr", "fnr") else walk(v)
                for k, v in x.items()
            }
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    out = walk(d)
    settings = out["settings"]
    settings.pop("interval_method")
    settings["intervals"] = "delong"
    return out


def make_comparison(names: tuple[str, ...] = ("mae", "moco_v3", "bit"), *, intervals: bool = True) -> dict:
    """A comparison (``fairscan.comparison/2``) of audits; the first model is the reference."""
    models = {name: make_audit(model=name, seed=i + 1, intervals=intervals) for i, name in enumerate(names)}
    ref = names[0]
    attrs = list(ATTRS)
    consts = {a: max(m["summary"]["attrs"][a]["gap"] for m in models.values()) + 0.01 for a in attrs}
    rows = []
    paired = {}
    for i, (name, m) in enumerate(models.items()):
        s = m["summary"]
        gaps = {a: s["attrs"][a]["gap"] for a in attrs}
        rows.append(
            {
                "model": name,
                "mean_auc": s["mean_auc"],
                "gap": gaps,
                "fs": {a: consts[a] - gaps[a] for a in attrs},
            }
        )
        if name == ref:
            continue
        d_auc = s["mean_auc"] - models[ref]["summary"]["mean_auc"]
        d_gap = {a: gaps[a] - models[ref]["summary"]["attrs"][a]["gap"] for a in attrs}
        # the second model's intervals are tight (exclude 0), the others' wide (include 0)
        w = 0.0005 if i == 1 else 0.5
        paired[name] = {
            "mean_auc_diff": d_auc,
            "mean_auc_diff_ci": [d_auc - w * abs(d_auc), d_auc + w * abs(d_auc)] if intervals else None,
            "gap_diff": d_gap,
            "gap_diff_ci": (
                {
                    a: [d_gap[a] - w * abs(d_gap[a]) - 0.001, d_gap[a] + w * abs(d_gap[a]) + 0.001]
                    for a in attrs
                }
                if intervals
                else None
            ),
            "mean_auc_diff_p": 0.001 if i == 1 else 0.6,
            "mean_auc_diff_p_holm": 0.004 if i == 1 else 1.0,
            "gap_diff_p": {a: 0.002 if i == 1 else 0.5 for a in attrs},
            "gap_diff_p_holm": {a: 0.008 if i == 1 else 1.0 for a in attrs},
            # the worst subgroup: its interval excludes 0 for the third model only (the marks differ by column)
            "worst_diff": {a: -d_gap[a] / 2 for a in attrs},
            "worst_diff_ci": (
                {a: [-d_gap[a] / 2 - (0.0004 if i == 2 else 0.5), -d_gap[a] / 2 + (0.0004 if i == 2 else 0.5)]
                 for a in attrs}
                if intervals
                else None
            ),  # fmt: skip
            "worst_diff_p": {a: 0.03 if i == 2 else 0.7 for a in attrs},
        }
    return {
        "schema": "fairscan.comparison/2",
        "fairscan_version": "0.1.0",
        "models": models,
        "comparison": {
            "reference": ref,
            "attrs": attrs,
            "rows": rows,
            "fs_constant": consts,
            "paired": paired,
        },
    }
