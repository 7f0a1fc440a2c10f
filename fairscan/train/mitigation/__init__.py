"""Bias mitigation during fine-tuning and fairness-aware checkpoint selection (``fairscan finetune --mitigation
NAME --group-attr ATTR --select ...``).

- ``options``: the settings (part of ``FinetuneConfig``), their defaults and the combinations refused;
- ``groups``: subgroups from a manifest attribute, and the rule for rows without one;
- ``methods``: the sampler (resample), loss weights (reweight), Group DRO's weights, the adversarial head;
- ``objective``: the supervised objective with subgroups (each method's loss, per-subgroup validation AUCs);
- ``select``: val_mean_auc, val_worst_group_auc and MEDFAIR's dto among a run's epochs.

The functions here are ``fairscan.train.finetune``'s hooks into it: :func:`check` (before any worker starts),
:func:`split` (the training rows and their groups), :func:`objective_for` and :func:`finish`. Nothing here
imports torch until a run needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairscan.train.mitigation.options import METHODS, SELECTIONS, MitigationOptions, resolve_mitigation

__all__ = ["METHODS", "SELECTIONS", "MitigationOptions", "resolve_mitigation", "check", "split", "objective_for",
           "finish"]  # fmt: skip


def uses_groups(cfg) -> bool:
    return cfg.group_attr is not None


def split(cfg, train_df, val_df, labels: list[str]):
    """The training rows to train on and their groups (None without ``--group-attr``); refuses bad groups."""
    if not uses_groups(cfg):
        return train_df, None
    from fairscan.train.mitigation.groups import training_groups
    from fairscan.train.mitigation.options import ERR_RESAMPLE_LABEL

    if (
        cfg.resample_by == "group-label"
        and cfg.resample_label is not None
        and cfg.resample_label not in labels
    ):
        from fairscan.errors import InputError

        raise InputError(
            ERR_RESAMPLE_LABEL.format(label=cfg.resample_label), hint=f"use one of {', '.join(labels)}"
        )
    return training_groups(train_df, val_df, attr=cfg.group_attr, age_bins=cfg.age_bins, method=cfg.mitigation,
                           manifest=str(cfg.manifest))  # fmt: skip


def check(cfg, model, train_df, val_df, labels: list[str]) -> None:
    """What the parent process checks before workers start: the groups, and the features an adversary reads."""
    split(cfg, train_df, val_df, labels)
    if cfg.mitigation == "adversarial":
        from fairscan.train.mitigation.methods import check_features

        check_features(model, cfg.arch, cfg.image_size)


def objective_for(
    cfg, model, labels: list[str], groups, train_set, *, accelerator, out: Path, to_input
):
    """The objective to train and the training sampler (None: the loop's shuffled epochs)."""
    from fairscan.train.supervised import Supervised

    if groups is None:
        return Supervised(model, labels, to_input=to_input, linear_probe=cfg.linear_probe), None
    from fairscan.train.mitigation import methods
    from fairscan.train.mitigation.objective import Mitigated, sampler

    if cfg.mitigation == "adversarial":
        width = methods.check_features(model, cfg.arch, cfg.image_size)
        model = methods.WithAttributeHead(model, features=width, groups=groups.count)
    objective = Mitigated(
        model, labels, groups=groups, cfg=cfg, targets=train_set.targets, accelerator=accelerator, out=out,
        linear_probe=cfg.linear_probe, to_input=to_input,
    )  # fmt: skip
    if objective.dro is not None:  # Group DRO's weights go into every checkpoint
        accelerator.register_for_checkpointing(objective)
    label = cfg.resample_label or labels[0]
    return objective, sampler(
        groups, train_set.targets, labels, cfg.model_copy(update={"resample_label": label})
    )


def facts(cfg, groups, labels: list[str]) -> dict[str, Any]:
    """What ``stage.json`` says about the method and the groups (beside the settings it records anyway)."""
    from fairscan.train.mitigation.options import method_settings

    if groups is None:
        return {}
    shown = method_settings(cfg)
    if "resample_label" in shown:
        shown["resample_label"] = cfg.resample_label or labels[0]
    return {"mitigation": {**shown, **groups.summary()}}


def finish(cfg, out: Path, groups, *, main: bool) -> dict[str, Any]:
    """The selection record (the choice, every evaluated epoch's values); for dto, the chosen epoch's weights
    become ``model.safetensors``."""
    from fairscan.train.mitigation.select import choose, epoch_records, finish_dto

    chosen, table = choose(epoch_records(out / "metrics.jsonl"), cfg.select, groups.names if groups else None)
    if cfg.select == "dto" and main and chosen is not None:
        finish_dto(out, chosen)
    row = next((r for r in table if r["epoch"] == chosen), {})
    return {"select": cfg.select, "split": "validate", "chosen_epoch": chosen,
            "chosen_val_mean_auc": row.get("val_mean_auc"), "epochs": table}  # fmt: skip
