"""Where the bias lives, row by row (``fairscan study representations``): each fine-tuned row's test features
probed for the protected attributes and inspected (PCA modes, KS tests), in one table beside the audit's FG.

The features are the input of each run's classifier head (``fairscan embed``), made by the study's ``embed``
steps. Each row reads its first seed's run; an ensemble row has no features of its own and is listed without
them. Probe and inspection settings come from the study's ``representations:`` section; the probe's p-value is
its permutation test, the inspection's significant tests are those whose p-value corrected over the row's
whole table is below 0.05.
"""

from __future__ import annotations

from typing import Any

REPRESENTATIONS_ALPHA = 0.05


def representations_dict(plan, spec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row's probe and inspection summary, beside its FG (the study rows' seed means)."""
    from fairscan.representations.inspect import inspect
    from fairscan.representations.probe import probe

    seed = plan.seeds[0]
    out_rows = []
    correction = None
    for r, row in zip(plan.rows, rows, strict=True):
        entry: dict[str, Any] = {
            "preset": r.preset.name,
            "label": row["label"],
            "gaps": {
                a: row["metrics"][f"gap_{a}"]["mean"] for a in ("sex", "race") if f"gap_{a}" in row["metrics"]
            },
            "features": None,
            "probe": None,
            "inspect": None,
        }
        path = r.features.get(seed)
        if path is not None:
            probed = probe(str(path), spec.targets, folds=spec.folds, permutations=spec.permutations, seed=0)
            inspected = inspect(str(path), spec.attrs, label=spec.label, pca=spec.pca)
            correction = inspected.correction
            entry["features"] = str(path)
            entry["probe"] = {
                p.target: {"auc_macro": p.auc_macro, "balanced_accuracy": p.balanced_accuracy,
                           "chance": p.chance, "p_value": p.p_value}
                for p in probed.probes
            }  # fmt: skip
            entry["inspect"] = _ks_summary(inspected)
        out_rows.append(entry)
    return {
        "seed": seed,
        "targets": list(spec.targets),
        "attrs": list(spec.attrs) + (["label"] if spec.label else []),
        "permutations": spec.permutations,
        "modes": spec.pca,
        "correction": correction,
        "alpha": REPRESENTATIONS_ALPHA,
        "rows": out_rows,
    }


def _ks_summary(result) -> dict[str, dict[str, Any]]:
    """Per attribute: how many of its KS tests are significant after the correction, and the smallest p."""
    out: dict[str, dict[str, Any]] = {}
    for t in result.tests:
        d = out.setdefault(t.attr, {"tests": 0, "significant": 0, "min_p_adjusted": None})
        d["tests"] += 1
        if t.p_adjusted is not None:
            d["significant"] += int(t.p_adjusted < REPRESENTATIONS_ALPHA)
            low = d["min_p_adjusted"]
            d["min_p_adjusted"] = t.p_adjusted if low is None else min(low, t.p_adjusted)
    return out


def representations_section(d: dict[str, Any]):
    """The report's table: FG, the probe's macro AUC (p) per target, the KS tests significant per attribute."""
    from fairscan.report._format import MISSING as missing
    from fairscan.report._format import pts
    from fairscan.studies.report import Section

    rep = d["representations"]
    targets, attrs = rep["targets"], rep["attrs"]
    gaps = [a for a in ("sex", "race") if any(a in r["gaps"] for r in rep["rows"])]
    columns = ["Row", *[f"FG {a}" for a in gaps], *[f"Probe {t}: AUC (p)" for t in targets],
               *[f"KS {a}: significant" for a in attrs]]  # fmt: skip
    rows = []
    for r in rep["rows"]:
        cells = [r["label"], *[pts(r["gaps"].get(a)) for a in gaps]]
        for t in targets:
            p = (r["probe"] or {}).get(t)
            cells.append(missing if p is None else f"{p['auc_macro']:.3f} ({_p(p['p_value'])})")
        for a in attrs:
            k = (r["inspect"] or {}).get(a)
            cells.append(missing if k is None else f"{k['significant']} of {k['tests']}")
        rows.append(cells)
    return Section(
        title="Where the bias lives: probes and KS tests of each model's features",
        columns=columns,
        rows=rows,
        note=f"FG: AUC points, as above. Probe: logistic probe of the test features (the input of each model's "
        f"head) in patient-grouped cross-validation, macro one-vs-rest AUC as a fraction (0.5 = chance), p from "
        f"{rep['permutations']} permutations. KS: Glocker et al.'s tests on the first {rep['modes']} PCA modes, "
        f"significant: p corrected over the row's table ({rep['correction']}) below {rep['alpha']:g}. "
        f"Seed {rep['seed']}'s runs; ensembles have no features of their own.",
        numeric=[False] + [True] * (len(columns) - 1),
    )


def _p(p: float | None) -> str:
    return "p —" if p is None else f"p {p:.3g}"
