"""MAE as a pre-training method: its settings and defaults, and how ``fairscan pretrain`` builds and trains it.

The masked autoencoder itself (``MAE``, ``build_mae``, ``patchify``, ...) is in ``_mae``; its names are
available here too. Defaults: the official recipe (mask ratio 0.75 -- Medical MAE used 0.90 --, decoder 8 x 512,
normalised-pixel loss, weight decay 0.05 on all but biases and norms), and gradient accumulation up to the
effective batch with micro-batches of at most 64 images per process.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from fairscan.train.pretrain import PretrainConfig, auto_accum

NAME, TITLE = "mae", "MAE"
MODEL = "medical-mae"  # the registry entry that fine-tunes from an MAE encoder
POOLING = "avg"  # global average pooling + fc_norm, as MAE's fine-tuning (METHOD 5b)
VIEWS = 1


class Settings(PretrainConfig):
    """A pre-training run with MAE."""

    WEIGHT_DECAY: ClassVar[float] = 0.05

    method: Literal["mae"] = Field(description="The pre-training method: mae or mocov3.")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="MAE: share of patches hidden (Medical MAE 0.90).")
    norm_pix_loss: bool = Field(True, description="MAE: score per-patch normalised pixels.")
    decoder_dim: int | None = Field(None, ge=1, description="MAE decoder width (512; narrower for small ViTs).")
    decoder_depth: int | None = Field(None, ge=1, description="MAE decoder blocks (8; fewer for small ViTs).")
    decoder_heads: int | None = Field(None, ge=1, description="MAE decoder attention heads (16).")

    def default_accum(self, batch: int) -> int:
        return self.accum or auto_accum(batch, self.procs)


def build(cfg: Settings):
    """The MAE module for ``cfg`` (call after seeding)."""
    from fairscan.train.objectives._mae import build_mae

    return build_mae(
        cfg.arch, img_size=cfg.image_size, mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim,
        decoder_depth=cfg.decoder_depth, decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss,
    )  # fmt: skip


def prepare(model, *, total_steps: int, accelerator):
    return model


def loss(model, batch: dict[str, Any], module):
    """The loss of the prepared ``model`` (``module`` is the MAE itself)."""
    return model(batch["image"])


def __getattr__(name: str):  # the module itself: mae.MAE, mae.build_mae, mae.patchify, ...
    from fairscan.train.objectives import _mae

    try:
        return getattr(_mae, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
