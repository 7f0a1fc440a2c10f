"""Supervised fine-tuning with subgroups: the mitigation method's loss and the per-subgroup validation AUCs that
fairness-aware selection reads, as a loop :class:`~fairscan.train.loop.Objective`.

``erm``'s loss is :func:`~fairscan.train.supervised.masked_bce` itself; ``resample`` changes only the sampler
(:func:`sampler`), so its loss is ERM's too. The objective's ``state_dict`` (Group DRO's weights) is registered
with Accelerate, so a checkpoint holds it and ``--resume`` restores it exactly.

With ``--linear-probe``, ``resample``, ``reweight`` and ``groupdro`` change what the head is fitted to and work
as with fine-tuning; ``adversarial`` is refused, since a frozen backbone's features cannot be changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairscan.train.loop import TrainConfig
from fairscan.train.mitigation import methods
from fairscan.train.mitigation.groups import TrainingGroups
from fairscan.train.mitigation.select import group_mean_aucs, keep_candidate
from fairscan.train.optim import param_groups
from fairscan.train.supervised import Supervised, gather_outputs, masked_bce, scores


class Mitigated(Supervised):
    """A :class:`Supervised` objective that knows each training and validation image's subgroup."""

    def __init__(
        self,
        model: nn.Module,
        labels: list[str],
        *,
        groups: TrainingGroups,
        cfg,
        targets: np.ndarray,
        accelerator=None,
        out=None,
        linear_probe: bool = False,
        to_input,
    ):
        super().__init__(model, labels, to_input=to_input, linear_probe=linear_probe)
        self.groups, self.method, self.select, self.out = groups, cfg.mitigation, cfg.select, out
        self.accelerator, self.last_eval = accelerator, None  # last_eval: this epoch's scores, for dto
        self.codes = torch.as_tensor(groups.train, dtype=torch.long)
        self.select_metric = {
            "val_mean_auc": "val_mean_auc",
            "val_worst_group_auc": "val_worst_group_auc",
            "dto": None,
        }[cfg.select]  # fmt: skip  (dto: chosen after the last epoch)
        self.progress = 0.0
        self.dro = self.weights = None
        if self.method == "reweight":
            self.weights = torch.from_numpy(
                methods.reweight_matrix(groups.train, targets, by=cfg.reweight_by)
            )
        elif self.method == "groupdro":
            self.dro = methods.GroupDRO(groups.train_sizes(), eta=cfg.groupdro_eta,
                                        adjustment=cfg.groupdro_c)  # fmt: skip
        self.lam = cfg.adv_lambda

    # -- the loop's hooks ---------------------------------------------------------------------------------

    def at_step(self, step: int, total: int) -> None:
        self.progress = step / max(1, total)

    def loss(self, model: nn.Module, batch: dict):
        x, y, rows = self.to_input(batch["image"]), batch["target"], batch["index"].cpu()
        if self.method == "adversarial":
            strength = methods.ganin_strength(self.progress, self.lam)
            logits, attr_logits = model(x, strength)
            codes = self.codes[rows].to(attr_logits.device)
            attr_loss = F.cross_entropy(attr_logits.float(), codes)
            task = masked_bce(logits.float(), y)
            return task + attr_loss, {"attribute_loss": float(attr_loss.detach()), "reversal": strength}
        logits = model(x).float()
        if self.method == "reweight":
            return methods.weighted_bce(logits, y, self.weights[rows].to(logits.device))
        if self.method == "groupdro":
            return self.dro.loss(logits, y, self.codes[rows].to(logits.device), self.accelerator)
        return masked_bce(logits, y)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        if self.method != "adversarial":
            return super().param_groups(cfg)
        head = self.model.attribute_head
        groups = param_groups(
            self.model.classifier, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay
        )
        return [*groups, {"params": [head.weight], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                {"params": [head.bias], "weight_decay": 0.0, "lr_scale": 1.0}]  # fmt: skip

    def evaluate(self, model: nn.Module, loader, accelerator) -> dict[str, Any]:
        idx, logits, targets = gather_outputs(model, loader, accelerator, self.to_input)
        probs = 1.0 / (1.0 + np.exp(-logits))
        by_group, worst = group_mean_aucs(
            probs, targets, self.groups.validate[idx], self.groups.names, self.labels
        )
        self.last_eval = {**scores(logits, targets, self.labels), "val_group_mean_auc": by_group,
                          "val_worst_group_auc": worst}  # fmt: skip
        return self.last_eval

    def on_epoch_end(self, unwrapped: nn.Module, epoch: int, accelerator) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.dro is not None:
            extra["groupdro_weights"] = self.dro.weights(self.groups.names)
        if self.select == "dto" and accelerator.is_main_process and self.last_eval is not None:
            keep_candidate(self.out, epoch, self.last_eval, self.groups.names, self.export(unwrapped))
        self.last_eval = None
        return extra

    def export(self, unwrapped: nn.Module) -> dict[str, torch.Tensor]:
        inner = unwrapped.classifier if isinstance(unwrapped, methods.WithAttributeHead) else unwrapped
        return inner.state_dict()

    # -- state, for checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return self.dro.state_dict() if self.dro is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.dro is not None:
            self.dro.load_state_dict(state)


def sampler(groups: TrainingGroups, targets: np.ndarray, labels: list[str], cfg):
    """The training sampler of ``resample`` (None: the loop's own shuffled epochs)."""
    if cfg.mitigation != "resample":
        return None
    column = targets[:, labels.index(cfg.resample_label)] if cfg.resample_by == "group-label" else None
    return methods.GroupSampler(methods.label_strata(groups.train, column), seed=cfg.seed)
