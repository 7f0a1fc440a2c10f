"""Where the bias lives, row by row (``fairscan study representations``): each fine-tuned row's test features
probed for the protected attributes and inspected (PCA modes, KS tests), in one table beside the audit's FG.

The features are the input of each run's classifier head (``fairscan embed``), made by the study's ``embed``
steps; with ``frozen: true`` each fine-tuned row is followed by its foundation model used frozen (``fairscan embed
--model``: the fine-tuning's model and pre-trained weights, its recipe's pooling), which has no FG. Each row reads
its first seed's run; an ensemble row has no features of its own and is listed without
them. Probe and inspection settings come from the study's ``representations:`` section; the probe's p-value is
its permutation test, the inspection's significant tests are those whose p-value corrected over the row's
whole table is below 0.05.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairscan.studies.plan import Step, features_path, predictions_state, with_run_options

REPRESENTATIONS_ALPHA = 0.05


# ---------------------------------------------------------------------------------------------- planning


def plan_features(planner, preset, seed: int, batch_size: int | None) -> Path:
    """The step embedding the test split with one seed's run (its head's input); done when the file
    records the run's current weights, as a predictions file does."""
    key, _ = planner.finetune(preset, seed)
    cfg = planner.run_config(preset, seed)
    out = Path(cfg.out)
    path = features_path(out)
    planner.add(
        Step(
            kind="embed",
            key=f"embed:{path.resolve()}",
            title=f"embed test with {preset.display_name} (seed {seed})",
            command=f"fairscan embed {out} --manifest {cfg.manifest} --split test -o {path}",
            out=path,
            action=lambda runner, cfg=cfg, path=path: runner.embed(cfg, path, batch_size),
            check=lambda path=path, out=out: predictions_state(path, out),
            deps=[key],
        )
    )
    return path


def plan_frozen(planner, preset, batch_size: int | None) -> Path:
    """The step embedding the test split with the row's foundation model used frozen: the fine-tuning's
    model, weights (or random init), architecture and image size; the pooling of the model's recipe."""
    from fairscan.representations.embed import EmbedConfig

    cfg = with_run_options(preset.finetune_config(), planner.run_options)
    path = Path(preset.paths.runs) / "frozen" / preset.name / "test.parquet"
    ecfg = EmbedConfig(
        model=cfg.model, weights=cfg.weights, init=cfg.init, arch=cfg.arch, image_size=cfg.image_size,
        manifest=cfg.manifest, out=str(path), split="test", batch_size=batch_size, **cfg.execution(),
    )  # fmt: skip
    deps = [d for d in [planner.dataset_for(preset, cfg.manifest)] if d]
    if preset.pretrained_from:
        deps.append(planner.pretrain(planner.load(preset.pretrained_from)))
    planner._same_output(path, ecfg.model_dump(mode="json"), preset)
    planner.add(
        Step(
            kind="embed",
            key=f"embed:{path.resolve()}",
            title=f"embed test with {preset.display_name}'s model, frozen",
            command=f"fairscan embed --model {cfg.model}"
            + (f" --weights {cfg.weights}" if cfg.weights else "")
            + (" --init random" if cfg.init == "random" else "")
            + (f" --arch {cfg.arch}" if cfg.arch else "")
            + (f" --image-size {cfg.image_size}" if cfg.image_size else "")
            + f" --manifest {cfg.manifest} --split test -o {path}",
            out=path,
            action=lambda runner, ecfg=ecfg: runner.embed_frozen(ecfg),
            check=lambda path=path, ecfg=ecfg: _frozen_state(path, ecfg),
            deps=deps,
        )
    )
    return path


def _frozen_state(path: Path, cfg) -> str:
    """Done when the file records these settings and is newer than the weights it was made from."""
    if not path.exists():
        return "todo"
    from fairscan.io import parquet_metadata

    same = parquet_metadata(path).get("settings") == cfg.model_dump(mode="json")
    weights = Path(cfg.weights) if cfg.weights else None
    newer = weights is None or not weights.exists() or path.stat().st_mtime >= weights.stat().st_mtime
    return "done" if same and newer else "todo"


# ---------------------------------------------------------------------------------------------- analysis


def representations_dict(plan, spec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row's probe and inspection summary, beside its FG (the study rows' seed means)."""
    seed = plan.seeds[0]
    out_rows = []
    correction = None
    for r, row in zip(plan.rows, rows, strict=True):
        gaps = {
            a: row["metrics"][f"gap_{a}"]["mean"] for a in ("sex", "race") if f"gap_{a}" in row["metrics"]
        }
        entry = {"preset": r.preset.name, "label": row["label"], "frozen": False, "gaps": gaps}
        out_rows.append({**entry, **_analyse(r.features.get(seed), spec)})
        if r.frozen is not None:
            frozen = {
                "preset": r.preset.name,
                "label": f"{row['label']} (frozen)",
                "frozen": True,
                "gaps": {},
            }
            out_rows.append({**frozen, **_analyse(r.frozen, spec)})
        correction = correction or out_rows[-1]["correction"]
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


def _analyse(path, spec) -> dict[str, Any]:
    """The probe and inspection summary of one features file (None without one: an ensemble row)."""
    if path is None:
        return {"features": None, "probe": None, "inspect": None, "ks_tests": None, "correction": None}
    from fairscan.representations.inspect import inspect
    from fairscan.representations.probe import probe

    grid = {"grid": spec.grid} if spec.grid else {}
    probed = probe(str(path), spec.targets, folds=spec.folds, permutations=spec.permutations, seed=0, **grid)
    inspected = inspect(str(path), spec.attrs, label=spec.label, pca=spec.pca)
    return {
        "features": str(path),
        "probe": {
            p.target: {
                "auc_macro": p.auc_macro,
                "balanced_accuracy": p.balanced_accuracy,
                "chance": p.chance,
                "p_value": p.p_value,
            }
            for p in probed.probes
        },  # fmt: skip
        "inspect": _ks_summary(inspected),
        "ks_tests": [t.to_dict() for t in inspected.tests],
        "correction": inspected.correction,
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


def representations_sections(d: dict[str, Any]) -> list:
    """The report's table (FG, the probe's macro AUC (p) per target, the KS tests significant per attribute)
    and, with ``show: [ks]``, each row's KS table."""
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
    out = [
        Section(
            key="representations",
            title="Where the bias lives: probes and KS tests of each model's features",
            columns=columns,
            rows=rows,
            note=f"FG: AUC points, as above. Probe: logistic probe of the test features (the input of each model's "
            f"head) in patient-grouped cross-validation, macro one-vs-rest AUC as a fraction (0.5 = chance), p from "
            f"{rep['permutations']} permutations. KS: Glocker et al.'s tests on the first {rep['modes']} PCA modes, "
            f"significant: p corrected over the row's table ({rep['correction']}) below {rep['alpha']:g}. "
            f"Seed {rep['seed']}'s runs; (frozen): the row's foundation model used frozen, its recipe's pooling, no "
            "classifier (no FG); ensembles have no features of their own.",
            numeric=[False] + [True] * (len(columns) - 1),
        )
    ]
    if "ks" in d.get("show", []):
        for r in rep["rows"]:
            if r["ks_tests"]:
                out.append(_ks_section(r, rep, Section))
    return out


def _ks_section(r: dict[str, Any], rep: dict[str, Any], section_type):
    from fairscan.representations.report import p_value_text

    rows = [
        [
            str(t["mode"]),
            t["attr"],
            f"{t['a']} vs {t['b']}",
            f"{t['ks']:.4f}",
            p_value_text(t["p"]),
            p_value_text(t["p_adjusted"]),
        ]
        for t in r["ks_tests"]
    ]
    return section_type(
        key="representations-ks",
        title=f"KS tests of {r['label']}'s features",
        columns=["Mode", "Attribute", "Subgroups", "KS", "p", "p adj."],
        rows=rows,
        note=f"Two-sample KS tests of each PCA mode's marginal distribution between subgroups; p adj.: corrected "
        f"over this table ({rep['correction']}).",
        numeric=[True, False, False, True, True, True],
    )


def _p(p: float | None) -> str:
    return "p —" if p is None else f"p {p:.3g}"
