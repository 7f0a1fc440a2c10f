"""`fairscan pretrain`: a thin wrapper over ``fairscan.train.pretrain`` (MAE or MoCo v3 on a ViT encoder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, err_console, state
from fairscan.cli._options import (
    Compile,
    Cpu,
    Gpus,
    Launched,
    LogWith,
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

PRETRAIN_HELP = """Pre-train a ViT encoder with MAE or MoCo v3 on one or several manifests (pools from `prepare`).

The run folder holds the encoder alone in timm's key layout (model.safetensors) and model.json; `fairscan finetune --model medical-mae|medical-mocov3 --weights RUN` starts from it. The output is the epoch with the lowest training loss in the final 5% of epochs. --snapshots also saves the encoder at chosen epochs of this run: a cheap stand-in for Table 4's separate 200/400/800-epoch runs (the cosine schedule differs).

Examples:

  fairscan pretrain --method mae --manifest data/pool --out runs/mae-cx14 --mask-ratio 0.9 --gpus 8

  fairscan pretrain --method mocov3 --manifest data/nih data/chexpert --splits train --out runs/mocov3 --gpus 8

  fairscan pretrain --method mae --manifest data/nih --out runs/mae-epochs --snapshots 200,400 --gpus 8

  fairscan pretrain --method mocov3 --arch vit_tiny_patch16_224 --image-size 32 --epochs 2 --batch-size 16 --mlp-dim 256 --cpu --procs 2 --manifest data/synth --out runs/tiny

  fairscan pretrain --preset pretrain-mae-cx14 --gpus 8

  fairscan pretrain --out runs/mae-cx14 --resume
"""

Manifests = Annotated[
    list[Path] | None,
    typer.Option(
        "--manifest", help="Manifest(s) or pool(s) to pre-train on (manifest.parquet or its folder)."
    ),
]


def _ints(text: str | None, option: str) -> list[int] | None:
    from fairscan.errors import InputError

    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(
            f"{option} {text!r} is not a comma-separated list of epochs", hint=f"e.g. {option} 200,400"
        ) from None


MAE_ONLY = ("mask_ratio", "decoder_depth", "decoder_dim")
MOCO_ONLY = ("mlp_dim",)


def _check_method_options(given: dict, flags_given: set[str]) -> None:
    """Options of the other method given on the command line are errors, never silently ignored. (Presets
    may carry both families' keys from a shared base; those are left alone.)"""
    from fairscan.errors import InputError

    method = given["method"]
    other = MAE_ONLY if method == "mocov3" else MOCO_ONLY
    wrong = [k for k in other if k in flags_given]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        owner = "MAE" if method == "mocov3" else "MoCo v3"
        raise InputError(
            f"{flags} {'applies' if len(wrong) == 1 else 'apply'} to {owner} only, not to --method {method}",
            hint="MAE takes --mask-ratio and --decoder-*; MoCo v3 takes --mlp-dim",
        )


def pretrain(
    method: Annotated[str | None, typer.Option("--method", help="mae or mocov3.")] = None,
    manifest: Manifests = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The run folder to write.")] = None,
    eval_manifest: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval-manifest",
            help="A manifest you will evaluate on: warn if its held-out patients are pre-trained on (repeatable).",
        ),
    ] = None,
    splits: Annotated[
        str | None,
        typer.Option("--splits", help="Comma-separated manifest splits to use (default: every row)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (800).")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="timm ViT (vit_base_patch16_224).")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=16, help="Input pixels (224).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Effective batch per optimiser step (4096).")
    ] = None,
    accum: Annotated[
        int | None,
        typer.Option(
            "--accum", min=1, help="MAE: gradient accumulation steps (default: micro-batches of <= 64)."
        ),
    ] = None,
    blr: Annotated[
        float | None, typer.Option("--blr", help="Base lr, scaled by batch / 256 (1.5e-4).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Absolute peak lr (overrides --blr).")] = None,
    warmup_epochs: Annotated[
        float | None, typer.Option("--warmup-epochs", min=0, help="40, at most half the run.")
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option("--weight-decay", min=0, help="MAE 0.05, MoCo v3 0.1.")
    ] = None,
    mask_ratio: Annotated[
        float | None,
        typer.Option("--mask-ratio", help="MAE: share of patches hidden (0.75; Medical MAE 0.90)."),
    ] = None,
    decoder_depth: Annotated[
        int | None, typer.Option("--decoder-depth", min=1, help="MAE decoder blocks (8).")
    ] = None,
    decoder_dim: Annotated[
        int | None, typer.Option("--decoder-dim", min=1, help="MAE decoder width (512).")
    ] = None,
    mlp_dim: Annotated[
        int | None, typer.Option("--mlp-dim", min=1, help="MoCo v3 projector/predictor hidden width (4096).")
    ] = None,
    crop_scale: Annotated[
        float | None,
        typer.Option("--crop-scale", help="Smallest share of the image a random crop keeps (0.2)."),
    ] = None,
    snapshots: Annotated[
        str | None, typer.Option("--snapshots", help="Also save the encoder at these epochs, e.g. 200,400.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for init, order, masks and augmentation.")
    ] = None,
    cpu: Cpu = False,
    gpus: Gpus = None,
    procs: Procs = None,
    workers: Workers = None,
    precision: Precision = None,
    compile: Compile = False,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="The image cache to read (one manifest).")
    ] = None,
    no_cache: NoCache = False,
    save_every: SaveEvery = None,
    log_every: Annotated[
        int | None, typer.Option("--log-every", min=1, help="Steps between metrics.jsonl lines (10).")
    ] = None,
    log_with: LogWith = None,
    resume: Resume = False,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="A pretrain preset (`fairscan presets list --stage pretrain`)."),
    ] = None,
    sets: Sets = None,
    launched_config: Launched = None,
) -> None:
    from fairscan.errors import InputError
    from fairscan.train.pretrain import PretrainConfig
    from fairscan.train.pretrain import pretrain as run_pretrain

    if launched_config is not None:  # a worker started by --gpus/--procs: settings come resolved
        raw = json.loads(Path(launched_config).read_text())
        run_pretrain(
            PretrainConfig(**raw["config"]), resume=raw["resume"], console=err_console, launched=True
        )
        return
    n = processes(gpus, procs, cpu)
    given = {
        "method": method, "manifests": [str(m) for m in manifest] if manifest else None,
        "evaluation": [str(m) for m in eval_manifest] if eval_manifest else None,
        "splits": comma_list(splits),
        "epochs": epochs, "arch": arch, "image_size": image_size, "batch_size": batch_size, "accum": accum,
        "blr": blr, "lr": lr, "warmup_epochs": warmup_epochs, "weight_decay": weight_decay,
        "mask_ratio": mask_ratio, "decoder_depth": decoder_depth, "decoder_dim": decoder_dim, "mlp_dim": mlp_dim,
        "crop_scale": (crop_scale, 1.0) if crop_scale is not None else None,
        "snapshots": _ints(snapshots, "--snapshots"), "seed": seed, "workers": workers, "precision": precision,
        "cache": cache and str(cache), "save_every": save_every, "log_every": log_every, "procs": n,
        "trackers": comma_list(log_with),
        "cpu": cpu or None, "compile": compile or None, "use_cache": False if no_cache else None,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    on_command_line = set(given)
    given, out = with_preset(given, preset, sets, "pretrain", out)
    if resume and ("method" not in given or "manifests" not in given):
        given = {**saved_settings(out, ("method", "manifests")), **given}
    for key, flag in (("method", "--method"), ("manifests", "--manifest")):
        if key not in given:
            raise InputError(f"{flag} is required", hint="see `fairscan pretrain --help`")
    if given["method"] not in ("mae", "mocov3"):
        raise InputError(f"unknown --method {given['method']!r}", hint="use mae or mocov3")
    _check_method_options(given, on_command_line)
    cfg = settings_model(PretrainConfig, {"out": str(out), **given})
    run_pretrain(cfg, resume=resume, console=err_console, debug=state.debug)
    if int(os.environ.get("RANK", "0")) == 0:  # under an outside launcher every process gets here
        console.print(str(Path(out) / "model.safetensors"), highlight=False, soft_wrap=True)


pretrain.__doc__ = PRETRAIN_HELP  # typer shows the docstring as --help
