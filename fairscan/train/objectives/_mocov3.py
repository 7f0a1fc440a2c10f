"""The MoCo v3 objective for ViTs (Chen, Xie and He, 2021) on a timm encoder, as one ``nn.Module``.

``MoCoV3(encoder)`` holds a base encoder with a 3-layer projector and a 2-layer predictor, and a momentum
copy of encoder and projector that follows the base by an exponential moving average. Each image comes as
two augmented views; the loss is the symmetrised InfoNCE between the base branch's prediction for one view
and the momentum branch's projection of the other, at temperature 0.2, scaled by ``2 * T`` as in the
official code. Following the paper's stability recipe for ViTs, the patch projection is a frozen random
matrix and the position embedding a fixed 2-D sin-cos table.

Negatives: the momentum keys of every process are gathered (``accelerate.utils.gather``) when Accelerate has
started a process group, so each query is contrasted with the whole global batch, as in the official
code. The keys carry no gradient (the momentum branch is stop-gradient), so a plain gather is exact; each
process's loss covers its own queries and DDP's gradient averaging makes it the global mean. Without a
process group the same module runs in one process. This is also why MoCo v3 takes no gradient
accumulation: accumulating micro-batches averages gradients but does not add negatives, so the contrastive
batch would silently be the micro-batch (see ``mocov3.NO_ACCUMULATION``).

The momentum coefficient rises from 0.99 to 1 on a half cosine over the run. The module counts its own
training steps in a buffer (``step``, saved with the state so a resumed run continues the schedule), and
updates the momentum branch at the start of each training forward, before computing the keys, as the
official code does.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fairscan.errors import InputError
from fairscan.train.objectives._vit import (
    create_vit_encoder,
    freeze_sincos_pos_embed,
    patch_embed_fan,
    xavier_linear_init,
)

TEMPERATURE = 0.2
MOMENTUM = 0.99
PROJ_DIM = 256
MLP_DIM = 4096


def build_mlp(layers: int, in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """MoCo v3's MLP: bias-free linears, BatchNorm + ReLU between them, affine-free BatchNorm at the end."""
    mods: list[nn.Module] = []
    for i in range(layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == layers - 1 else hidden
        mods.append(nn.Linear(d_in, d_out, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        else:
            mods.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*mods)


def momentum_at(progress: float, base: float = MOMENTUM) -> float:
    """The momentum coefficient after ``progress`` (0..1) of the run: ``base`` rising to 1 on a half cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base)


@torch.no_grad()
def momentum_update(online: list[torch.Tensor], target: list[torch.Tensor], m: float) -> None:
    """``target <- m * target + (1 - m) * online``, in place, tensor by tensor."""
    torch._foreach_mul_(target, m)
    torch._foreach_add_(target, online, alpha=1.0 - m)


def gather_keys(k: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's keys, concatenated in rank order, and the offset of this process's own rows.

    Uses Accelerate's gather when a process group is up (Accelerate started it); in one process, the keys
    themselves. Every process must hold the same number of keys (the pretrain stage drops ragged last
    batches).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return k, 0
    from accelerate.utils import gather

    return gather(k.contiguous()), dist.get_rank() * k.shape[0]


def info_nce(
    q: torch.Tensor, k: torch.Tensor, temperature: float = TEMPERATURE, *, offset: int = 0
) -> torch.Tensor:
    """InfoNCE of queries ``q`` (N, d) against keys ``k`` (M, d); query i's positive is key ``offset + i``.

    Cosine similarities over ``temperature``, cross-entropy, times ``2 * temperature`` (MoCo v3's scaling,
    which keeps the gradient's size independent of the temperature). Computed in float32.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.t() / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


def init_moco_encoder(encoder: nn.Module) -> None:
    """MoCo v3's ViT initialisation, then the frozen random patch projection and fixed sin-cos positions.

    Linears are xavier-uniform, the fused qkv weight treated as three separate matrices; the class token is
    near zero; the patch projection is xavier-uniform, zero bias, and never trained.
    """
    for name, m in encoder.named_modules():
        if isinstance(m, nn.Linear) and name.endswith("qkv"):
            val = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
            nn.init.uniform_(m.weight, -val, val)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        else:
            xavier_linear_init(m)
    nn.init.normal_(encoder.cls_token, std=1e-6)
    proj = encoder.patch_embed.proj
    fan_in, fan_out = patch_embed_fan(encoder)
    val = math.sqrt(6.0 / float(fan_in + fan_out))
    nn.init.uniform_(proj.weight, -val, val)
    if proj.bias is not None:
        nn.init.zeros_(proj.bias)
        proj.bias.requires_grad_(False)
    proj.weight.requires_grad_(False)
    freeze_sincos_pos_embed(encoder)


class MoCoV3(nn.Module):
    """MoCo v3 around a timm ViT ``encoder`` (class-token features); ``forward(views)`` returns the loss."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        dim: int = PROJ_DIM,
        mlp_dim: int = MLP_DIM,
        temperature: float = TEMPERATURE,
        momentum: float = MOMENTUM,
        total_steps: int | None = None,
    ):
        super().__init__()
        if not temperature > 0.0:
            raise InputError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise InputError(f"momentum must lie in [0, 1], got {momentum}")
        init_moco_encoder(encoder)
        embed_dim = encoder.pos_embed.shape[-1]
        self.base_encoder = encoder
        self.base_projector = build_mlp(3, embed_dim, mlp_dim, dim)
        self.predictor = build_mlp(2, dim, mlp_dim, dim)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_projector = copy.deepcopy(self.base_projector)
        for p in [*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()]:
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.base_momentum = float(momentum)
        self.total_steps = total_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last_momentum: float | None = None  # the coefficient of the latest update (for logging)

    def _online(self) -> list[torch.Tensor]:
        return [*self.base_encoder.parameters(), *self.base_projector.parameters()]

    def _target(self) -> list[torch.Tensor]:
        return [*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()]

    def current_momentum(self) -> float:
        """The coefficient for the next update: fixed ``base_momentum`` until ``total_steps`` is set."""
        if not self.total_steps:
            return self.base_momentum
        return momentum_at(int(self.step) / self.total_steps, self.base_momentum)

    @torch.no_grad()
    def update_momentum(self, m: float | None = None) -> float:
        m = self.current_momentum() if m is None else m
        momentum_update([p.detach() for p in self._online()], [p.data for p in self._target()], m)
        return m

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.base_projector(self.base_encoder(x)))

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_encoder(x))

    def forward(
        self, views: torch.Tensor, second: torch.Tensor | None = None, *, return_outputs: bool = False
    ):
        """The symmetric loss for two views, given as (N, 2, C, H, W) or as two (N, C, H, W) tensors.

        In training mode the momentum branch is updated first (and the step counter advanced). With
        ``return_outputs`` also returns the queries and the gathered keys ``(q1, q2, k1, k2)``.
        """
        if second is None:
            if views.ndim != 5 or views.shape[1] != 2:
                raise InputError(f"MoCo v3 expects two views as (N, 2, C, H, W), got {tuple(views.shape)}")
            x1, x2 = views[:, 0], views[:, 1]
        else:
            x1, x2 = views, second
        q1, q2 = self.queries(x1), self.queries(x2)
        if self.training:
            self.last_momentum = self.update_momentum()
            self.step += 1
        k1, offset = gather_keys(self.keys(x1))
        k2, _ = gather_keys(self.keys(x2))
        loss = info_nce(q1, k2, self.temperature, offset=offset) + info_nce(
            q2, k1, self.temperature, offset=offset
        )
        return (loss, (q1, q2, k1, k2)) if return_outputs else loss

    # -- for the pretrain stage --------------------------------------------------------------------------
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The base encoder alone (no projector), in timm's key layout: what fine-tuning starts from."""
        return {k: v.detach().clone().contiguous() for k, v in self.base_encoder.state_dict().items()}

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """The official recipe decays every trained parameter; the frozen and momentum ones are left out."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def build_mocov3(
    arch: str = "vit_base_patch16_224",
    *,
    img_size: int = 224,
    dim: int = PROJ_DIM,
    mlp_dim: int = MLP_DIM,
    temperature: float = TEMPERATURE,
    momentum: float = MOMENTUM,
    total_steps: int | None = None,
) -> MoCoV3:
    """A MoCo v3 model around a fresh timm encoder named ``arch`` (class-token pooling) at ``img_size``."""
    encoder = create_vit_encoder(arch, img_size=img_size, global_pool="token")
    return MoCoV3(
        encoder, dim=dim, mlp_dim=mlp_dim, temperature=temperature, momentum=momentum, total_steps=total_steps
    )
