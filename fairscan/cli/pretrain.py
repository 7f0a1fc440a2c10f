"""`fairscan pretrain`: a thin wrapper over ``fairscan.train.pretrain`` (MAE or MoCo v3 on a ViT encoder); its
options are every method's settings (``fairscan.train.objectives``)."""

from __future__ import annotations

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


def _other_methods(typed: dict, settings: dict, name_of) -> None:
    """Options of another method typed on the command line are errors, never silently ignored. (Presets may
    carry both methods' keys from 0.1; those are dropped with a warning, see ``PretrainConfig.upgrade``.)"""
    from fairscan.errors import InputError
    from fairscan.train.objectives import METHODS, method

    if settings.get("method") not in METHODS:
        return
    chosen = method(settings["method"]).Settings
    wrong = [k for k in typed if k not in chosen.model_fields]
    if wrong:
        owners = [method(m).TITLE for m in METHODS if any(k in method(m).Settings.model_fields for k in wrong)]
        raise InputError(
            f"{', '.join(map(name_of, wrong))} {'applies' if len(wrong) == 1 else 'apply'} to {' and '.join(owners)} "
            f"only, not to --method {settings['method']}",
            hint="each method takes its own options (see `fairscan pretrain --help`)",
        )


def _pretrain_command():
    from fairscan.cli.finetune import training_command
    from fairscan.train.objectives import METHODS, method

    models = [method(name).Settings for name in METHODS]
    return training_command("pretrain", models, PRETRAIN_HELP, check_typed=_other_methods)


pretrain = _pretrain_command()
