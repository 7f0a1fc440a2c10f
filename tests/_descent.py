"""What holds for a training objective on any machine: its loss falls along its own gradient."""

import math

import torch


def descends(model, loss_of) -> tuple[float, float]:
    """The loss before and after a small step against its gradient, on the same batch and randomness.

    To first order a step of length eps lowers the loss by eps * |gradient|, so the loss falls on any machine
    (a tiny run's epoch losses, by contrast, follow a chaotic trajectory that differs between machines)."""
    torch.manual_seed(0)
    before = loss_of()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(before, params)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    assert math.isfinite(norm) and norm > 0
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= 1e-3 * g / norm
    torch.manual_seed(0)
    return before.item(), loss_of().item()
