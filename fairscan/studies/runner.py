"""Studies: a group of presets run end to end, reported as the paper's table beside ours.

``run_study("table2", seeds=3)`` plans every step the group needs -- preparing datasets, pre-training,
fine-tuning (``seeds`` times), predicting, ensembling -- and runs them in order. Steps are resumable: a step
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairscan import __version__
from fairscan.config import (
    BalanceData,
    ChexpertData,
    MimicData,
    NihData,
    PoolData,
    Preset,
    StudyRow,
    StudySection,
    SyntheticData,
    load_preset,
)
from fairscan.errors import InputError, RunError

STUDY_SCHEMA = "fairscan.study/1"
STUDY_FILES = {"json": "study.json", "markdown": "report.md", "html": "report.html"}
METRICS = ("mean_auc", "gap_sex", "gap_race")
METRIC_NAMES = {"mean_auc": "Mean AUC", "gap_sex": "FG sex", "gap_race": "FG race"}
# Settings that change how a run is executed, not what it computes: they may differ between a finished run and
# the preset that asks for it again.
VOLATILE = {
    "workers", "cpu", "procs", "precision", "compile", "trackers", "save_every", "log_every", "cache",
    "use_cache", "channels_last",
}  # fmt: skip
RUN_CONFLICT = "{out} holds a {stage} run with other settings ({diffs})"


# ------------------------------------------------------------------------------------------------- steps


@dataclass
class Step:
    """One unit of work with an output on disk; ``state()`` says whether it is done, resumable or to do."""

    kind: str
    key: str
    title: str
    command: str
    out: Path
    action: Callable[[Any], None]
    check: Callable[[], str]  # "done", "resume" or "todo"
    deps: list[str] = field(default_factory=list)

    def state(self) -> str:
        return self.check()


@dataclass
class Row:
    """A row of the study's table: a finetune or ensemble preset, and its test predictions per seed."""

    preset: Preset
    label: str
    expected: Any
    predictions: dict[int, Path] = field(default_factory=dict)


@dataclass
class Plan:
    name: str
    study: Preset
    rows: list[Row]
    steps: list[Step]
    out: Path
    seeds: list[int]

    def describe(self) -> list[str]:
        return [f"{s.kind:<9} {s.command}" for s in self.steps]


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) if seed == 0 else Path(f"{out}-seed{seed}")


def predictions_path(run: str | Path, split: str = "test") -> Path:
    return Path(run) / "predictions" / f"{split}.parquet"


class _Planner:
    """Collects the steps of a group of presets, each once, in an order that respects their dependencies."""

    def __init__(
        self, *, quick: bool, paths: dict[str, str] | None, overrides, seeds: list[int], run_options
    ):
        self.quick = quick
        self.paths = paths
        self.overrides = overrides or []
        self.seeds = seeds
        self.run_options = run_options  # e.g. {"procs": 4, "cpu": False} from the command line
        self.steps: dict[str, Step] = {}
        self.settings: dict[str, tuple[dict, str]] = {}  # out folder -> (settings, preset) for conflicts

    def load(self, name: str) -> Preset:
        return load_preset(name, self.overrides, quick=self.quick, paths=self.paths, foreign_overrides=True)

    def add(self, step: Step) -> str:
        if step.key not in self.steps:
            self.steps[step.key] = step
        return step.key

    def _same_output(self, out: Path, settings: dict, preset: Preset) -> None:
        key = str(out.resolve())
        if key in self.settings and self.settings[key][0] != settings:
            other = self.settings[key][1]
            diffs = _diff(self.settings[key][0], settings)
            raise InputError(
                f"presets {other} and {preset.name} both write {out} with different settings ({diffs})",
                hint="give one of them another out folder (--set finetune.out=...)",
            )
        self.settings[key] = (settings, preset.name)

    # -- datasets ----------------------------------------------------------------------------------------

    def dataset_for(self, preset: Preset, manifest: str) -> str | None:
        """The step that makes ``manifest``, if it is one of the preset's named datasets under ``${data}``."""
        path = Path(manifest)
        if path.name == "manifest.parquet":
            path = path.parent
        if path.parent.resolve() != Path(preset.paths.data).resolve() or path.name not in preset.datasets:
            return None
        return self.dataset(preset, path.name)

    def dataset(self, preset: Preset, name: str, chain: tuple[str, ...] = ()) -> str:
        if name in chain:
            raise InputError(f"datasets {' -> '.join((*chain, name))} depend on each other in a cycle")
        if name not in preset.datasets:
            raise InputError(
                f"preset {preset.name}: no dataset {name!r}",
                hint=f"its datasets: {', '.join(preset.datasets)}",
            )
        spec = preset.datasets[name]
        data = Path(preset.paths.data)
        out = data / name
        deps: list[str] = []
        if isinstance(spec, PoolData):
            deps = [self.dataset(preset, s, (*chain, name)) for s in [*spec.sources, *spec.evaluation]]
        elif isinstance(spec, BalanceData):
            deps = [self.dataset(preset, spec.source, (*chain, name))]
        self._same_output(out, spec.model_dump(), preset)
        return self.add(
            Step(
                kind="data",
                key=f"data:{out.resolve()}",
                title=f"prepare {name} ({spec.kind})",
                command=_prepare_command(spec, out, data),
                out=out,
                action=lambda runner, spec=spec, out=out, data=data: _prepare(spec, out, data, runner),
                check=lambda out=out: "done" if (out / "manifest.parquet").exists() else "todo",
                deps=deps,
            )
        )

    # -- stages ------------------------------------------------------------------------------------------

    def pretrain(self, preset: Preset) -> str:
        cfg = _with_options(preset.pretrain, self.run_options)
        deps = [d for m in [*cfg.manifests, *cfg.evaluation] if (d := self.dataset_for(preset, m))]
        out = Path(cfg.out)
        return self._training_step(
            "pretrain", preset, cfg, out, deps,
            title=f"pre-train {preset.display_name} ({cfg.method}, {cfg.epochs} epoch(s))",
            command=f"fairscan pretrain --preset {preset.display_name}",
        )  # fmt: skip

    def _training_step(
        self, kind: str, preset: Preset, cfg, out: Path, deps: list[str], *, title, command
    ) -> str:
        """Add a pretrain or finetune step: done when ``out`` holds a finished run with the same settings."""
        settings = _comparable(cfg)
        self._same_output(out, settings, preset)
        return self.add(
            Step(
                kind=kind,
                key=f"{kind}:{out.resolve()}",
                title=title,
                command=command,
                out=out,
                action=lambda runner, cfg=cfg: getattr(runner, kind)(cfg),
                check=lambda: _run_state(out, settings, kind, _defaults(cfg)),
                deps=deps,
            )
        )

    def finetune(self, preset: Preset, seed: int) -> tuple[str, Path]:
        base = _with_options(preset.finetune_config(), self.run_options)
        out = seed_dir(base.out, seed)
        cfg = base.model_copy(update={"seed": seed, "out": str(out)})
        deps = [d for d in [self.dataset_for(preset, cfg.manifest)] if d]
        if preset.pretrained_from:
            deps.append(self.pretrain(self.load(preset.pretrained_from)))
        seed_note = f" --set finetune.seed={seed} --set finetune.out={out}" if seed else ""
        key = self._training_step(
            "finetune", preset, cfg, out, deps,
            title=f"fine-tune {preset.display_name} (seed {seed})",
            command=f"fairscan finetune --preset {preset.display_name}{seed_note}",
        )  # fmt: skip
        test = None
        for split in preset.predict.splits:
            path = predictions_path(out, split)
            self.add(
                Step(
                    kind="predict",
                    key=f"predict:{path.resolve()}",
                    title=f"predict {split} with {preset.display_name} (seed {seed})",
                    command=f"fairscan predict {out} --manifest {cfg.manifest} --split {split} -o {path}",
                    out=path,
                    action=lambda runner, cfg=cfg, split=split, path=path: runner.predict(cfg, split, path),
                    check=lambda path=path, out=out: _predictions_state(path, out),
                    deps=[key],
                )
            )
            if split == "test":
                test = path
        if test is None:
            raise InputError(f"preset {preset.name}: predict.splits must include test for a study")
        return key, test

    def ensemble(self, preset: Preset, seed: int) -> Path:
        ens = preset.ensemble
        members = []
        deps = []
        for name in ens.members:
            member = self.load(name)
            if member.stage != "finetune":
                raise InputError(f"preset {preset.name}: ensemble member {name!r} is a {member.stage} preset")
            _, path = self.finetune(member, seed)
            deps.append(f"predict:{path.resolve()}")
            members.append(path)
        out = predictions_path(seed_dir(ens.out, seed))
        self._same_output(out, {"members": [str(m) for m in members], "method": ens.method}, preset)
        self.add(
            Step(
                kind="ensemble",
                key=f"ensemble:{out.resolve()}",
                title=f"ensemble {preset.display_name} (seed {seed}): {' + '.join(ens.members)}",
                command=f"fairscan ensemble {' '.join(map(str, members))} --method {ens.method} -o {out}",
                out=out,
                action=lambda runner, ens=ens, members=members, out=out: runner.ensemble(ens, members, out),
                check=lambda out=out, members=members: _ensemble_state(out, members),
                deps=deps,
            )
        )
        return out


def plan_study(
    name: str,
    *,
    seeds: int = 1,
    quick: bool | None = None,
    overrides: list[str] | None = None,
    paths: dict[str, str] | None = None,
    out: str | os.PathLike | None = None,
    run_options: dict[str, Any] | None = None,
) -> Plan:
    """Every step ``fairscan study NAME`` takes, without running any.

    ``name`` is a study preset, or any finetune, ensemble or pretrain preset (a study of one row).
    ``overrides`` (``--set``) apply to the study preset and to every preset it refers to.
    """
    if seeds < 1:
        raise InputError(f"--seeds {seeds}: give at least 1")
    study = load_preset(name, overrides, quick=quick, paths=paths, foreign_overrides=True)
    paths = study.paths.model_dump()
    planner = _Planner(
        quick=study.quick,
        paths=paths,
        overrides=overrides,
        seeds=list(range(seeds)),
        run_options=run_options or {},
    )
    rows: list[Row] = []
    if study.stage == "study":
        section = study.study
    elif study.stage in ("finetune", "ensemble", "pretrain"):
        section = StudySection(table=study.reproduces, rows=[StudyRow(preset=study.name)])
    else:
        raise InputError(
            f"preset {study.name} is an audit preset: it has nothing to run",
            hint="use it with `fairscan audit --preset`; studies run study, finetune, ensemble or pretrain presets",
        )
    for entry in section.rows:
        preset = study if entry.preset == study.name else planner.load(entry.preset)
        if preset.stage == "pretrain":
            planner.pretrain(preset)
            continue
        row = Row(preset=preset, label=entry.label or preset.name, expected=entry.expected or preset.expected)
        for seed in planner.seeds:
            if preset.stage == "finetune":
                _, path = planner.finetune(preset, seed)
            elif preset.stage == "ensemble":
                path = planner.ensemble(preset, seed)
            else:
                raise InputError(
                    f"study {study.name}: row {entry.preset!r} is a {preset.stage} preset",
                    hint="rows are finetune or ensemble presets",
                )
            row.predictions[seed] = path
        rows.append(row)
    names = [r.preset.name for r in rows]
    for comp in section.comparisons:
        for n in [*comp.model, *comp.reference]:
            if n not in names:
                raise InputError(
                    f"study {study.name}: comparison {comp.name!r} names {n!r}, not a row of the study"
                )
    out_dir = Path(out) if out is not None else Path(study.paths.studies) / study.name
    return Plan(
        name=study.name,
        study=study,
        rows=rows,
        steps=_ordered(planner.steps),
        out=out_dir,
        seeds=planner.seeds,
    )


def _ordered(steps: dict[str, Step]) -> list[Step]:
    """Dependencies first, otherwise in the order the steps were planned."""
    done: set[str] = set()
    out: list[Step] = []

    def visit(key: str) -> None:
        if key in done:
            return
        done.add(key)
        for dep in steps[key].deps:
            if dep in steps:
                visit(dep)
        out.append(steps[key])

    for key in steps:
        visit(key)
    return out


# ----------------------------------------------------------------------------------------- step states


def _with_options(cfg, options: dict[str, Any]):
    keep = {k: v for k, v in options.items() if k in type(cfg).model_fields and v is not None}
    return cfg.model_copy(update=keep) if keep else cfg


def _defaults(cfg) -> dict[str, Any]:
    """Each setting's default, as JSON would hold it."""
    from pydantic_core import PydanticUndefined

    fields = type(cfg).model_fields.items()
    return json.loads(json.dumps({k: f.default for k, f in fields if f.default is not PydanticUndefined}))


def _comparable(cfg) -> dict[str, Any]:
    """A run's settings as they decide its result (resolved defaults; execution details left out)."""
    resolved = cfg.resolve().model_dump(mode="json")
    return {k: v for k, v in resolved.items() if k not in VOLATILE}


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4])
    return shown + (f", +{len(keys) - 4} more" if len(keys) > 4 else "")


def _run_state(
    out: Path, settings: dict[str, Any], stage: str, defaults: dict[str, Any] | None = None
) -> str:
    record = out / "stage.json"
    if not record.exists():
        return "resume" if (out / "state").exists() else "todo"
    saved = json.loads(record.read_text())
    old = {k: v for k, v in (saved.get("settings") or {}).items() if k not in VOLATILE}
    old = json.loads(json.dumps(old))  # tuples -> lists, as settings are
    # A setting newer than the run (absent from its record) that is at its default changes nothing.
    settings = {k: v for k, v in settings.items() if k in old or v != (defaults or {}).get(k, object())}
    if old != settings:
        raise InputError(
            RUN_CONFLICT.format(out=out, stage=stage, diffs=_diff(old, settings)),
            hint="delete the folder to redo it, or point this study elsewhere (--set paths.runs=...)",
        )
    if saved.get("status") == "complete":
        return "done"
    return "resume" if (out / "state").exists() else "todo"


def _predictions_state(path: Path, run: Path) -> str:
    if not path.exists():
        return "todo"
    from fairscan.schema import _read_provenance

    record = run / "stage.json"
    if not record.exists():
        return "todo"
    want = ((json.loads(record.read_text()).get("outputs") or {}).get("model") or {}).get("sha256")
    have = _read_provenance(path).get("weights_sha256")
    return "done" if want and want == have else "todo"


def _ensemble_state(out: Path, members: list[Path]) -> str:
    if not out.exists():
        return "todo"
    from fairscan.schema import _read_provenance

    sources = [m.get("source") for m in _read_provenance(out).get("members", [])]
    newest = max((m.stat().st_mtime for m in members if m.exists()), default=0.0)
    same = [str(Path(s).resolve()) for s in sources] == [str(m.resolve()) for m in members]
    return "done" if same and out.stat().st_mtime >= newest else "todo"


# --------------------------------------------------------------------------------------------- datasets


def _prepare_command(spec, out: Path, data: Path) -> str:
    if isinstance(spec, ChexpertData):
        return (
            f'fairscan prepare chexpert {spec.root} -d "{spec.demographics}" --split {spec.split} '
            f"--labels {spec.label_policy} --blank {spec.blank}{' --all-races' if spec.all_races else ''} --out {out}"
        )
    if isinstance(spec, NihData):
        return f"fairscan prepare nih {spec.root} --split {spec.split} --out {out}"
    if isinstance(spec, MimicData):
        iv = f" --mimic-iv {spec.mimic_iv}" if spec.mimic_iv else ""
        races = " --all-races" if spec.all_races else ""
        return f"fairscan prepare mimic {spec.root}{iv} --split {spec.split}{races} --out {out}"
    if isinstance(spec, SyntheticData):
        n = f" --patients {spec.patients}" if spec.patients else ""
        return (
            f"fairscan prepare synthetic --layout {spec.layout}{n} --profile {spec.profile} "
            f"--image-size {spec.image_size} --seed {spec.seed} --out {out}"
        )
    if isinstance(spec, PoolData):
        sources = " ".join(str(data / s) for s in spec.sources)
        splits = f" --splits {','.join(spec.splits)}" if spec.splits else ""
        ev = "".join(f" -e {data / e}" for e in spec.evaluation)
        return f"fairscan prepare pool {sources} --fraction {spec.fraction:g}{splits}{ev} --seed {spec.seed} --out {out}"
    return f"fairscan prepare balance {data / spec.source} --seed {spec.seed} --out {out}"


def _prepare(spec, out: Path, data: Path, runner) -> None:
    from fairscan.data.manifest import write_prepared

    if isinstance(spec, ChexpertData):
        from fairscan.data.chexpert import prepare_chexpert

        prepared = prepare_chexpert(
            spec.root, demographics=spec.demographics, split=spec.split, seed=spec.seed,
            label_policy=spec.label_policy, blank=spec.blank, all_races=spec.all_races,
        )  # fmt: skip
    elif isinstance(spec, NihData):
        from fairscan.data.nih import prepare_nih

        prepared = prepare_nih(spec.root, split=spec.split, seed=spec.seed)
    elif isinstance(spec, MimicData):
        from fairscan.data.mimic import prepare_mimic

        prepared = prepare_mimic(
            spec.root, mimic_iv=spec.mimic_iv, split=spec.split, seed=spec.seed, label_policy=spec.label_policy,
            blank=spec.blank, all_races=spec.all_races,
        )  # fmt: skip
    elif isinstance(spec, SyntheticData):
        from fairscan.data.synthetic import prepare_synthetic

        prepared = prepare_synthetic(
            out, layout=spec.layout, patients=spec.patients, seed=spec.seed, image_size=spec.image_size,
            effect=spec.effect, effect_group=spec.effect_group, profile=spec.profile,
        )  # fmt: skip
    elif isinstance(spec, PoolData):
        from fairscan.data.cohorts import make_pool

        prepared = make_pool(
            [data / s for s in spec.sources], fraction=spec.fraction, seed=spec.seed, splits=spec.splits,
            evaluation=[data / e for e in spec.evaluation],
        )  # fmt: skip
    else:
        from fairscan.data.cohorts import balance_training_set

        prepared = balance_training_set(data / spec.source, seed=spec.seed)
    write_prepared(prepared, out)
    for message in prepared.warnings:
        runner.warn(message)
    counts = prepared.record()["counts"]
    runner.say(f"  {out}: {counts['images']:,} images, {counts['patients']:,} patients")


# ----------------------------------------------------------------------------------------------- running


class Runner:
    """Runs a plan's steps in order, saying what it does on ``console`` (stderr)."""

    def __init__(self, console=None, *, debug: bool = False):
        self.console = console
        self.debug = debug
        self.journal: list[dict[str, Any]] = []

    def say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.say(f"[yellow]warning:[/] {message}")

    def run(self, plan: Plan) -> list[dict[str, Any]]:
        total = len(plan.steps)
        for i, step in enumerate(plan.steps, 1):
            state = step.state()
            prefix = f"[bold][{i}/{total}][/] {step.title}"
            if state == "done":
                self.say(f"{prefix}: [green]done[/] (skipped)")
                self.journal.append(
                    {"step": step.title, "kind": step.kind, "out": str(step.out), "status": "skipped"}
                )
                continue
            self.say(f"{prefix}{' (resuming)' if state == 'resume' else ''}")
            t0 = time.time()
            self._resume = state == "resume"
            step.action(self)
            self.journal.append(
                {"step": step.title, "kind": step.kind, "out": str(step.out), "status": "ran",
                 "seconds": round(time.time() - t0, 1)}
            )  # fmt: skip
        return self.journal

    # -- stage actions (library calls, in this process) ------------------------------------------------------

    def pretrain(self, cfg) -> None:
        from fairscan.train.pretrain import pretrain

        pretrain(cfg, resume=self._resume, console=self.console, debug=self.debug)

    def finetune(self, cfg) -> None:
        from fairscan.train.finetune import finetune

        finetune(cfg, resume=self._resume, console=self.console, debug=self.debug)

    def predict(self, cfg, split: str, path: Path) -> None:
        from fairscan.train.predict import PredictConfig, predict

        pcfg = PredictConfig(
            run=cfg.out, manifest=cfg.manifest, out=str(path), split=split, cpu=cfg.cpu, procs=cfg.procs,
            workers=cfg.workers or 0, precision=cfg.precision, cache=cfg.cache, use_cache=cfg.use_cache,
        )  # fmt: skip
        predict(pcfg, console=self.console, debug=self.debug)

    def ensemble(self, ens, members: list[Path], out: Path) -> None:
        from fairscan.fairness.ensemble import write_ensemble

        df = write_ensemble(members, out, method=ens.method, weights=ens.weights)
        self.say(f"  {out}: ensemble of {len(members)} models ({ens.method}), {len(df)} images")


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
    seeds = _SeedTable(plan, audits, index, cfg)
    rows = [_study_row(r, metrics, seeds, plan, audits, index, attrs) for r in plan.rows]
    by_name = {row["preset"]: row for row in rows}
    section = plan.study.study if plan.study.stage == "study" else None
    comparisons = [_comparison(comp, metrics, seeds, by_name) for comp in (section.comparisons if section else [])]
    checks = _checks(section, rows) if section else []
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
        "show": list(section.show) if section else ["groups"],
        "assumptions": _assumptions(plan),
        "claims": list(plan.study.expected.claims) if plan.study.expected else [],
        "settings": comparison["models"][names[0]]["settings"],
        "notes": sorted({n for a in comparison["models"].values() for n in a.get("notes", [])}),
        "members": {row["preset"]: [names[index[(row["preset"], s)]] for s in plan.seeds] for row in rows},
        "comparison": comparison,
    }


class _SeedTable:
    """Each row's metric per seed: point estimates, bootstrap replicates and what they are centred on."""

    def __init__(self, plan: Plan, audits, index, cfg):
        self.seeds, self.audits, self.index, self.cfg = plan.seeds, audits, index, cfg

    def of(self, name: str, m: str, seed: int):
        """(point, replicates, centre) of metric ``m`` (``mean_auc`` or ``gap_<attr>``) for one run."""
        from fairscan.fairness.compare import metric

        key = "mean_auc" if m == "mean_auc" else f"gap:{m.removeprefix('gap_')}"
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
        (pa, ra, ca), (pb, rb, cb) = (seeds.mean_over_seeds(group, m) for group in (comp.model, comp.reference))
        per_seed = [None if a is None or b is None else a - b for a, b in zip(pa, pb, strict=True)]
        reps = ra - rb if ra is not None and rb is not None else None
        centre = None if ca is None or cb is None else ca - cb
        test = stats.seed_difference(per_seed, reps, centre, seeds.cfg.ci_level,
                                     min_count=stats.boot_min_count(seeds.cfg.n_boot))  # fmt: skip
        paper = [[by_name[n]["metrics"][m]["paper"] for n in group] for group in (comp.model, comp.reference)]
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
