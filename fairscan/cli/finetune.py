"""`fairscan finetune` and `fairscan predict`: thin wrappers over ``fairscan.train.finetune`` and ``.predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, err_console, state
from fairscan.cli._options import (
    Cache,
    Compile,
    Cpu,
    Gpus,
    Launched,
    LogWith,
    Manifest,
    Model,
    NoCache,
    Precision,
    Procs,
    Resume,
    SaveEvery,
    Sets,
    Workers,
    comma_list,
    processes,
    saved_settings,
    settings_model,
    with_preset,
)

FINETUNE_HELP = """Fine-tune a named foundation model on a manifest's train split, selecting on validate.

Examples:

  fairscan finetune --model mae --manifest data/chexpert --out runs/mae

  fairscan finetune --model medical-mae --weights vit-b_CXR_0.5M_mae.pth --manifest data/chexpert --out runs/mmae --gpus 4

  fairscan finetune --model mae --arch vit_tiny_patch16_224 --image-size 64 --init random --epochs 2 --cpu --procs 2 --manifest data/synth --out runs/tiny

  fairscan finetune --out runs/mae --resume
"""

PREDICT_HELP = """Score one split of a manifest with a fine-tuned run; writes the predictions format for `fairscan audit`.

Examples:

  fairscan predict runs/mae --manifest data/chexpert --split test -o preds/mae_test.parquet

  fairscan predict runs/mae --manifest data/chexpert --split validate -o preds/mae_val.parquet
"""


def finetune(
    model: Model = None,
    manifest: Manifest = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The run folder to write.")] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Weights file or fairscan run folder (default: the hub).")
    ] = None,
    init: Annotated[
        str | None, typer.Option("--init", help="'random' for a random init (never implied).")
    ] = None,
    linear_probe: Annotated[
        bool, typer.Option("--linear-probe", help="Frozen backbone, BN + linear head, LARS (MAE's recipe).")
    ] = False,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Default: the model's recipe.")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Another timm architecture of the same family (tiny tests).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=16, help="Input pixels (224).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Effective batch (default: the recipe's).")
    ] = None,
    accum: Annotated[int | None, typer.Option("--accum", min=1, help="Gradient accumulation steps.")] = None,
    blr: Annotated[float | None, typer.Option("--blr", help="Base lr, scaled by batch / 256.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Absolute peak lr (overrides --blr).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option("--warmup-epochs", min=0)] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Comma-separated label ids (default: all in the manifest).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for init, order and augmentation.")] = None,
    cpu: Cpu = False,
    gpus: Gpus = None,
    procs: Procs = None,
    workers: Workers = None,
    precision: Precision = None,
    compile: Compile = False,
    cache: Cache = None,
    no_cache: NoCache = False,
    save_every: SaveEvery = None,
    log_with: LogWith = None,
    resume: Resume = False,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="A finetune preset (`fairscan presets list --stage finetune`)."),
    ] = None,
    sets: Sets = None,
    launched_config: Launched = None,
) -> None:
    """Fine-tune a named foundation model; see the examples."""
    from fairscan.errors import InputError
    from fairscan.train.finetune import FinetuneConfig
    from fairscan.train.finetune import finetune as run_finetune

    if launched_config is not None:  # a worker started by --gpus/--procs: settings come resolved
        raw = json.loads(Path(launched_config).read_text())
        run_finetune(
            FinetuneConfig(**raw["config"]), resume=raw["resume"], console=err_console, launched=True
        )
        return
    n = processes(gpus, procs, cpu)
    given = {
        "model": model, "manifest": manifest and str(manifest), "weights": weights, "init": init,
        "epochs": epochs, "arch": arch, "image_size": image_size, "batch_size": batch_size, "accum": accum,
        "blr": blr, "lr": lr, "warmup_epochs": warmup_epochs, "seed": seed, "workers": workers,
        "precision": precision, "cache": cache and str(cache), "save_every": save_every, "procs": n,
        "labels": comma_list(labels), "trackers": comma_list(log_with),
        "linear_probe": linear_probe or None, "cpu": cpu or None, "compile": compile or None,
        "use_cache": False if no_cache else None,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    given, out = with_preset(given, preset, sets, "finetune", out)
    if not resume:
        for name in ("model", "manifest"):
            if name not in given:
                raise InputError(f"--{name} is required", hint="see `fairscan finetune --help`")
    elif "model" not in given or "manifest" not in given:
        given = {**saved_settings(out, ("model", "manifest")), **given}
    cfg = settings_model(FinetuneConfig, {"out": str(out), **given})
    run_finetune(cfg, resume=resume, console=err_console, debug=state.debug)
    console.print(str(out / "model.safetensors"), highlight=False, soft_wrap=True)


def predict(
    run: Annotated[Path | None, typer.Argument(help="A run folder written by `fairscan finetune`.")] = None,
    manifest: Manifest = None,
    split: Annotated[
        str, typer.Option("--split", help="test, or validate for the audit's thresholds.")
    ] = "test",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Predictions file (.parquet).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    cpu: Cpu = False,
    gpus: Gpus = None,
    procs: Procs = None,
    workers: Workers = None,
    precision: Precision = None,
    cache: Cache = None,
    no_cache: NoCache = False,
    launched_config: Launched = None,
) -> None:
    """Write predictions for one split; see the examples."""
    from fairscan.errors import InputError
    from fairscan.train.predict import PredictConfig
    from fairscan.train.predict import predict as run_predict

    if launched_config is not None:
        raw = json.loads(Path(launched_config).read_text())
        run_predict(PredictConfig(**raw["config"]), console=err_console, launched=True)
        return
    if run is None:
        raise InputError(
            "give the run folder to predict with", hint="fairscan predict RUN --manifest M -o preds.parquet"
        )
    if manifest is None:
        raise InputError("--manifest is required", hint="the manifest whose split to score")
    if output is None:
        raise InputError("-o/--output is required", hint="e.g. -o preds.parquet")
    if split not in ("train", "validate", "test"):
        raise InputError(f"unknown split {split!r}", hint="use test, or validate for the audit's thresholds")
    n = processes(gpus, procs, cpu)
    given = {
        "run": str(run), "manifest": str(manifest), "out": str(output), "split": split, "batch_size": batch_size,
        "cpu": cpu, "procs": n or 1, "workers": workers, "precision": precision, "cache": cache and str(cache),
        "use_cache": not no_cache,
    }  # fmt: skip
    cfg = settings_model(PredictConfig, {k: v for k, v in given.items() if v is not None})
    path = run_predict(cfg, console=err_console, debug=state.debug)
    console.print(str(path), highlight=False, soft_wrap=True)
