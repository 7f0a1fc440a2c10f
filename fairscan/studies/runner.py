"""Studies: a group of presets run end to end, reported as the paper's table beside ours.

``run_study("table2", seeds=3)`` plans every step the group needs (``fairscan.studies.plan``) -- preparing
datasets, pre-training, fine-tuning (``seeds`` times), predicting, ensembling -- and runs them in order. Steps are
resumable: a step
whose output is complete is not redone (a finished run's ``stage.json`` says ``complete`` with the same
settings; a predictions file records the weights it was made with), and an interrupted run continues from
its last checkpoint. Two presets that write the same run folder with the same settings share it (Table 5's
100% row is Table 2's CXPT run); with other settings, that is an error naming the differences.

The report (``study.json``, ``report.md``, ``report.html`` in the study folder, plus the full comparison audit
in ``audit/``) holds, per row, the paper's number, ours (mean +- sd over seeds, with the bootstrap interval
of the seed mean), and the difference; and for each comparison the paper draws (``model`` minus
``reference``, each a row or the mean of rows) the paired bootstrap interval: every model is audited on the
same patient-bootstrap replicates (``fairscan.compare``), so a difference's interval is computed replicate by
replicate. Numbers are fractions in ``study.json`` and AUC points in the reports, as in the audit.

Seed ``s > 0`` of a run writes to ``<out>-seed<s>``; seed 0 writes to the preset's own folder, so
``fairscan finetune --preset mae`` and ``fairscan study figure1`` share their first run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fairscan import __version__
from fairscan.config import StudySection
from fairscan.errors import InputError, RunError
from fairscan.studies.plan import Plan, Row, Runner, plan_study

STUDY_SCHEMA = "fairscan.study/1"
STUDY_FILES = {"json": "study.json", "markdown": "report.md", "html": "report.html"}
METRICS = ("mean_auc", "gap_sex", "gap_race")
METRIC_NAMES = {"mean_auc": "Mean AUC", "gap_sex": "FG sex", "gap_race": "FG race"}


def run_study(
    name: str,
    *,
    seeds: int = 1,
    quick: bool | None = None,
    overrides: list[str] | None = None,
    paths: dict[str, str] | None = None,
    out: str | os.PathLike | None = None,
    run_options: dict[str, Any] | None = None,
    console=None,
    debug: bool = False,
    progress=None,
) -> dict[str, Path]:
    """Run a study end to end (resumable) and write its report; returns the report's paths."""
    plan = plan_study(
        name, seeds=seeds, quick=quick, overrides=overrides, paths=paths, out=out, run_options=run_options
    )
    runner = Runner(console, debug=debug)
    journal = runner.run(plan)
    if not plan.rows:  # a pre-training preset alone: nothing to audit
        return {}
    runner.say(
        f"[bold]audit[/]: {sum(len(r.predictions) for r in plan.rows)} prediction file(s), paired bootstrap"
    )
    d = study_dict(plan, progress=progress)
    d["steps"] = journal
    return write_study(d, plan.out)


# ---------------------------------------------------------------------------------------------- analysis


def study_dict(plan: Plan, *, progress=None) -> dict[str, Any]:
    """Audit every row's predictions together (paired bootstrap) and lay the paper's numbers beside ours."""
    from fairscan.fairness.compare import compare, comparison_dict

    cfg = plan.study.audit_config()
    files, names, index = [], [], {}
    for r in plan.rows:
        for seed, path in r.predictions.items():
            index[(r.preset.name, seed)] = len(files)
            files.append(path)
            names.append(r.preset.name if len(plan.seeds) == 1 else f"{r.preset.name}@seed{seed}")
    if len(files) > 1:
        result = compare(files, config=cfg, names=names, progress=progress)
        audits, comparison = result.audits, result.to_dict()
    else:  # one model, one seed: its audit, laid out as a comparison of one
        from fairscan.fairness.audit import audit

        audits = [audit(files[0], config=cfg, name=names[0], progress=progress)]
        comparison = comparison_dict(audits, names[0], cfg)
    attrs = [a for a in cfg.attrs if a in ("sex", "race")]
    metrics = ["mean_auc", *[f"gap_{a}" for a in attrs]]
    section = plan.study.study if plan.study.stage == "study" else None
    show = list(section.show) if section else ["groups"]
    # a study that shows the worst subgroup compares it too (the mitigation study's headline)
    compared = metrics + ([f"worst_{a}" for a in attrs] if "worst" in show else [])
    seeds = _SeedTable(plan, audits, index, cfg)
    rows = [_study_row(r, metrics, seeds, plan, audits, index, attrs) for r in plan.rows]
    by_name = {row["preset"]: row for row in rows}
    comparisons = [_comparison(comp, compared, seeds, by_name) for comp in (section.comparisons if section else [])]
    checks = _checks(section, rows) if section else []
    representations = None
    if section is not None and section.representations is not None:
        from fairscan.studies.representations import representations_dict

        representations = representations_dict(plan, section.representations, rows)
    return {
        "schema": STUDY_SCHEMA,
        "fairscan_version": __version__,
        "study": plan.study.name,
        "title": plan.study.title,
        "table": section.table if section else plan.study.reproduces,
        "quick": plan.study.quick,
        "seeds": plan.seeds,
        "units": "fraction",
        "ci_level": cfg.ci_level,
        "metrics": metrics,
        "rows": rows,
        "comparisons": comparisons,
        "checks": checks,
        "show": show,
        "assumptions": _assumptions(plan),
        "claims": list(plan.study.expected.claims) if plan.study.expected else [],
        "settings": comparison["models"][names[0]]["settings"],
        "notes": sorted({n for a in comparison["models"].values() for n in a.get("notes", [])}),
        "members": {row["preset"]: [names[index[(row["preset"], s)]] for s in plan.seeds] for row in rows},
        "comparison": comparison,
        "representations": representations,
    }


class _SeedTable:
    """Each row's metric per seed: point estimates, bootstrap replicates and what they are centred on."""

    def __init__(self, plan: Plan, audits, index, cfg):
        self.seeds, self.audits, self.index, self.cfg = plan.seeds, audits, index, cfg

    def of(self, name: str, m: str, seed: int):
        """(point, replicates, centre) of metric ``m`` (``mean_auc``, ``gap_<attr>`` or ``worst_<attr>``) for one
        run."""
        from fairscan.fairness.compare import metric

        key = m if m == "mean_auc" else m.replace("_", ":", 1)
        return metric(self.audits[self.index[(name, seed)]], key)

    def side(self, group: list[str], m: str, seed: int):
        """The mean over the rows of ``group`` at one seed: (point, replicates, centre), None where missing."""
        import numpy as np

        runs = [self.of(n, m, seed) for n in group]
        point = None if any(p is None for p, _, _ in runs) else float(np.mean([p for p, _, _ in runs]))
        reps = None if any(r is None for _, r, _ in runs) else np.mean([r for _, r, _ in runs], axis=0)
        centre = None if any(c is None for _, _, c in runs) else float(np.mean([c for _, _, c in runs]))
        return point, reps, centre

    def mean_over_seeds(self, group: list[str], m: str):
        """The seed mean: (per-seed points, replicates of the seed mean, its centre)."""
        import numpy as np

        sides = [self.side(group, m, s) for s in self.seeds]
        reps = None if any(r is None for _, r, _ in sides) else np.mean([r for _, r, _ in sides], axis=0)
        centre = None if any(c is None for _, _, c in sides) else float(np.mean([c for _, _, c in sides]))
        return [p for p, _, _ in sides], reps, centre


def _study_row(r: Row, metrics, seeds: _SeedTable, plan: Plan, audits, index, attrs) -> dict[str, Any]:
    import numpy as np

    from fairscan.fairness import stats

    entry: dict[str, Any] = {"preset": r.preset.name, "label": r.label, "title": r.preset.title, "metrics": {}}
    expected = r.expected.metrics() if r.expected is not None else {}
    for m in metrics:
        values, reps, centre = seeds.mean_over_seeds([r.preset.name], m)
        known = [v for v in values if v is not None]
        mean = float(np.mean(known)) if len(known) == len(values) and known else None
        sd = float(np.std(known, ddof=1)) if len(known) > 1 and mean is not None else None
        ci = stats.interval(mean, reps, centre, seeds.cfg.ci_level, min_count=stats.boot_min_count(seeds.cfg.n_boot))
        paper = expected.get(m)
        paper = None if paper is None else paper / 100.0
        entry["metrics"][m] = {
            "values": values, "mean": mean, "sd": sd, "ci": ci, "paper": paper,
            "diff": None if paper is None or mean is None else mean - paper,
        }  # fmt: skip
    entry["expected_source"] = r.expected.source if r.expected is not None else None
    entry["claims"] = list(r.expected.claims) if r.expected is not None else []
    entry["groups"] = _groups(r, plan.seeds, audits, index, attrs)
    entry["worst"] = _worst(r, seeds, attrs)
    entry["labels"] = _labels(r, plan.seeds, audits, index, attrs)
    return entry


def _comparison(comp, metrics, seeds: _SeedTable, by_name: dict) -> dict[str, Any]:
    """One comparison the paper draws (model minus reference, each a row or the mean of rows), paired by seed:
    the seed mean of the per-seed differences, with the between-seed variance in its interval and p-value."""
    import numpy as np

    from fairscan.fairness import stats

    out: dict[str, Any] = {
        "name": comp.name, "model": comp.model, "reference": comp.reference, "paper_says": comp.paper,
        "metrics": {},
    }  # fmt: skip
    for m in metrics:
        values, devs = _seed_differences(comp, m, seeds)
        test = stats.seed_difference(values, devs, seeds.cfg.ci_level, min_count=stats.boot_min_count(seeds.cfg.n_boot))
        paper = [[by_name[n]["metrics"].get(m, {}).get("paper") for n in group] for group in (comp.model, comp.reference)]
        known = all(p is not None for side in paper for p in side)
        expect = comp.expect.get(m)
        out["metrics"][m] = {
            "diff": test["diff"], "ci": test["ci"], "p_value": test["p_value"], "method": test["method"],
            "seed_sd": test["seed_sd"],
            "paper_diff": float(np.mean(paper[0]) - np.mean(paper[1])) if known else None,
            "expect": expect, "agrees": _agrees(test["diff"], expect),
            "significant": test["p_value"] is not None and test["p_value"] <= 1 - seeds.cfg.ci_level + 1e-12,
        }  # fmt: skip
    return out


def _seed_differences(comp, m: str, seeds: _SeedTable) -> tuple[list, list]:
    """Per seed: the comparison's difference (bias-corrected for gaps) and its replicates' deviations."""
    from fairscan.fairness.compare import difference

    values, devs = [], []
    for s in seeds.seeds:
        (pa, ra, ca), (pb, rb, cb) = (seeds.side(group, m, s) for group in (comp.model, comp.reference))
        value, dev = None, None
        if pa is not None and pb is not None:
            reps = ra - rb if ra is not None and rb is not None else None
            value, dev = difference(m, pa - pb, reps, None if ca is None or cb is None else ca - cb)
        values.append(value)
        devs.append(dev)
    return values, devs


def _agrees(value: float | None, expect: str | None) -> bool | None:
    """Whether a difference points the way the paper says (a zero difference points nowhere)."""
    if value is None or expect is None:
        return None
    return value > 0 if expect == "higher" else value < 0


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else float(sum(values) / len(values))


def _groups(r: Row, seeds, audits, index, attrs) -> dict[str, dict[str, Any]]:
    """Fig. 3: each subgroup's mean AUC over labels, and its delta from the mean over subgroups (seed means)."""
    out: dict[str, dict[str, Any]] = {}
    for attr in attrs:
        per_seed = [audits[index[(r.preset.name, s)]].summary["attrs"].get(attr) or {} for s in seeds]
        groups = list(per_seed[0].get("groups") or [])
        out[attr] = {
            g: {
                "mean_auc": _mean([(p.get("group_mean_auc") or {}).get(g) for p in per_seed]),
                "delta_vs_group_mean": _mean([(p.get("delta_vs_group_mean") or {}).get(g) for p in per_seed]),
                "delta_vs_population": _mean([(p.get("delta_vs_population") or {}).get(g) for p in per_seed]),
            }
            for g in groups
        }
    return out


def _worst(r: Row, seeds: _SeedTable, attrs) -> dict[str, dict[str, Any]]:
    """Each attribute's worst subgroup: its mean AUC (seed mean, sd over seeds) with, for one seed, the audit's
    own interval (a simultaneous band over the subgroups, ``fairscan.fairness.stats.worst_group``) and, for
    several, the bootstrap interval of the seed mean (the test set's error, as the other metrics' intervals)."""
    import numpy as np

    from fairscan.fairness import stats

    out: dict[str, dict[str, Any]] = {}
    for attr in attrs:
        per_seed = [seeds.audits[seeds.index[(r.preset.name, s)]].summary["attrs"].get(attr) or {} for s in seeds.seeds]
        values = [p.get("worst_group_auc") for p in per_seed]
        known = None not in values
        mean = float(np.mean(values)) if known else None
        if len(seeds.seeds) == 1:
            ci = per_seed[0].get("worst_group_auc_ci")
        else:
            _, reps, centre = seeds.mean_over_seeds([r.preset.name], f"worst_{attr}")
            ci = stats.interval(mean, reps, centre, seeds.cfg.ci_level, min_count=stats.boot_min_count(seeds.cfg.n_boot))
        out[attr] = {
            "groups": [p.get("worst_group") for p in per_seed], "values": values, "mean": mean,
            "sd": float(np.std(values, ddof=1)) if known and len(values) > 1 else None, "ci": ci,
        }  # fmt: skip
    return out


def _labels(r: Row, seeds, audits, index, attrs) -> dict[str, dict[str, dict[str, Any]]]:
    """Figs. 5 and 6: per label, each subgroup's AUC minus the whole population's (seed means)."""
    dicts = [audits[index[(r.preset.name, s)]].to_dict() for s in seeds]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for label in dicts[0]["labels"]:
        out[label] = {}
        for attr in attrs:
            groups = (dicts[0]["labels"][label]["attrs"].get(attr) or {}).get("groups") or {}
            out[label][attr] = {
                g: _mean(
                    [d["labels"][label]["attrs"][attr]["groups"][g]["delta_vs_population"] for d in dicts]
                )
                for g in groups
            }
    return out


def _checks(section: StudySection, rows: list[dict]) -> list[dict[str, Any]]:
    out = []
    for check in section.checks:
        names = check.rows or [r["preset"] for r in rows]
        results = {}
        for row in rows:
            if row["preset"] not in names:
                continue
            if check.label is None:
                value = ((row["groups"].get(check.attr) or {}).get(check.group) or {}).get(
                    "delta_vs_group_mean"
                )
            else:
                value = ((row["labels"].get(check.label) or {}).get(check.attr) or {}).get(check.group)
            results[row["preset"]] = {
                "value": value,
                "agrees": _agrees(value, check.expect),
            }
        known = [v["agrees"] for v in results.values() if v["agrees"] is not None]
        out.append(
            {
                "attr": check.attr, "group": check.group, "label": check.label, "expect": check.expect,
                "paper": check.paper, "rows": results, "agree": sum(known), "of": len(known),
            }
        )  # fmt: skip
    return out


def _assumptions(plan: Plan) -> list[str]:
    seen: list[str] = []
    for text in [*plan.study.assumptions, *(a for r in plan.rows for a in r.preset.assumptions)]:
        if text not in seen:
            seen.append(text)
    return seen


# ---------------------------------------------------------------------------------------------- writing


def write_study(d: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``study.json``, ``report.md`` and ``report.html`` in ``out_dir``, and the full audit in ``out_dir/audit``."""
    from fairscan.io import write_json, write_text
    from fairscan.report import write_report
    from fairscan.studies.report import study_html, study_markdown

    out = Path(out_dir)
    markdown, html = study_markdown(d), study_html(d)
    audit_paths = write_report(d["comparison"], out / "audit")
    paths = {key: out / name for key, name in STUDY_FILES.items()}
    write_json(paths["json"], d)
    write_text(paths["markdown"], markdown)
    write_text(paths["html"], html)
    return {**paths, "audit_html": audit_paths["html"]}


def load_study(path: str | os.PathLike) -> dict[str, Any]:
    """A written ``study.json`` (or the folder holding it)."""
    p = Path(path)
    p = p / STUDY_FILES["json"] if p.is_dir() else p
    if not p.exists():
        raise InputError(f"{p}: no study report here", hint="run `fairscan study NAME` first")
    d = json.loads(p.read_text())
    if d.get("schema") != STUDY_SCHEMA:
        raise RunError(f"{p}: not a study report (schema {d.get('schema')!r})")
    return d
