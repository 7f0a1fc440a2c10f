"""The masked-autoencoder objective (He et al., 2022) on a timm ViT encoder, as one ``nn.Module``.

``MAE(encoder)`` hides a fixed share of each image's patches at random, encodes only the visible ones with
the ViT, lets a light transformer decoder predict every patch's pixels, and scores the prediction on the
hidden patches alone against per-patch normalised pixels ("norm_pix_loss", as the official pre-training
runs). Position embeddings are fixed 2-D sin-cos tables in both encoder and decoder.

The encoder stays an ordinary timm ``VisionTransformer``: ``mae.encoder.state_dict()`` is the pre-trained
backbone in timm's key layout, which is what ``fairscan pretrain`` saves and ``fairscan finetune`` loads.

Defaults follow the official recipe (mask ratio 0.75; decoder 8 blocks x 512 wide x 16 heads for ViT-B and
larger); Medical MAE (Xiao et al., 2023) used mask ratio 0.90. For encoders narrower than ViT-B the decoder
is scaled down (see :func:`resolve_decoder`), an assumption of fairscan's made so that tiny test models stay
tiny.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from fairscan.errors import InputError
from fairscan.train.objectives._vit import (
    create_vit_encoder,
    embed_patches,
    encode_tokens,
    freeze_sincos_pos_embed,
    sincos_pos_embed_2d,
    xavier_linear_init,
)

MASK_RATIO_MAE = 0.75
MASK_RATIO_MEDICAL_MAE = 0.90
DEFAULT_DECODER = (512, 8, 16)  # width, blocks, heads: the official decoder for ViT-B/L/H
BAD_MASK_RATIO = "mask ratio must lie strictly between 0 and 1, got {ratio}"
TOO_FEW_PATCHES = "mask ratio {ratio} keeps no patch of the {n} per image"


@dataclass(frozen=True)
class DecoderSpec:
    dim: int
    depth: int
    heads: int


def resolve_decoder(
    embed_dim: int, *, dim: int | None = None, depth: int | None = None, heads: int | None = None
) -> DecoderSpec:
    """Fill unset decoder options from the encoder's width, in one place.

    ViT-B and wider (``embed_dim >= 768``) get the official 512 x 8 blocks x 16 heads. Narrower encoders get a
    decoder no wider than themselves and ``8 * embed_dim / 768`` blocks (ViT-S: 384 x 4, ViT-Ti: 192 x 2),
    with 32-wide heads: fairscan's choice, so that tests and smoke runs on tiny encoders stay cheap.
    """
    big = embed_dim >= 768
    dim = dim or (DEFAULT_DECODER[0] if big else min(DEFAULT_DECODER[0], embed_dim))
    depth = depth or (DEFAULT_DECODER[1] if big else max(1, round(DEFAULT_DECODER[1] * embed_dim / 768)))
    heads = heads or (DEFAULT_DECODER[2] if dim == DEFAULT_DECODER[0] else max(1, dim // 32))
    if dim % heads:
        raise InputError(f"decoder width {dim} is not divisible by its {heads} heads")
    return DecoderSpec(dim, depth, heads)


def check_mask_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise InputError(
            BAD_MASK_RATIO.format(ratio=ratio), hint="0.75 is MAE's official value, 0.90 Medical MAE's"
        )
    return float(ratio)


def kept_patches(num_patches: int, ratio: float) -> int:
    """How many patches each image keeps visible: ``floor(L * (1 - ratio))``, every image the same.

    A tiny epsilon absorbs float error (``100 * (1 - 0.9)`` is 9.999...), so the count is the exact one a
    person would compute; MAE's ``int(L * (1 - ratio))`` agrees wherever the product is not such an artefact.
    """
    keep = math.floor(num_patches * (1.0 - check_mask_ratio(ratio)) + 1e-6)
    if keep < 1:
        raise InputError(
            TOO_FEW_PATCHES.format(ratio=ratio, n=num_patches),
            hint="lower --mask-ratio or use a larger --image-size",
        )
    return keep


def random_masking(
    x: torch.Tensor, keep: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep ``keep`` random tokens per sample.

    Returns the kept tokens (N, keep, D), the binary mask (N, L; 1 = hidden) and ``ids_restore`` (N, L), the
    permutation that puts a [kept, hidden] sequence back in patch order.
    """
    n, length, d = x.shape
    noise = torch.rand(n, length, device=x.device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(n, length, device=x.device, dtype=torch.float32)
    mask[:, :keep] = 0.0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, patch*patch*C), patches row-major, pixels (row, col, channel) within a patch."""
    n, c, h, w = imgs.shape
    gh, gw = h // patch, w // patch
    x = imgs.reshape(n, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, gh * gw, patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    n = x.shape[0]
    gh, gw = grid
    x = x.reshape(n, gh, gw, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, channels, gh * patch, gw * patch)


class MAE(nn.Module):
    """Masked autoencoder around a timm ViT ``encoder``; ``forward(imgs)`` returns the loss."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mask_ratio: float = MASK_RATIO_MAE,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder = encoder
        self.mask_ratio = check_mask_ratio(mask_ratio)
        self.norm_pix_loss = norm_pix_loss
        self.patch = int(encoder.patch_embed.patch_size[0])
        self.grid = tuple(int(g) for g in encoder.patch_embed.grid_size)
        self.channels = int(encoder.patch_embed.proj.in_channels)
        self.num_patches = self.grid[0] * self.grid[1]
        self.keep = kept_patches(self.num_patches, self.mask_ratio)
        embed_dim = encoder.pos_embed.shape[-1]
        self.decoder_spec = spec = resolve_decoder(
            embed_dim, dim=decoder_dim, depth=decoder_depth, heads=decoder_heads
        )

        self.decoder_embed = nn.Linear(embed_dim, spec.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(spec.dim, self.grid, cls_token=True), persistent=False
        )
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(spec.dim, spec.heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
                for _ in range(spec.depth)
            ]
        )
        self.decoder_norm = norm(spec.dim)
        self.decoder_pred = nn.Linear(spec.dim, self.patch * self.patch * self.channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialisation: xavier-uniform linears (the patch projection seen as one), small tokens."""
        self.apply(xavier_linear_init)
        w = self.encoder.patch_embed.proj.weight
        with torch.no_grad():
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        freeze_sincos_pos_embed(self.encoder)

    # -- the three stages -------------------------------------------------------------------------------
    def forward_encoder(
        self, imgs: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = embed_patches(self.encoder, imgs)
        x, mask, ids_restore = random_masking(x, self.keep, generator=generator)
        return encode_tokens(self.encoder, x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        hidden = self.mask_token.to(x.dtype).expand(n, length - (x.shape[1] - 1), -1)
        patches = torch.cat([x[:, 1:], hidden], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed.to(x.dtype)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]

    def targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """Per-patch pixel targets, normalised per patch (mean 0, unit variance) when ``norm_pix_loss``."""
        target = patchify(imgs.float(), self.patch)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the hidden patches only (computed in float32)."""
        per_patch = (pred.float() - self.targets(imgs)).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self,
        imgs: torch.Tensor,
        *,
        return_outputs: bool = False,
        generator: torch.Generator | None = None,
    ):
        """The loss (a scalar tensor); with ``return_outputs`` also ``pred`` (N, L, p*p*C) and ``mask`` (N, L)."""
        if imgs.ndim != 4 or tuple(imgs.shape[-2:]) != (self.grid[0] * self.patch, self.grid[1] * self.patch):
            raise InputError(
                f"MAE expects images of shape (N, {self.channels}, {self.grid[0] * self.patch}, "
                f"{self.grid[1] * self.patch}), got {tuple(imgs.shape)}"
            )
        latent, mask, ids_restore = self.forward_encoder(imgs, generator=generator)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.loss(imgs, pred, mask)
        return (loss, pred, mask) if return_outputs else loss

    # -- for the pretrain stage --------------------------------------------------------------------------
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone alone, in timm's key layout (detached, contiguous copies)."""
        return {k: v.detach().clone().contiguous() for k, v in self.encoder.state_dict().items()}

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """MAE's (timm's) rule: no weight decay on biases and 1-D parameters (norms); frozen ones left out."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


def build_mae(
    arch: str = "vit_base_patch16_224",
    *,
    img_size: int = 224,
    mask_ratio: float = MASK_RATIO_MAE,
    decoder_dim: int | None = None,
    decoder_depth: int | None = None,
    decoder_heads: int | None = None,
    norm_pix_loss: bool = True,
) -> MAE:
    """An MAE around a fresh ``timm`` encoder named ``arch`` at ``img_size`` pixels."""
    check_mask_ratio(mask_ratio)
    encoder = create_vit_encoder(arch, img_size=img_size)
    return MAE(
        encoder,
        mask_ratio=mask_ratio,
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        norm_pix_loss=norm_pix_loss,
    )
