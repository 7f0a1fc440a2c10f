"""`fairscan embed`: a thin wrapper over ``fairscan.representations.embed``; its options are the settings' fields."""

from __future__ import annotations

from typing import Any

import typer

from fairscan.cli import _options as opt
from fairscan.cli._common import console, err_console, state

EMBED_HELP = """Write the features of every image of a manifest split, for `fairscan probe` and `fairscan inspect`.

From a run folder: the input of its classifier head. From --model: the named foundation model used frozen, pooled as its recipe pools (MAE family: average of the patch tokens; MoCo v3: class token), or as --pool says.

Examples:

  fairscan embed runs/mae --manifest data/chexpert --split test -o feats.parquet

  fairscan embed --model medical-mae --weights vit-b_CXR_0.5M_mae.pth --manifest data/chexpert -o feats.parquet --gpus 4

  fairscan embed --model mocov3 --weights vit-b-300ep.pth.tar --pool avg --manifest data/chexpert -o feats.parquet --float16

  fairscan embed --preset medical-mae -o feats/medical-mae_frozen.parquet     # a fine-tuning preset's model, frozen
"""

PRESET = opt.preset_option("finetune")  # its model, weights, architecture, image size and manifest, frozen
FROM_PRESET = ("model", "weights", "init", "arch", "image_size", "manifest")


def _embed_command():
    from fairscan.representations.embed import EmbedConfig

    fields = opt.fields_of([EmbedConfig])
    params = [opt.field_parameter(name, field) for name, field in fields.items()]

    def body(ctx: typer.Context, **values: Any) -> None:
        from fairscan.representations.embed import embed as run_embed
        from fairscan.settings import validate

        given = opt.typed(ctx, fields, values)
        if values["preset"]:
            given = {**_frozen_preset(values["preset"], given), **given}
        n = opt.processes(values["gpus"], given.get("procs"), given.get("cpu"))
        if n:
            given["procs"] = n
        cfg = validate(EmbedConfig, given, flags=opt.flag_namer(fields))
        path = run_embed(cfg, console=err_console, debug=state.debug)
        if path is not None:
            console.print(str(path), highlight=False, soft_wrap=True)

    return opt.command(body, [*params, PRESET, opt.GPUS], EMBED_HELP)


def _frozen_preset(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The frozen model a finetune preset names (its model, weights or init, architecture, image size) and its
    manifest, under the options typed on the command line."""
    from fairscan.config import load_preset
    from fairscan.errors import InputError

    if given.get("run") is not None:
        raise InputError(
            "--preset names a frozen model; a run folder is already a model", hint="drop one of them"
        )
    preset = load_preset(name)
    if preset.stage != "finetune":
        raise InputError(
            f"preset {preset.name} is a {preset.stage} preset",
            hint="give a finetune preset, e.g. --preset medical-mae",
        )
    cfg = preset.finetune_config()
    return {k: getattr(cfg, k) for k in FROM_PRESET if getattr(cfg, k) is not None}


embed = _embed_command()
