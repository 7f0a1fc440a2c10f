"""`fairscan finetune` and `fairscan predict`: thin wrappers over ``fairscan.train.finetune`` and ``.predict``;
their options are the settings models' fields (``fairscan.cli._options``)."""

from __future__ import annotations

from typing import Any

import typer

from fairscan.cli import _options as opt
from fairscan.cli._common import console, err_console, state

FINETUNE_HELP = """Fine-tune a named foundation model on a manifest's train split, selecting on validate.

Examples:

  fairscan finetune --model mae --manifest data/chexpert --out runs/mae

  fairscan finetune --model medical-mae --weights vit-b_CXR_0.5M_mae.pth --manifest data/chexpert --out runs/mmae --gpus 4

  fairscan finetune --model mae --arch vit_tiny_patch16_224 --image-size 64 --init random --epochs 2 --cpu --procs 2 --manifest data/synth --out runs/tiny

  fairscan finetune --out runs/mae --resume

  fairscan finetune --preset mae --mitigation groupdro --group-attr race --select dto --out runs/mae-dro
"""

PREDICT_HELP = """Score one split of a manifest with a fine-tuned run; writes the predictions format for `fairscan audit`.

Examples:

  fairscan predict runs/mae --manifest data/chexpert --split test -o preds/mae_test.parquet

  fairscan predict runs/mae --manifest data/chexpert --split validate -o preds/mae_val.parquet
"""


def training_command(stage: str, models: list[type], doc: str, check_typed=None):
    """A training stage's command: every setting of ``models`` as an option, plus --gpus, --resume, --break-lock,
    --allow-inexact-resume, --preset and --set. ``check_typed(typed, settings, name_of)`` may refuse options typed
    together with the settings they join (the preset's, say)."""
    fields = opt.fields_of(models)
    params = [opt.field_parameter(name, field) for name, field in fields.items()]
    extra = [opt.GPUS, opt.RESUME, opt.BREAK_LOCK, opt.ALLOW_INEXACT, opt.preset_option(stage), opt.SETS]

    def body(ctx: typer.Context, **values: Any) -> None:
        import importlib

        from fairscan.runs import MODEL_WEIGHTS, is_main_process
        from fairscan.train.stage import STAGES, run_stage

        the_stage = importlib.import_module(STAGES[stage]).STAGE
        given = opt.typed(ctx, fields, values)
        n = opt.processes(values["gpus"], given.get("procs"), given.get("cpu"))
        if n:
            given["procs"] = n
        typed = given
        given = opt.with_preset(given, values["preset"], values["sets"], stage)
        if check_typed is not None:
            check_typed(typed, given, opt.flag_namer(fields))
        out = opt.out_path(given)
        run_stage(
            the_stage, given, out=out, resume=values["resume"], break_lock=values["break_lock"],
            allow_inexact_resume=values["allow_inexact_resume"], console=err_console, debug=state.debug,
        )  # fmt: skip
        if is_main_process():  # under an outside launcher every process gets here
            console.print(str(out / MODEL_WEIGHTS), highlight=False, soft_wrap=True)

    return opt.command(body, [*params, *extra], doc)


def _finetune_command():
    from fairscan.train.finetune import FinetuneConfig

    return training_command("finetune", [FinetuneConfig], FINETUNE_HELP)


finetune = _finetune_command()


def _predict_command():
    from fairscan.train.predict import PredictConfig

    fields = opt.fields_of([PredictConfig])
    params = [opt.field_parameter(name, field) for name, field in fields.items()]

    def body(ctx: typer.Context, **values: Any) -> None:
        from fairscan.settings import validate
        from fairscan.train.predict import predict as run_predict

        given = opt.typed(ctx, fields, values)
        n = opt.processes(values["gpus"], given.get("procs"), given.get("cpu"))
        if n:
            given["procs"] = n
        cfg = validate(PredictConfig, given, flags=opt.flag_namer(fields))
        path = run_predict(cfg, console=err_console, debug=state.debug)
        if path is not None:
            console.print(str(path), highlight=False, soft_wrap=True)

    return opt.command(body, [*params, opt.GPUS], PREDICT_HELP)


predict = _predict_command()
