"""`fairscan models`: the registry of named foundation models (the paper's Table 1), and weight conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, err_console

app = typer.Typer(
    help="The named foundation models (the paper's Table 1) and their weights.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the registry: architecture, pre-training method and data, weights, and the fine-tuning recipe."""
    from dataclasses import asdict

    from fairscan.models.registry import IMAGENET_MEAN, MODELS

    if as_json:
        console.print_json(json.dumps({name: asdict(spec) for name, spec in MODELS.items()}))
        return
    from rich.table import Table

    table = Table(title="Foundation models (the paper's Table 1)", title_justify="left")
    for col in ("name", "model", "architecture", "pre-training", "data"):
        table.add_column(col)
    for s in MODELS.values():
        table.add_row(s.name, s.title, s.arch_label, s.method, s.data)
    console.print(table)
    weights = Table(
        title="Weights (`fairscan finetune --weights FILE|RUN`, or the hub)", title_justify="left"
    )
    for col in ("name", "where they come from", "format"):
        weights.add_column(col)
    for s in MODELS.values():
        weights.add_row(s.name, s.weights, s.checkpoint)
    console.print(weights)
    recipe = Table(title="Fine-tuning (METHOD 4, 5b)", title_justify="left")
    for col in ("name", "timm architecture", "pooling", "batch", "epochs", "layer decay", "normalisation"):
        recipe.add_column(col, overflow="fold")
    for s in MODELS.values():
        norm = "ImageNet" if s.mean == IMAGENET_MEAN else f"{s.mean[0]:g}/{s.std[0]:g}"
        recipe.add_row(
            s.name, s.arch, s.pooling, str(s.batch_size), str(s.epochs),
            f"{s.layer_decay:g}" if s.layer_decay else "off", norm,
        )  # fmt: skip
    console.print(recipe)
    console.print(
        "All: AdamW (0.9, 0.95), weight decay 0.05, base lr 2.5e-4 x batch/256, 5 warm-up epochs + cosine, "
        "RandAugment m6, DropPath 0.2. Pooling avg = global average + fc_norm (as MAE), token = class token "
        "(as MoCo v3). Hub weights need network access once (then they are cached).",
        highlight=False,
        style="dim",
    )


@app.command("convert-remedis")
def convert_remedis(
    src: Annotated[
        Path, typer.Argument(help="REMEDIS TensorFlow SavedModel folder, or an .npz of its variables.")
    ],
    out: Annotated[Path, typer.Argument(help="The .safetensors file to write (then --weights FILE).")],
    arch: Annotated[str, typer.Option("--arch", help="timm ResNetV2 architecture.")] = "resnetv2_152x2_bit",
) -> None:
    """Convert REMEDIS weights to a timm safetensors file (a SavedModel needs TensorFlow; an .npz does not)."""
    from fairscan.errors import InputError
    from fairscan.io import check_output_file
    from fairscan.models.remedis import convert_remedis as convert

    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the output must be a .safetensors file")
    check_output_file(out, "OUT")
    summary = convert(src, out, arch=arch)
    err_console.print(f"converted {summary['tensors']} tensors for {arch}", highlight=False)
    console.print(str(out), highlight=False, soft_wrap=True)
