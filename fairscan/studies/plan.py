"""Planning a study: the steps a group of presets needs, each once, in dependency order, and running them.

``plan_study("table2", seeds=3)`` lists every step -- preparing datasets, pre-training, fine-tuning (``seeds``
times), predicting, ensembling -- with whether it is done, resumable or to do. A training step asks its run folder
(``fairscan.runs.state``): done when it holds a finished run with the same settings, resumable when it holds a
checkpoint; a predictions file is done when it records the weights it was made with. Two presets that write the
same run folder with the same settings share it (Table 5's 100% row is Table 2's CXPT run); with other settings,
that is an error naming the differences. :class:`Runner` runs the steps in order, in this process.

Seed ``s > 0`` of a run writes to ``<out>-seed<s>``; seed 0 writes to the preset's own folder, so
``fairscan finetune --preset mae`` and ``fairscan study figure1`` share their first run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairscan.config import Preset, StudyRow, StudySection, load_preset
from fairscan.errors import InputError
from fairscan.runs import comparable, diff
from fairscan.runs import state as run_state

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
    features: dict[int, Path] = field(default_factory=dict)  # test features per seed (representations)
    frozen: Path | None = None  # test features of the row's foundation model used frozen


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


def features_path(run: str | Path, split: str = "test") -> Path:
    return Path(run) / "features" / f"{split}.parquet"


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
            diffs = diff(self.settings[key][0], settings)
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
        deps = [self.dataset(preset, s, (*chain, name)) for s in spec.needs()]
        self._same_output(out, spec.model_dump(), preset)
        return self.add(
            Step(
                kind="data",
                key=f"data:{out.resolve()}",
                title=f"prepare {name} ({spec.kind})",
                command=spec.command(out, data),
                out=out,
                action=lambda runner, spec=spec, out=out, data=data: _prepare(spec, out, data, runner),
                check=lambda out=out: "done" if (out / "manifest.parquet").exists() else "todo",
                deps=deps,
            )
        )

    # -- stages ------------------------------------------------------------------------------------------

    def pretrain(self, preset: Preset) -> str:
        cfg = with_run_options(preset.pretrain, self.run_options)
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
        self._same_output(out, comparable(type(cfg), cfg.resolve().model_dump(mode="json")), preset)
        return self.add(
            Step(
                kind=kind,
                key=f"{kind}:{out.resolve()}",
                title=title,
                command=command,
                out=out,
                action=lambda runner, cfg=cfg: getattr(runner, kind)(cfg),
                check=lambda: run_state(out, cfg),
                deps=deps,
            )
        )

    def run_config(self, preset: Preset, seed: int):
        """The fine-tuning settings of one seed's run (seed s > 0 writes to ``<out>-seed<s>``)."""
        base = with_run_options(preset.finetune_config(), self.run_options)
        return base.model_copy(update={"seed": seed, "out": str(seed_dir(base.out, seed))})

    def finetune(self, preset: Preset, seed: int) -> tuple[str, Path]:
        cfg = self.run_config(preset, seed)
        out = Path(cfg.out)
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
                    action=lambda runner, cfg=cfg, split=split, path=path, batch=preset.predict.batch_size: (
                        runner.predict(cfg, split, path, batch)
                    ),
                    check=lambda path=path, out=out: predictions_state(path, out),
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
    from fairscan.studies.representations import plan_features, plan_frozen

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
            if section.representations is not None and preset.stage == "finetune":
                row.features[seed] = plan_features(planner, preset, seed, section.representations.batch_size)
        if (
            section.representations is not None
            and section.representations.frozen
            and preset.stage == "finetune"
        ):
            row.frozen = plan_frozen(planner, preset, section.representations.batch_size)
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


def with_run_options(cfg, options: dict[str, Any]):
    """A stage's settings with the study's execution options (``--gpus``, ``--workers`` ...) that it has."""
    keep = {k: v for k, v in options.items() if k in type(cfg).model_fields and v is not None}
    return cfg.model_copy(update=keep) if keep else cfg


def predictions_state(path: Path, run: Path) -> str:
    """``done`` when the predictions at ``path`` come from the model the run at ``run`` exports now."""
    if not path.exists():
        return "todo"
    from fairscan.io import parquet_metadata
    from fairscan.runs import RunFolder

    record = RunFolder(run).read()
    if record is None:
        return "todo"
    want = ((record.get("outputs") or {}).get("model") or {}).get("sha256")
    have = parquet_metadata(path).get("weights_sha256")
    return "done" if want and want == have else "todo"


def _ensemble_state(out: Path, members: list[Path]) -> str:
    if not out.exists():
        return "todo"
    from fairscan.io import parquet_metadata

    sources = [m.get("source") for m in parquet_metadata(out).get("members", [])]
    newest = max((m.stat().st_mtime for m in members if m.exists()), default=0.0)
    same = [str(Path(s).resolve()) for s in sources] == [str(m.resolve()) for m in members]
    return "done" if same and out.stat().st_mtime >= newest else "todo"


# --------------------------------------------------------------------------------------------- datasets


def _prepare(spec, out: Path, data: Path, runner) -> None:
    from fairscan.data.manifest import write_prepared

    prepared = spec.prepare(out, data)
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

    def predict(self, cfg, split: str, path: Path, batch_size: int | None) -> None:
        from fairscan.train.predict import PredictConfig, predict

        pcfg = PredictConfig(
            run=cfg.out,
            manifest=cfg.manifest,
            out=str(path),
            split=split,
            batch_size=batch_size,
            **cfg.execution(),
        )
        predict(pcfg, console=self.console, debug=self.debug)

    def embed(self, cfg, path: Path, batch_size: int | None) -> None:
        from fairscan.representations.embed import EmbedConfig, embed

        ecfg = EmbedConfig(
            run=cfg.out, manifest=cfg.manifest, out=str(path), split="test", batch_size=batch_size,
            **cfg.execution(),
        )  # fmt: skip
        embed(ecfg, console=self.console, debug=self.debug)

    def embed_frozen(self, ecfg) -> None:
        from fairscan.representations.embed import embed

        embed(ecfg, console=self.console, debug=self.debug)

    def ensemble(self, ens, members: list[Path], out: Path) -> None:
        from fairscan.fairness.ensemble import write_ensemble

        df = write_ensemble(members, out, method=ens.method, weights=ens.weights)
        self.say(f"  {out}: ensemble of {len(members)} models ({ens.method}), {len(df)} images")
