"""Supervised multi-label fine-tuning and linear probing as a loop :class:`~fairscan.train.loop.Objective`.

The loss is binary cross-entropy over the labels, masked where the label policy left a label empty (NaN), and
averaged over the labels that count. Evaluation gathers every validation image exactly once
(``gather_for_metrics``) and reports each label's AUC and their mean over the labels with both classes
present; the mean AUC on the validation split selects the model (never the test split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairscan.data.device_input import DeviceInput
from fairscan.models.build import classifier, classifier_name
from fairscan.train.loop import Objective, TrainConfig
from fairscan.train.optim import param_groups


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the (image, label) pairs whose target is not NaN."""
    mask = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def label_aucs(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict[str, float | None]:
    """AUC per label over the rows with a target; None where a label lacks positives or negatives."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, float | None] = {}
    for j, lab in enumerate(labels):
        keep = ~np.isnan(targets[:, j])
        y = targets[keep, j]
        out[lab] = float(roc_auc_score(y, probs[keep, j])) if 0 < y.sum() < len(y) else None
    return out


@torch.inference_mode()
def gather_outputs(model: nn.Module, loader, accelerator, to_input: DeviceInput, on_batch=None):
    """(indices, outputs, targets) over a loader, every sample exactly once across processes; ``to_input`` makes
    the model's input of each uint8 batch on the device; ``on_batch()`` after each batch (a progress bar)."""
    from fairscan.train import timing

    idx, logits, targets = [], [], []
    for batch in timing.timed(loader):  # as it was, unless a benchmark is recording
        out = model(to_input(batch["image"])).float()
        i, z, t = accelerator.gather_for_metrics((batch["index"], out, batch["target"]))
        idx.append(i.cpu())
        logits.append(z.cpu())
        targets.append(t.cpu())
        timing.step_done("inference")
        if on_batch is not None:
            on_batch()
    return torch.cat(idx).numpy(), torch.cat(logits).numpy(), torch.cat(targets).numpy()


class Supervised(Objective):
    select_metric = "val_mean_auc"
    select_mode = "max"

    def __init__(
        self, model: nn.Module, labels: list[str], *, to_input: DeviceInput, linear_probe: bool = False
    ):
        super().__init__(model)
        self.labels = list(labels)
        self.linear_probe = linear_probe
        self.to_input = to_input  # uint8 grey batches to the model's normalised input, on the device

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return masked_bce(model(self.to_input(batch["image"])).float(), batch["target"])

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        if self.linear_probe:  # the head alone, no weight decay (MAE's linear probe)
            prefix = classifier_name(self.model) + "."
            params = [p for n, p in self.model.named_parameters() if n.startswith(prefix)]
            return [{"params": params, "weight_decay": 0.0, "lr_scale": 1.0}]
        return param_groups(self.model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)

    def train_mode(self, unwrapped: nn.Module) -> None:
        if self.linear_probe:  # frozen backbone: no dropout, no DropPath, no running-statistics updates
            unwrapped.eval()
            classifier(unwrapped).train()

    def evaluate(self, model: nn.Module, loader, accelerator) -> dict[str, Any]:
        _, logits, targets = gather_outputs(model, loader, accelerator, self.to_input)
        return scores(logits, targets, self.labels)


def scores(logits: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The validation metrics of a model's logits: loss, each label's AUC and their mean (which selects)."""
    loss = float(masked_bce(torch.from_numpy(logits), torch.from_numpy(targets)))
    aucs = label_aucs(1.0 / (1.0 + np.exp(-logits)), targets, labels)
    present = [v for v in aucs.values() if v is not None]
    mean = float(np.mean(present)) if present else float("nan")
    return {"val_mean_auc": mean, "val_loss": loss, "val_auc": aucs, "val_images": int(len(targets))}
