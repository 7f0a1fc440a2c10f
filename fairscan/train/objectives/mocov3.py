"""MoCo v3 as a pre-training method: its settings and defaults, and how ``fairscan pretrain`` builds and trains it.

The module itself (``MoCoV3``, ``build_mocov3``, ``info_nce``, ...) is in ``_mocov3``; its names are available
here too. Defaults: the official ViT recipe (3-layer 4096/256 projector, 2-layer predictor, temperature 0.2,
momentum 0.99 rising to 1, weight decay 0.1 on every trained parameter); two views per image; no gradient
accumulation (:data:`NO_ACCUMULATION`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from fairscan.errors import InputError
from fairscan.train.pretrain import PretrainConfig

NAME, TITLE = "mocov3", "MoCo v3"
MODEL = "medical-mocov3"  # the registry entry that fine-tunes from a MoCo v3 encoder
POOLING = "token"  # class-token pooling, as MoCo v3's fine-tuning (METHOD 5b)
VIEWS = 2
NO_ACCUMULATION = (
    "MoCo v3 does not take gradient accumulation: its batch is the contrastive batch of one step across "
    "all processes, and accumulating micro-batches would not add negatives (each query would still be "
    "contrasted with its own micro-batch only)"
)
NO_ACCUMULATION_HINT = (
    "raise --batch-size or run on more processes (--gpus N); the keys are gathered across them"
)


class Settings(PretrainConfig):
    """A pre-training run with MoCo v3."""

    WEIGHT_DECAY: ClassVar[float] = 0.1

    method: Literal["mocov3"] = Field(description="The pre-training method: mae or mocov3.")
    proj_dim: int = Field(256, ge=1, description="MoCo v3 projection width.")
    mlp_dim: int = Field(4096, ge=1, description="MoCo v3 projector/predictor hidden width.")
    temperature: float = Field(0.2, gt=0, description="MoCo v3 InfoNCE temperature.")
    momentum: float = Field(0.99, ge=0, le=1, description="MoCo v3 momentum at the start (rises to 1).")

    def default_accum(self, batch: int) -> int:
        if self.accum not in (None, 1):
            raise InputError(NO_ACCUMULATION, hint=NO_ACCUMULATION_HINT)
        return 1


def build(cfg: Settings):
    """The MoCo v3 module for ``cfg`` (call after seeding)."""
    from fairscan.train.objectives._mocov3 import build_mocov3

    return build_mocov3(
        cfg.arch, img_size=cfg.image_size, dim=cfg.proj_dim, mlp_dim=cfg.mlp_dim, temperature=cfg.temperature,
        momentum=cfg.momentum,
    )  # fmt: skip


def prepare(model, *, total_steps: int, accelerator):
    """The momentum schedule spans the run; BatchNorm statistics over the global batch on GPUs, as official."""
    import torch

    model.total_steps = total_steps
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def loss(model, batch: dict[str, Any], module):
    """The loss of the prepared ``model`` (``module`` is the MoCoV3 itself), with the negatives each query met
    and the momentum of this step's update."""
    value, (_, _, k1, _) = model(batch["image"], return_outputs=True)
    return value, {"negatives": float(k1.shape[0]), "momentum": module.last_momentum}


def __getattr__(name: str):  # the module itself: mocov3.MoCoV3, mocov3.build_mocov3, ...
    from fairscan.train.objectives import _mocov3

    try:
        return getattr(_mocov3, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
