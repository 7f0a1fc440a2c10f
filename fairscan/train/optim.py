"""Optimisers and the learning-rate schedule (METHOD section 4).

- :func:`param_groups`: layer-wise lr decay over the model's own ``group_matcher`` (ViT: patch embedding, then
  one layer per block; ResNet: stem, then one layer per stage), the head and final norm on top at scale 1, and
  the layer ``k`` below the top at ``decay ** k``. No weight decay on 1-D parameters (biases, norms) nor on
  the model's ``no_weight_decay()`` set (position embedding, class token). Each group carries ``lr_scale``.
- :func:`build_optimizer`: AdamW (betas 0.9/0.95; PyTorch's fused kernel where the parameters' device has
  one) or LARS (linear probing, as MAE's).
- :func:`lr_at`: linear warm-up, then a half-cosine to ``min_lr``, evaluated per optimiser step; the loop sets
  ``group["lr"] = lr_at(step) * group["lr_scale"]`` before every step, so a resumed run needs only the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """{parameter name: layer id} and the number of layers, from timm's ``group_matcher``.

    ViTs group finely (one id per block); ResNets coarsely (one id per stage), as the issue asks. Parameters
    the matcher leaves out (the classifier, ``fc_norm``) get the top id.
    """
    from timm.models import group_parameters

    coarse = not hasattr(model, "blocks")  # ViTs have .blocks; ResNetV2s group by stage
    mapping = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
    top = max(mapping.values()) if mapping else 0
    names = [n for n, _ in model.named_parameters()]
    ids = {n: mapping.get(n, top) for n in names}
    return ids, top + 1


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None = None,
    trainable_only: bool = True,
) -> list[dict]:
    """Parameter groups with ``lr_scale`` (layer-wise decay) and weight decay (none on 1-D parameters)."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    if layer_decay is not None and layer_decay != 1.0:
        ids, n_layers = layer_ids(model)
    else:
        ids, n_layers = {}, 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        layer = ids.get(name, n_layers - 1)
        no_decay = p.ndim <= 1 or name in skip
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (n_layers - 1 - layer) if ids else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "layer": layer,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as MAE's linear probing uses it: SGD with momentum whose update for each matrix
    is scaled by ``trust_coefficient * |w| / |update|``. 1-D parameters (biases, norms) skip both weight decay
    and the trust ratio, as in MAE's ``util/lars.py``."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):  # fmt: skip
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    trust = g["trust_coefficient"] * param_norm / update_norm
                    q = torch.where(param_norm > 0.0, torch.where(update_norm > 0, trust, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def build_optimizer(
    name: str, groups: Iterable[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
    if name == "adamw":
        # The fused kernel does the whole update in one pass over each tensor: on CPU it is ~3.5x faster than
        # the default per-parameter loop for ViT-B (0.09 vs 0.32 s a step), which is 5-10% of a pre-training
        # step. Devices without one (or non-float parameters) get PyTorch's default implementation.
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
        except RuntimeError:
            return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "lars":
        return LARS(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_at(step: int, *, total: int, warmup: int, lr: float, min_lr: float = 0.0) -> float:
    """The learning rate for optimiser step ``step`` (0-based) of ``total``: linear warm-up, then cosine."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
