"""The mitigation methods themselves: a sampler, loss weights, Group DRO's weights and an adversarial head.

- :class:`GroupSampler` (``resample``; RWG of Idrissi et al. 2022): each epoch draws ``n`` rows (the training
  split's size) so that each stratum (subgroup, or subgroup x class of one label) is drawn ``floor(n / G)`` or
  ``ceil(n / G)`` times, the ``n mod G`` extra draws going to strata chosen at random; within a stratum rows are
  taken from shuffled passes over it (so a row is drawn ``floor`` or ``ceil`` of ``count / size`` times). Keys are
  ``(epoch, row)`` like :class:`fairscan.data.dataset.EpochSampler`, from a generator seeded by
  ``(seed, epoch)``: every process draws the same order and a resumed run draws it again.
- :func:`reweight_matrix` (``reweight``): the loss weight of each (image, label) pair, ``N / (G n_g)`` for the
  image's subgroup (mean 1 over the images: each subgroup's weights sum to ``N / G``); by ``group-label``,
  per label ``N_j / (K_j n_gc)`` over the ``K_j`` non-empty subgroup x class cells of the images with that
  label (mean 1 over those images).
- :class:`GroupDRO` (Sagawa et al. 2020): weights ``q`` over subgroups, updated at every micro-batch by
  ``q_g <- q_g exp(eta (L_g + C / sqrt(n_g)))`` and renormalised, where ``L_g`` is the group's mean masked BCE
  in the batch (summed over every process, so all processes hold the same ``q``); a group absent from the batch
  keeps its weight (the present groups share the rest). The loss is ``sum_g q_g (L_g + C / sqrt(n_g))``.
- :class:`WithAttributeHead` (``adversarial``; Ganin et al. 2016): a linear attribute head on the pooled
  features (timm's ``forward_head(pre_logits=True)``) behind a gradient-reversal layer of strength
  ``lambda * (2 / (1 + exp(-10 p)) - 1)``, ``p`` the share of the run's optimiser steps done.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairscan.errors import InputError

ERR_NO_FEATURES = (
    "--mitigation adversarial: {arch} gives no pooled feature vector to put an attribute head on "
    "(forward_head(pre_logits=True) returns {shape})"
)

# ------------------------------------------------------------------------------------------------ resample


def label_strata(codes: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
    """Stratum per row: the subgroup, or (with one label's targets) subgroup x {0, 1, missing}."""
    if targets is None:
        return codes.astype(np.int64)
    cls = np.where(np.isnan(targets), 2, targets > 0.5).astype(np.int64)
    return codes.astype(np.int64) * 3 + cls


class GroupSampler:
    """Stratified per-epoch draws: each non-empty stratum ``floor(n / G)`` or ``ceil(n / G)`` times."""

    def __init__(self, strata: np.ndarray, seed: int = 0):
        self.strata = np.asarray(strata, dtype=np.int64)
        self.members = [np.flatnonzero(self.strata == s) for s in np.unique(self.strata)]
        self.n, self.seed, self.epoch = len(self.strata), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def draws(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 7_919)
        k = len(self.members)
        counts = [self.n // k] * k
        for s in torch.randperm(k, generator=g)[: self.n % k].tolist():
            counts[s] += 1
        rows: list[int] = []
        for members, count in zip(self.members, counts):
            passes = -(-count // len(members))
            order = torch.cat([torch.randperm(len(members), generator=g) for _ in range(passes)])[:count]
            rows.extend(members[order.numpy()].tolist())
        return [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.draws(self.epoch)])


# ------------------------------------------------------------------------------------------------ reweight


def reweight_matrix(codes: np.ndarray, targets: np.ndarray, *, by: str) -> np.ndarray:
    """Loss weights per (image, label), float32, shape of ``targets`` (0 where the target is missing)."""
    n, labels = targets.shape
    if by == "group":
        sizes = np.bincount(codes)
        present = int((sizes > 0).sum())
        w = n / (present * sizes[codes])
        return np.repeat(w[:, None], labels, axis=1).astype(np.float32)
    out = np.zeros(targets.shape, dtype=np.float64)
    for j in range(labels):
        have = ~np.isnan(targets[:, j])
        cells = codes[have] * 2 + (targets[have, j] > 0.5)
        sizes = np.bincount(cells)
        out[have, j] = have.sum() / ((sizes > 0).sum() * sizes[cells])
    return out.astype(np.float32)


def pair_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (image, label) pair's BCE (0 where masked) and the mask, both (batch, labels) float."""
    mask = (~torch.isnan(targets)).float()
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return loss * mask, mask


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Masked BCE with per-pair weights, normalised by the number of pairs (so weights of mean 1 keep the
    loss's scale, and the batch's effective subgroup masses are the weights' own)."""
    loss, mask = pair_losses(logits, targets)
    return (loss * weights).sum() / mask.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------ groupdro


class GroupDRO:
    """Online Group DRO weights; ``state_dict``/``load_state_dict`` let Accelerate checkpoint them exactly."""

    def __init__(self, sizes: np.ndarray, *, eta: float, adjustment: float):
        self.eta = float(eta)
        self.q = torch.full((len(sizes),), 1.0 / len(sizes), dtype=torch.float64)
        self.adjust = torch.as_tensor(adjustment / np.sqrt(np.maximum(sizes, 1)), dtype=torch.float64)

    def state_dict(self) -> dict:
        return {"q": self.q.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.q = state["q"].clone().to(torch.float64)

    def update(self, group_loss: torch.Tensor, present: torch.Tensor) -> None:
        """One exponentiated-gradient step on the groups present; absent groups keep their weight."""
        if not bool(present.any()):
            return
        q = self.q.clone()
        stepped = q * torch.exp(self.eta * (group_loss.double() + self.adjust))
        mass = q[present].sum()
        q[present] = stepped[present] * mass / stepped[present].sum()
        self.q = q

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, codes: torch.Tensor, accelerator
    ) -> torch.Tensor:
        """Update ``q`` from this batch (over every process), then the robust loss whose gradient, averaged over
        the processes, is that of ``sum_g q_g L_g`` over the whole distributed batch."""
        pairs, mask = pair_losses(logits, targets)
        one_hot = F.one_hot(codes, len(self.q)).to(pairs.dtype)  # (batch, G)
        sums = one_hot.T @ pairs.sum(1)  # per group: sum of the pairs' losses (with gradient)
        counts = one_hot.T @ mask.sum(1)
        stats = torch.stack([sums.detach(), counts]).float()
        if accelerator.num_processes > 1:
            stats = accelerator.reduce(stats, reduction="sum")
        total_sums, total_counts = stats[0].cpu(), stats[1].cpu()
        present = total_counts > 0
        self.update(torch.where(present, total_sums / total_counts.clamp(min=1), 0.0), present)
        q = self.q.to(pairs.device, pairs.dtype)
        adjusted = (q * self.adjust.to(pairs.device, pairs.dtype) * present.to(pairs.device)).sum()
        scale = accelerator.num_processes / total_counts.to(pairs.device).clamp(min=1)
        return (q * sums * scale).sum() + adjusted

    def weights(self, names: list[str]) -> dict[str, float]:
        return {name: float(v) for name, v in zip(names, self.q.tolist())}


# --------------------------------------------------------------------------------------------- adversarial


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The identity forward; the gradient times ``-strength`` backward (Ganin's gradient-reversal layer)."""
    return _Reverse.apply(x, strength)


def ganin_strength(progress: float, lam: float) -> float:
    """``lam * (2 / (1 + exp(-10 p)) - 1)``: 0 at the start, rising to ``lam``."""
    return lam * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


def pooled_features(classifier: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits, pooled features) from one pass through the backbone."""
    feats = classifier.forward_features(x)
    return classifier.forward_head(feats), classifier.forward_head(feats, pre_logits=True)


def check_features(classifier: nn.Module, arch: str, image_size: int) -> int:
    """The width of the pooled features an attribute head reads; an InputError where there are none."""
    shape = "nothing"
    if hasattr(classifier, "forward_features") and hasattr(classifier, "forward_head"):
        was = classifier.training
        classifier.eval()
        with torch.no_grad():
            _, pooled = pooled_features(classifier, torch.zeros(2, 3, image_size, image_size))
        classifier.train(was)
        shape = tuple(pooled.shape)
        if pooled.ndim == 2 and pooled.shape[1] == getattr(classifier, "num_features", -1):
            return int(pooled.shape[1])
    raise InputError(
        ERR_NO_FEATURES.format(arch=arch, shape=shape),
        hint="use a timm ViT or ResNet(V2) with average or class-token pooling, or another --mitigation",
    )


class WithAttributeHead(nn.Module):
    """A timm classifier and an attribute head on its pooled features. ``forward(x)`` is the classifier's
    (evaluation, prediction); ``forward(x, strength)`` also returns the attribute logits, behind gradient
    reversal. One ``forward`` for both, so that DDP sees every call."""

    def __init__(self, classifier: nn.Module, *, features: int, groups: int):
        super().__init__()
        self.classifier = classifier
        self.attribute_head = nn.Linear(features, groups)

    def forward(self, x: torch.Tensor, strength: float | None = None):
        if strength is None:
            return self.classifier(x)
        logits, pooled = pooled_features(self.classifier, x)
        return logits, self.attribute_head(reverse_gradient(pooled, strength))
