"""Building models: one timm factory call, the linear-probe head, and the run folder's ``model.json``.

Every model is a plain timm model (``forward_features``, ``group_matcher``, ``pretrained_cfg['classifier']``),
so layer-wise lr decay and checkpoint loading work the same for every registry entry. Linear probing swaps the
classifier for ``BatchNorm(affine=False) -> classifier`` in place (MAE's recipe), which keeps timm's key names.

Two tiny architectures are registered with timm here, for tests and quick runs: ``fairscan_resnetv2_tiny``, a
BiT-layout ResNetV2 (weight-standardised convs, GroupNorm, four stages of one block), and ``fairscan_vit_micro``,
a timm ViT with two blocks 64 wide. Timm's own ``vit_tiny_patch16_224`` works as well.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError

if TYPE_CHECKING:
    import torch.nn as nn

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
LINEAR_HEAD, PROBE_HEAD = "linear", "bn-linear"

_registered = False
TINY_RESNETS, TINY_VITS = ("fairscan_resnetv2_tiny",), ("fairscan_vit_micro",)


def register_tiny_models() -> None:
    """Register fairscan's tiny test architectures with timm (idempotent)."""
    global _registered
    if _registered:
        return
    import timm.models.resnetv2 as rv2
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models import build_model_with_cfg, register_model

    def fairscan_resnetv2_tiny(pretrained: bool = False, **kwargs: Any):
        """BiT-layout ResNetV2 with one bottleneck block per stage and narrow channels (tests only)."""
        args = dict(
            layers=[1, 1, 1, 1], channels=(32, 64, 128, 256), stem_chs=16, stem_type="fixed",
            conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8),
        )  # fmt: skip
        cfg = kwargs.pop("pretrained_cfg", None) or dict(
            num_classes=1000, input_size=(3, 224, 224), classifier="head.fc", first_conv="stem.conv",
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        )  # fmt: skip
        return build_model_with_cfg(
            rv2.ResNetV2, "fairscan_resnetv2_tiny", pretrained, pretrained_cfg=cfg,
            feature_cfg=dict(flatten_sequential=True), **dict(args, **kwargs),
        )  # fmt: skip

    def fairscan_vit_micro(pretrained: bool = False, **kwargs: Any):
        """A two-block, 64-wide ViT with 16-pixel patches (tests only)."""
        from timm.models.vision_transformer import _create_vision_transformer

        cfg = kwargs.pop("pretrained_cfg", None) or dict(
            num_classes=1000, input_size=(3, 224, 224), classifier="head", first_conv="patch_embed.proj",
            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        )  # fmt: skip
        args = dict(patch_size=16, embed_dim=64, depth=2, num_heads=2)
        return _create_vision_transformer(
            "fairscan_vit_micro", pretrained, pretrained_cfg=cfg, **dict(args, **kwargs)
        )

    import timm

    for fn in (fairscan_resnetv2_tiny, fairscan_vit_micro):
        if not timm.is_model(fn.__name__):
            register_model(fn)
    _registered = True


def spec_arch(spec, arch: str | None) -> tuple[str, str]:
    """The architecture to build for registry entry ``spec`` (its own unless ``arch`` is given) and its family;
    an InputError when that family is not the entry's (its weights would not load)."""
    arch = arch or spec.arch
    family = arch_family(arch)
    if family != spec.family:
        raise InputError(
            f"--arch {arch} is a {family} but {spec.name} is a {spec.family}",
            hint=f"pick a {spec.family} architecture (the registry's is {spec.arch})",
        )
    return arch, family


def normalisation(spec, ckpt) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation follows the weights: a fairscan run folder's own, else the registry entry's."""
    if ckpt is not None and ckpt.info is not None and ckpt.info.mean:
        return tuple(ckpt.info.mean), tuple(ckpt.info.std)
    return spec.mean, spec.std


def arch_family(arch: str) -> str:
    """``vit`` or ``resnet`` for a timm architecture name; an InputError for anything else."""
    import timm
    from timm.models import is_model, model_entrypoint

    register_tiny_models()
    base = arch.split(".")[0]
    if not is_model(base):
        close = [m for m in timm.list_models(f"*{base.split('_')[0]}*")][:8]
        raise InputError(
            f"unknown timm architecture {arch!r}",
            hint=f"similar names: {', '.join(close)}" if close else "see timm.list_models()",
        )
    module = model_entrypoint(base).__module__
    if module.endswith("vision_transformer") or base in TINY_VITS:
        return "vit"
    if module.endswith("resnetv2") or base in TINY_RESNETS:
        return "resnet"
    raise InputError(
        f"architecture {arch!r} is neither a timm VisionTransformer nor a ResNetV2",
        hint="fairscan's registry covers ViTs (vision_transformer) and ResNetV2s (resnetv2)",
    )


@dataclass
class ModelInfo:
    """What ``model.json`` records: enough to rebuild the model for prediction or further training."""

    arch: str
    family: str
    pooling: str
    image_size: int
    labels: list[str]
    mean: list[float]
    std: list[float]
    head: str = LINEAR_HEAD
    model: str | None = None  # registry name
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {"fairscan": "model/1", **asdict(self)}

    @classmethod
    def read(cls, run: str | Path) -> ModelInfo:
        path = Path(run) / MODEL_JSON
        if not path.exists():
            raise InputError(
                f"{run}: no {MODEL_JSON}", hint="give a run folder written by `fairscan finetune`"
            )
        try:
            raw = json.loads(path.read_text())
            raw.pop("fairscan", None)
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: not a fairscan model.json ({exc})") from exc


def build_model(
    arch: str,
    *,
    num_classes: int,
    pooling: str,
    image_size: int,
    drop_path: float = 0.0,
    head: str = LINEAR_HEAD,
) -> nn.Module:
    """A randomly initialised timm model; weights are loaded separately (``fairscan.models.weights``)."""
    import timm

    family = arch_family(arch)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "global_pool": pooling, "drop_path_rate": drop_path}
    if family == "vit":
        kwargs["img_size"] = image_size
    elif pooling != "avg":
        raise InputError(f"pooling {pooling!r} does not apply to ResNet architectures", hint="use avg")
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if family == "vit":
        check_patch_size(model, image_size, arch)
    if head == PROBE_HEAD:
        add_probe_norm(model)
    return model


def check_patch_size(model: nn.Module, image_size: int, arch: str) -> None:
    """A ViT cuts the image into whole patches: a size that is not a multiple would silently drop pixels."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    if patch and image_size % patch:
        lower, upper = image_size - image_size % patch, image_size - image_size % patch + patch
        raise InputError(
            f"--image-size {image_size} is not a multiple of {arch}'s {patch}-pixel patches",
            hint=f"use {lower or upper} or {upper}",
        )


def classifier_name(model: nn.Module) -> str:
    """The dotted name of the classifier module (``head`` for ViTs, ``head.fc`` for ResNetV2s)."""
    return model.pretrained_cfg.get("classifier", "head")


def classifier(model: nn.Module) -> nn.Module:
    return model.get_submodule(classifier_name(model))


def add_probe_norm(model: nn.Module) -> None:
    """MAE's linear-probe head: BatchNorm without affine parameters before the classifier."""
    import torch.nn as nn

    name = classifier_name(model)
    fc = model.get_submodule(name)
    if isinstance(fc, nn.Linear):
        norm = nn.BatchNorm1d(fc.in_features, affine=False, eps=1e-6)
    elif isinstance(fc, nn.Conv2d):  # ResNetV2's 1x1-conv classifier on pooled (N, C, 1, 1) features
        norm = nn.BatchNorm2d(fc.in_channels, affine=False, eps=1e-6)
    else:
        raise InputError(f"cannot add a probe norm before a {type(fc).__name__} classifier")
    model.set_submodule(name, nn.Sequential(norm, fc))


def backbone_names(model: nn.Module) -> list[str]:
    """Every state-dict key outside the classifier: what linear probing must leave bit-identical."""
    prefix = classifier_name(model) + "."
    return [k for k in model.state_dict() if not k.startswith(prefix)]


def load_run_model(run: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Rebuild a fine-tuned model from its run folder, loading ``model.safetensors`` strictly."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(f"{run}: not a run folder", hint="give the --out folder of `fairscan finetune`")
    info = ModelInfo.read(run)
    weights = run / MODEL_WEIGHTS
    if not weights.exists():
        raise InputError(
            f"{run}: no {MODEL_WEIGHTS} yet",
            hint="the run has not finished an epoch; wait, or `fairscan finetune --resume`",
        )
    model = build_model(
        info.arch,
        num_classes=info.num_classes,
        pooling=info.pooling,
        image_size=info.image_size,
        head=info.head,
    )
    state = read_safetensors(weights, hint="the run's weights are damaged: re-run `fairscan finetune`")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{weights} does not match {info.arch} as model.json describes it: missing "
            f"{_few(result.missing_keys)}; unexpected {_few(result.unexpected_keys)}",
            hint="was the run folder edited by hand?",
        )
    model.eval()
    return model, info


def read_safetensors(path: Path, hint: str | None = None) -> dict:
    """A safetensors file's tensors; a damaged file is an InputError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path}: not a readable safetensors file ({exc})", hint=hint) from None


def _few(keys, n: int = 5) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
