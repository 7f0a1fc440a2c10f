"""What the two self-supervised objectives share: a plain timm ViT encoder and fixed 2-D sin-cos positions.

The encoder is always an ordinary ``timm`` VisionTransformer built with ``num_classes=0``, so its
``state_dict()`` is already in timm's key layout (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.N.*``, ``norm.*``) and loads into ``timm.create_model(arch, num_classes=0)`` with ``strict=True``.
Nothing here imports pandas, pydantic or accelerate: ``benchmarks/gpu_pretrain.py`` loads these modules on a
machine that has only torch and timm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fairscan.errors import InputError


def sincos_pos_embed_2d(
    dim: int, grid: tuple[int, int], *, cls_token: bool = True, temperature: float = 10000.0
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, shape ``(1, [1 +] h*w, dim)``, tokens in row-major order.

    Half of the channels encode the column and half the row, each as ``[sin(pos*w_k), cos(pos*w_k)]`` with
    ``w_k = temperature ** (-k / (dim/4))``: the layout of the MAE and MoCo v3 papers' embeddings. The class
    token, when present, gets a zero embedding (it has no position). Computed in float64, returned float32.
    """
    if dim % 4:
        raise InputError(
            f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}",
            hint="pick a ViT whose embed_dim is a multiple of 4 (every timm ViT preset is)",
        )
    h, w = grid
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )

    def axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([axis(cols), axis(rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.unsqueeze(0).float()


def create_vit_encoder(arch: str, *, img_size: int, **kwargs) -> nn.Module:
    """A randomly initialised timm ViT encoder (no head) that both objectives can drive token by token."""
    import timm

    try:
        encoder = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise InputError(
            f"--arch {arch}: {exc}", hint="use a timm ViT name such as vit_base_patch16_224"
        ) from exc
    except (TypeError, AssertionError) as exc:
        raise InputError(
            f"--arch {arch}: cannot be built at {img_size} px ({exc})",
            hint="use a plain timm ViT (vit_*_patch16_*) and an image size divisible by its patch size",
        ) from exc
    from fairscan.models.build import check_patch_size

    check_patch_size(encoder, img_size, arch)
    check_vit_encoder(encoder, arch)
    return encoder


def check_vit_encoder(encoder: nn.Module, arch: str = "encoder") -> None:
    """Refuse encoders whose token layout the objectives do not handle, with a message naming ``arch``."""
    from timm.models.vision_transformer import VisionTransformer

    problems = []
    if not isinstance(encoder, VisionTransformer):
        problems.append(f"it is a {type(encoder).__name__}, not a timm VisionTransformer")
    else:
        if encoder.cls_token is None:
            problems.append("it has no class token")
        if encoder.pos_embed is None or encoder.no_embed_class:
            problems.append("its position embedding does not cover the class token")
        if getattr(encoder, "reg_token", None) is not None:
            problems.append("it has register tokens")
        if getattr(encoder, "dynamic_img_size", False):
            problems.append("it uses dynamic image sizes")
        if getattr(encoder, "attn_pool", None) is not None:
            problems.append("it pools with attention")
        if not isinstance(encoder.norm, nn.LayerNorm):
            problems.append("it has no final LayerNorm (global_pool='avg' moves it to fc_norm)")
    if problems:
        raise InputError(
            f"--arch {arch}: cannot be pre-trained here: " + "; ".join(problems),
            hint="use a plain timm ViT such as vit_base_patch16_224 (MAE and MoCo v3 both use one)",
        )


def freeze_sincos_pos_embed(encoder: nn.Module) -> None:
    """Overwrite the encoder's ``pos_embed`` with the fixed sin-cos table and stop its gradient.

    The parameter keeps its name and shape, so the saved encoder stays in timm's layout; a fine-tuning run
    that loads it may train it again (as MAE's and MoCo v3's fine-tuning do).
    """
    grid = tuple(encoder.patch_embed.grid_size)
    table = sincos_pos_embed_2d(encoder.pos_embed.shape[-1], grid, cls_token=True)
    with torch.no_grad():
        encoder.pos_embed.copy_(table.to(encoder.pos_embed.dtype))
    encoder.pos_embed.requires_grad_(False)


def encode_tokens(encoder: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Run the class token plus already-embedded patch ``tokens`` (N, L', D) through the blocks and norm."""
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
    x = torch.cat([cls, tokens], dim=1)
    x = encoder.norm_pre(x)
    x = encoder.blocks(x)
    return encoder.norm(x)


def embed_patches(encoder: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Patch embedding plus (patch-part) position embedding: (N, C, H, W) -> (N, L, D)."""
    x = encoder.patch_embed(imgs)
    if x.ndim != 3:  # a timm PatchEmbed with output_fmt NHWC
        x = x.flatten(1, 2)
    return x + encoder.pos_embed[:, 1:]


def xavier_linear_init(module: nn.Module) -> None:
    """MAE's initialisation of linear and LayerNorm layers (xavier-uniform weights, zero biases)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def patch_embed_fan(encoder: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) of the patch projection seen as a linear layer."""
    w = encoder.patch_embed.proj.weight
    return math.prod(w.shape[1:]), w.shape[0]
