"""One lifecycle for the training stages (``finetune``, ``pretrain``): resolve, check, relaunch, run, complete.

:func:`run_stage` takes a :class:`Stage` (what differs between the two: its settings, the checks its parent
process makes, the run itself) and the settings given, and does everything else the same way:

1. **preflight**: the run folder can be written (exit 2 naming the path otherwise), and its lock is taken
   (``fairscan.runs``); the temporary files of a killed run are removed;
2. **resolve**: a new run validates the settings given; ``resume`` continues the recorded ones (options given
   now must agree; inputs are found again by their fingerprint); a run killed before its first checkpoint starts
   again; a resume's checkpoint is checked (``fairscan.train.checkpoint``); recipe defaults are filled in;
3. **relaunch** on ``procs`` processes through Accelerate's launcher (``fairscan.train.launch``) after the
   stage's own input checks, or run here (one process, or every process of an outside launcher);
4. **run**: the stage builds its model and data, starts its record, trains, and completes the record.

Returns the stage record (``stage.json``) as the run left it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairscan.errors import InputError
from fairscan.io import check_output_folder
from fairscan.runs import RUN_EXISTS, RunFolder, absolute_paths, is_main_process, relocate_inputs
from fairscan.settings import validate
from fairscan.train.launch import launch, under_launcher
from fairscan.train.progress import printer

# where each stage is defined (a launched worker finds its stage here)
STAGES = {"finetune": "fairscan.train.finetune", "pretrain": "fairscan.train.pretrain"}


@dataclass(frozen=True)
class Stage:
    """What a training stage brings to the lifecycle."""

    name: str
    model_for: Callable[[dict[str, Any]], type]  # the settings model for these values
    check: Callable[[Any, Any], None]  # (cfg, console): what bad input can break, before workers start
    run: Callable[..., None]  # (cfg, folder, *, resume, console, inexact): in every process

    def settings(self, values: dict[str, Any]):
        model = self.model_for(values)
        return validate(model, values, flags=lambda name: flag(model, name))


def flag(model, name: str) -> str:
    """The command-line option of a setting (for messages)."""
    from fairscan.settings import option_of

    return option_of(model.model_fields, name)


def run_stage(
    stage: Stage,
    given: dict[str, Any],
    *,
    out: str | os.PathLike,
    resume: bool = False,
    break_lock: bool = False,
    allow_inexact_resume: bool = False,
    console=None,
    debug: bool = False,
) -> dict[str, Any] | None:
    """Run (or continue) ``stage`` in the run folder ``out`` with the settings ``given``; returns its record."""
    say = printer(console if is_main_process() else None)
    if under_launcher():  # started by an outside launcher (e.g. several machines): its process count rules
        given = {**given, "procs": int(os.environ["WORLD_SIZE"])}
    folder = RunFolder(check_output_folder(out, "--out"))
    with folder.lock(break_lock=break_lock, say=say):
        if is_main_process():
            folder.tidy()
        saved, resume = _starting(stage, folder, resume, say)
        if saved is not None and saved.get("status") == "complete":
            say(f"{folder.path} holds a finished {stage.name} run: nothing to resume")
            return saved
        cfg = _settings(stage, given, folder.path, saved).resolve()
        inexact = _check_resume(folder, allow_inexact_resume, say) if resume else []
        if cfg.procs > 1 and not under_launcher():
            stage.check(cfg, console)
            launch(work, {"stage": stage.name, "settings": cfg.model_dump(mode="json"), "resume": resume,
                          "inexact": inexact}, processes=cfg.procs, debug=debug)  # fmt: skip
        else:
            stage.run(cfg, folder, resume=resume, console=console, inexact=inexact)
        return folder.read()


def run_settings(stage: Stage, cfg, **options: Any) -> dict[str, Any] | None:
    """:func:`run_stage` for a settings object: what it sets are the settings given (the library's way in).
    ``options``: ``resume``, ``break_lock``, ``allow_inexact_resume``, ``console``, ``debug``."""
    return run_stage(stage, cfg.model_dump(exclude_unset=True), out=cfg.out, **options)


def work(*, stage: str, settings: dict[str, Any], resume: bool, inexact: list[str]) -> None:
    """A launched worker's part: the stage's run, with settings its parent has resolved."""
    from rich.console import Console

    the_stage: Stage = importlib.import_module(STAGES[stage]).STAGE
    cfg = the_stage.settings(settings)
    console = Console(stderr=True)
    the_stage.run(cfg, RunFolder(cfg.out), resume=resume, console=console, inexact=inexact)


def _starting(stage: Stage, folder: RunFolder, resume: bool, say) -> tuple[dict[str, Any] | None, bool]:
    """The saved record to continue (None: a new run), and whether a checkpoint is resumed."""
    saved = folder.read()
    checkpoint = folder.checkpoint()
    if saved is not None and saved.get("stage") != stage.name:
        raise InputError(
            f"{folder.path}: not a {stage.name} run (stage {saved.get('stage')!r})",
            hint="choose another --out",
        )
    if saved is not None and saved.get("status") == "running" and checkpoint is None:
        # killed before its first checkpoint: nothing to continue from; what it wrote goes, and it starts again
        # (with --resume, with the settings it recorded)
        if resume:
            say(
                f"{folder.path}: no checkpoint yet; starting the run from the beginning with its recorded settings"
            )
        else:
            say(f"{folder.path}: its run stopped before its first checkpoint; starting it again")
        if is_main_process():
            folder.clear()
        return (saved if resume else None), False
    if not resume:
        if saved is None and checkpoint is None:
            return None, False
        if (saved or {}).get("status") == "complete":
            raise InputError(
                RUN_EXISTS.format(out=folder.path, what="finished"),
                hint="choose another --out (or delete the folder to redo the run)",
            )
        step = _checkpoint_step(checkpoint)
        raise InputError(
            RUN_EXISTS.format(
                out=folder.path, what=f"stopped at step {step}" if step is not None else "unfinished"
            ),
            hint="continue it with --resume, or choose another --out",
        )
    if saved is None:
        raise InputError(
            f"{folder.path}: nothing to resume (no stage.json)", hint="start the run without --resume"
        )
    return saved, True


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    import json

    try:
        return int(json.loads((checkpoint / "progress.json").read_text())["step"])
    except (TypeError, OSError, ValueError, KeyError):
        return None


def _settings(stage: Stage, given: dict[str, Any], out: Path, saved: dict[str, Any] | None):
    """A new run's settings as given; a continued run's as recorded, with what is given now checked against
    them and its inputs found again by their fingerprint."""
    if saved is None:
        return stage.settings({**given, "out": str(out)})
    model = stage.model_for(saved["settings"])
    settings = model.upgrade(saved["settings"])
    relocate_inputs(model, settings, saved, given, lambda name: flag(model, name))
    ref = absolute_paths(model, validate(model, {**settings, "out": str(out)}).model_dump(mode="json"))
    typed = absolute_paths(model, validate(model, {**ref, **given}).model_dump(mode="json"))
    differ = [k for k in given if k not in ("out", *model.input_fields) and typed.get(k) != ref.get(k)]
    if differ:
        raise InputError(
            f"{out}: --resume continues the recorded settings, but {', '.join(flag(model, k) for k in differ)} "
            "differ",
            hint="drop those options (the run's stage.json has its settings), or start a new --out",
        )
    return validate(model, {**settings, "out": str(out)})


def _check_resume(folder: RunFolder, allow_inexact: bool, say) -> list[str]:
    from fairscan.train.checkpoint import check_checkpoint

    inexact = check_checkpoint(folder.checkpoint(), allow_inexact=allow_inexact)
    for why in inexact:
        say(f"[yellow]warning:[/] resuming inexactly (--allow-inexact-resume): {why}")
    return inexact
