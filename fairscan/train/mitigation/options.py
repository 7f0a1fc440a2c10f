"""The settings of bias mitigation and fairness-aware checkpoint selection, declared once (no torch here: the
command line imports this module for its options).

:class:`MitigationOptions` is a part of :class:`~fairscan.train.finetune.FinetuneConfig`: presets set these keys
in their ``finetune:`` block, the command line derives ``--mitigation``, ``--group-attr``, ... from them, and
``stage.json`` records them with every other setting. A method's hyperparameters are named as in its paper and
default to ``None`` ("the method's default"); :func:`resolve_mitigation` fills in the chosen method's defaults
and refuses hyperparameters of a method that is not chosen, so the record says exactly what ran.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fairscan.errors import InputError
from fairscan.settings import Settings

METHODS = ("erm", "resample", "reweight", "groupdro", "adversarial")
SELECTIONS = ("val_mean_auc", "val_worst_group_auc", "dto")

# Each method's hyperparameters and their defaults (the papers' own where they give one).
DEFAULTS: dict[str, dict[str, Any]] = {
    "erm": {},
    "resample": {"resample_by": "group"},
    "reweight": {"reweight_by": "group"},
    # Sagawa et al. 2020: eta 0.01, C from {0, 1, 2, 3, 4, 5} (0: no adjustment); their "strong l2 penalty" is a
    # weight decay of 1.0 (for SGD); here AdamW's decoupled decay of 1.0, unless the run sets one.
    "groupdro": {"groupdro_eta": 0.01, "groupdro_c": 0.0},
    # Ganin et al. 2016: lambda_p = 2 / (1 + exp(-10 p)) - 1, scaled by lambda (1.0 in the paper).
    "adversarial": {"adv_lambda": 1.0},
}
GROUPDRO_WEIGHT_DECAY = 1.0

ERR_NEEDS_GROUPS = "{what} needs --group-attr (the manifest attribute whose subgroups it uses)"
HINT_NEEDS_GROUPS = "add --group-attr race (or sex, age, sex+race)"
ERR_OTHER_METHOD = "{option} is a setting of --mitigation {owner}, but this run uses --mitigation {method}"
ERR_LINEAR_PROBE_ADV = (
    "--mitigation adversarial cannot work with --linear-probe: the backbone is frozen, so reversing the "
    "attribute head's gradient cannot change the features it reads"
)
ERR_RESAMPLE_LABEL = "--resample-label {label!r} is not one of this run's labels"


class MitigationOptions(Settings):
    """Bias mitigation during fine-tuning, and how the exported epoch is chosen."""

    mitigation: Literal["erm", "resample", "reweight", "groupdro", "adversarial"] = Field(
        "erm", description="erm (plain), resample, reweight, groupdro or adversarial."
    )
    group_attr: str | None = Field(
        None, description="Manifest attribute of the subgroups: race, sex, age (binned), sex+race."
    )
    age_bins: list[float] = Field(
        default_factory=lambda: [40.0, 60.0, 80.0], description="Age bin edges for --group-attr age."
    )
    resample_by: Literal["group", "group-label"] | None = Field(
        None, description="resample: balance subgroups, or subgroup x class of --resample-label."
    )
    resample_label: str | None = Field(
        None, description="resample by group-label: the label (default: the first)."
    )
    reweight_by: Literal["group", "group-label"] | None = Field(
        None, description="reweight: N/(G n_g) per subgroup, or per subgroup x class of each label."
    )
    groupdro_eta: float | None = Field(
        None, gt=0, le=10, description="groupdro: step size eta of the group weights (0.01)."
    )
    groupdro_c: float | None = Field(
        None, ge=0, le=100, description="groupdro: group adjustment C, adds C/sqrt(n_g) to each loss (0)."
    )
    adv_lambda: float | None = Field(
        None, gt=0, le=100, description="adversarial: gradient-reversal strength lambda (1.0)."
    )
    select: Literal["val_mean_auc", "val_worst_group_auc", "dto"] = Field(
        "val_mean_auc", description="Epoch to export: val_mean_auc, val_worst_group_auc or dto."
    )


def _owner(option: str) -> str | None:
    return next((m for m, d in DEFAULTS.items() if option in d), None)


def resolve_mitigation(values: dict[str, Any], *, labels: list[str] | None = None) -> dict[str, Any]:
    """``values`` with the chosen method's defaults filled in; an InputError for settings that cannot go
    together (a group-based method or selection without groups, another method's hyperparameter)."""
    from fairscan.settings import option_of

    fields = MitigationOptions.model_fields
    method = values.get("mitigation") or "erm"
    for option, value in values.items():
        owner = _owner(option)
        if value is not None and owner is not None and owner != method:
            raise InputError(
                ERR_OTHER_METHOD.format(option=option_of(fields, option), owner=owner, method=method),
                hint=f"drop {option_of(fields, option)}, or add --mitigation {owner}",
            )
    if values.get("resample_label") is not None and values.get("resample_by") != "group-label":
        raise InputError(
            "--resample-label applies to --resample-by group-label", hint="add --resample-by group-label"
        )
    if values.get("group_attr") is None:
        if method != "erm":
            raise InputError(ERR_NEEDS_GROUPS.format(what=f"--mitigation {method}"), hint=HINT_NEEDS_GROUPS)
        if values.get("select", "val_mean_auc") != "val_mean_auc":
            raise InputError(
                ERR_NEEDS_GROUPS.format(what=f"--select {values['select']}"), hint=HINT_NEEDS_GROUPS
            )
    if method == "adversarial" and values.get("linear_probe"):
        raise InputError(
            ERR_LINEAR_PROBE_ADV,
            hint="fine-tune the whole model (drop --linear-probe), or use "
            "resample, reweight or groupdro, which change the head's loss and work with a probe",
        )
    out = dict(values)
    for option, default in DEFAULTS[method].items():
        if out.get(option) is None:
            out[option] = default
    # not under --linear-probe: MAE's probe fits its head without weight decay, whatever the setting says
    if method == "groupdro" and out.get("weight_decay") is None and not out.get("linear_probe"):
        out["weight_decay"] = GROUPDRO_WEIGHT_DECAY
    if labels is not None and out.get("resample_by") == "group-label":
        if out.get("resample_label") is None:
            out["resample_label"] = labels[0]
        elif out["resample_label"] not in labels:
            raise InputError(
                ERR_RESAMPLE_LABEL.format(label=out["resample_label"]), hint=f"use one of {', '.join(labels)}"
            )
    return out


def method_settings(cfg) -> dict[str, Any]:
    """The settings of the method a run uses (what ``stage.json`` shows under ``mitigation``)."""
    keys = ["mitigation", "group_attr", *DEFAULTS[cfg.mitigation]]
    if cfg.resample_by == "group-label":
        keys.append("resample_label")
    if cfg.mitigation == "groupdro":
        keys.append("weight_decay")
    return {k: getattr(cfg, k) for k in keys}
