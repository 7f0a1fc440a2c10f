"""What the training commands (`finetune`, `predict`, `pretrain`, `study`) share: one declaration of each common
option, and the helpers that turn options into settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str | None, typer.Option("--model", "-m", help="Registry name (`fairscan models list`).")]
Manifest = Annotated[Path | None, typer.Option("--manifest", help="manifest.parquet or its folder.")]
Cpu = Annotated[bool, typer.Option("--cpu", help="Run on the CPU even where a GPU is present.")]
Gpus = Annotated[
    int | None, typer.Option("--gpus", min=1, help="GPU processes on this machine (Accelerate).")
]
Procs = Annotated[
    int | None, typer.Option("--procs", min=1, help="Processes on this machine (with --cpu: gloo).")
]
Workers = Annotated[int | None, typer.Option("--workers", min=0, help="Data-loading processes per process.")]
Cache = Annotated[
    Path | None, typer.Option("--cache", help="An image cache to read (default: the manifest's, if built).")
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Decode image files even where a cache exists.")]
Precision = Annotated[str | None, typer.Option("--precision", help="auto (bf16 on GPU), bf16 or fp32.")]
Launched = Annotated[Path | None, typer.Option("--launched-config", hidden=True)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
LogWith = Annotated[
    str | None,
    typer.Option("--log-with", help="Accelerate trackers: tensorboard, wandb, mlflow (comma list)."),
]
SaveEvery = Annotated[
    int | None, typer.Option("--save-every", min=0, help="Steps between mid-epoch checkpoints (500).")
]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a preset key, e.g. --set finetune.epochs=3 (YAML values; repeatable)."
    ),
]


def comma_list(text: str | None) -> list[str] | None:
    """`a, b,c` -> ["a", "b", "c"]; None stays None."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def with_preset(given: dict, preset: str | None, sets: list[str] | None, stage: str, out: Path | None):
    """The settings of a training command: its preset's values (with --set) under the options typed on the
    command line; returns them without ``out``, and the run folder (--out, else the preset's)."""
    from fairscan.errors import InputError

    if preset is not None:
        from fairscan.config import stage_values

        given = {**stage_values(preset, stage, sets or []), **given}
    elif sets:
        raise InputError(
            "--set overrides a preset's keys", hint="add --preset NAME, or use the options directly"
        )
    preset_out = given.pop("out", None)
    out = out if out is not None else (Path(preset_out) if preset_out is not None else None)
    if out is None:
        raise InputError("--out is required", hint="name the run folder to write (or to --resume)")
    return given, Path(out)


def saved_settings(out: Path, keys: tuple[str, ...]) -> dict:
    """``keys`` of a run's recorded settings (for --resume without repeating them); empty if there is none."""
    import json

    record = out / "stage.json"
    if not record.exists():
        return {}
    settings = json.loads(record.read_text()).get("settings", {})
    return {k: settings.get(k) for k in keys}


def processes(gpus: int | None, procs: int | None, cpu: bool) -> int | None:
    """The process count --gpus/--procs ask for (None: one), refusing combinations that cannot run."""
    from fairscan.errors import InputError

    if gpus and procs:
        raise InputError(
            "--gpus and --procs exclude each other", hint="--gpus N on GPUs; --cpu --procs N on CPUs"
        )
    if gpus and cpu:
        raise InputError("--gpus and --cpu exclude each other", hint="use --cpu --procs N for CPU processes")
    if gpus:
        import torch

        if torch.cuda.device_count() < gpus:
            raise InputError(
                f"--gpus {gpus}, but this machine has {torch.cuda.device_count()} GPU(s)",
                hint="use fewer, or --cpu --procs N to run N CPU processes",
            )
    return gpus or procs


def settings_model(cls, values: dict):
    """Build a settings model, turning pydantic's validation errors into one InputError line."""
    from pydantic import ValidationError

    from fairscan.errors import InputError

    try:
        return cls(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(
            f"bad value for {where}: {first['msg']}", hint="see --help for the accepted values"
        ) from None
