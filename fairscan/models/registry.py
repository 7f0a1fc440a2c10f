"""The named foundation models of the paper's Table 1 (METHOD sections 2, 4 and 5b).

A :class:`ModelSpec` names an architecture apart from its weights (as timm's ``arch.tag``): the timm
architecture, pooling, input normalisation, the fine-tuning batch and epochs of the paper's recipe, and where
the weights come from. ``--arch`` swaps in another timm architecture of the same family (tiny variants for
tests); the spec's other fields stay.

Stated assumptions (METHOD 5b, also in ``fairscan models list``):
- MAE-family ViTs fine-tune with global average pooling + ``fc_norm`` (as MAE); MoCo v3 ViTs with the class
  token (as MoCo v3). Linear probing uses the class token for every ViT (MAE's and MoCo v3's linear-probe
  scripts both do).
- The ResNet scratch baseline uses BiT's architecture (``resnetv2_152x2_bit``), so that it differs from BiT and
  REMEDIS only by its initialisation; scratch baselines turn layer-wise lr decay off.
- Normalisation follows the weights: ImageNet mean/std for MAE and MoCo v3 (their fine-tuning scripts), timm's
  BiT statistics (0.5/0.5), Medical MAE's 0.5056/0.252, and inputs in [0, 1] for REMEDIS (its TensorFlow models
  take images scaled to [0, 1]). A fairscan run folder given with ``--weights`` brings its own normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairscan.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str  # as in the paper's tables
    family: str  # "vit" or "resnet"
    arch: str  # timm architecture
    arch_label: str  # as the paper writes it
    method: str  # pre-training method
    data: str  # pre-training data
    weights: str  # where the weights come from, for people
    hub: str | None  # timm hub name (downloaded when online), or None
    checkpoint: str  # the official checkpoint format: mae, mocov3, timm, remedis, fairscan or none
    pooling: str  # "avg" (global average + fc_norm for ViTs) or "token" (class token)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int  # effective batch of the paper's fine-tuning recipe
    epochs: int
    layer_decay: float | None  # None: off
    scratch: bool = False  # random init is the recipe, not a fallback


_VIT, _RESNET = "ViT-B/16", "ResNet-152x2 (v2)"
_MED_MAE_MEAN, _MED_MAE_STD = (0.5056,) * 3, (0.252,) * 3

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="mae", title="MAE", family="vit", arch="vit_base_patch16_224", arch_label=_VIT,
            method="masked SSL", data="ImageNet-1K",
            weights="hub vit_base_patch16_224.mae, or file mae_pretrain_vit_base.pth",
            hub="vit_base_patch16_224.mae", checkpoint="mae", pooling="avg",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=128, epochs=200, layer_decay=0.55,
        ),
        ModelSpec(
            name="medical-mae", title="Medical MAE", family="vit", arch="vit_base_patch16_224", arch_label=_VIT,
            method="masked SSL", data="ChestX-ray14, CheXpert, MIMIC-CXR",
            weights="file vit-b_CXR_0.5M_mae.pth (lambert-x/medical_mae)",
            hub=None, checkpoint="mae", pooling="avg",
            mean=_MED_MAE_MEAN, std=_MED_MAE_STD, batch_size=128, epochs=100, layer_decay=0.55,
        ),
        ModelSpec(
            name="mocov3", title="MoCo v3", family="vit", arch="vit_base_patch16_224", arch_label=_VIT,
            method="contrastive SSL", data="ImageNet-1K",
            weights="file vit-b-300ep.pth.tar (facebookresearch/moco-v3)",
            hub=None, checkpoint="mocov3", pooling="token",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=128, epochs=200, layer_decay=0.55,
        ),
        ModelSpec(
            name="medical-mocov3", title="Medical MoCo v3", family="vit", arch="vit_base_patch16_224",
            arch_label=_VIT, method="contrastive SSL", data="ChestX-ray14, CheXpert",
            weights="run folder of `fairscan pretrain` (not public)",
            hub=None, checkpoint="fairscan", pooling="token",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=128, epochs=100, layer_decay=0.55,
        ),
        ModelSpec(
            name="bit", title="BiT", family="resnet", arch="resnetv2_152x2_bit", arch_label=_RESNET,
            method="supervised", data="ImageNet-21K",
            weights="hub resnetv2_152x2_bit.goog_in21k",
            hub="resnetv2_152x2_bit.goog_in21k", checkpoint="timm", pooling="avg",
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), batch_size=32, epochs=30, layer_decay=0.55,
        ),
        ModelSpec(
            name="remedis", title="REMEDIS", family="resnet", arch="resnetv2_152x2_bit", arch_label=_RESNET,
            method="supervised + contrastive SSL", data="CheXpert, MIMIC-CXR",
            weights="file from `fairscan models convert-remedis` (TF SavedModel)",
            hub=None, checkpoint="remedis", pooling="avg",
            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), batch_size=32, epochs=20, layer_decay=0.55,
        ),
        ModelSpec(
            name="vit-scratch", title="ViT (scratch)", family="vit", arch="vit_base_patch16_224",
            arch_label=_VIT, method="none", data="none", weights="random init",
            hub=None, checkpoint="none", pooling="avg",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=128, epochs=200, layer_decay=None, scratch=True,
        ),
        ModelSpec(
            name="resnet-scratch", title="ResNet (scratch)", family="resnet", arch="resnetv2_152x2_bit",
            arch_label=_RESNET, method="none", data="none", weights="random init",
            hub=None, checkpoint="none", pooling="avg",
            mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=32, epochs=30, layer_decay=None, scratch=True,
        ),
    )
}  # fmt: skip

UNKNOWN_MODEL = "unknown model {name!r}"


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or an InputError that lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(
            UNKNOWN_MODEL.format(name=name),
            hint=f"use one of {', '.join(MODELS)} (see `fairscan models list`)",
        ) from None
