"""Converting REMEDIS (and any BiT-layout TensorFlow ResNetV2) weights to a timm ``resnetv2_152x2_bit``.

REMEDIS (Azizi et al. 2023) is released as TensorFlow SavedModels behind credentialed access. Its ResNet-152x2
is BiT's architecture (weight-standardised convolutions, GroupNorm, pre-activation), whose TensorFlow variables
are named ``resnet/root_block/standardized_conv2d/kernel``, ``resnet/block{1-4}/unit{01..}/{a,b,c}/...``,
``resnet/group_norm/{gamma,beta}``. The route:

1. Where TensorFlow is installed: ``fairscan models convert-remedis SAVEDMODEL_DIR remedis.safetensors`` loads
   the SavedModel (``tf.saved_model.load``), reads its variables and converts them; or dump the variables to an
   ``.npz`` keyed by BiT names yourself (``{v.name: v.numpy() for v in model.variables}``) and convert that file
   anywhere: ``fairscan models convert-remedis remedis.npz remedis.safetensors`` needs no TensorFlow.
2. ``fairscan finetune --model remedis --weights remedis.safetensors``.

Variable names are matched on their BiT suffix, so a scope prefix (``keras_layer/``, ``base_model/``) does not
matter. Conversion is strict: every encoder tensor of the timm model must come from the file, with the right
shape, and a weight in the file that maps to nothing is an error (the classifier head is dropped).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError

if TYPE_CHECKING:
    import numpy as np

BIT_PREFIX = "resnet/"
_SUFFIX = re.compile(r"(?:^|/)((?:root_block|block\d+|group_norm|head)/.*)$")
_IGNORED = re.compile(r"(^|/)(global_step|save_counter|optimizer|.*/(Momentum|ExponentialMovingAverage)$)")
_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(conv|norm)([123])\.(weight|bias)$")
_DOWN = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.downsample\.conv\.weight$")
_NORM_PARAM = {"weight": "gamma", "bias": "beta"}


def bit_name(tf_name: str) -> str | None:
    """A TensorFlow variable name as its BiT name (``resnet/...``), or None if it is not a BiT weight."""
    name = tf_name.split(":")[0]
    m = _SUFFIX.search(name)
    return BIT_PREFIX + m.group(1) if m else None


def timm_to_bit(key: str) -> str | None:
    """The BiT variable name of a timm ResNetV2 state-dict key (None for the classifier)."""
    if key == "stem.conv.weight":
        return BIT_PREFIX + "root_block/standardized_conv2d/kernel"
    if key in ("norm.weight", "norm.bias"):
        return BIT_PREFIX + "group_norm/" + _NORM_PARAM[key.split(".")[1]]
    if m := _DOWN.match(key):
        return f"{BIT_PREFIX}block{int(m[1]) + 1}/unit{int(m[2]) + 1:02d}/a/proj/standardized_conv2d/kernel"
    if m := _BLOCK.match(key):
        unit = f"{BIT_PREFIX}block{int(m[1]) + 1}/unit{int(m[2]) + 1:02d}/{'abc'[int(m[4]) - 1]}/"
        if m[3] == "conv":
            return unit + "standardized_conv2d/kernel"
        return unit + "group_norm/" + _NORM_PARAM[m[5]]
    return None


def read_savedmodel(src: Path) -> dict[str, np.ndarray]:
    """Variables of a TensorFlow SavedModel by name (needs TensorFlow)."""
    try:
        import tensorflow as tf  # type: ignore[import-not-found]
    except ImportError as exc:
        raise InputError(
            f"{src}: reading a TensorFlow SavedModel needs TensorFlow, which is not installed",
            hint="convert on a machine with `pip install tensorflow`, or dump the variables to an .npz there "
            "({v.name: v.numpy() for v in tf.saved_model.load(DIR).variables}) and convert the .npz here",
        ) from exc
    loaded = tf.saved_model.load(str(src))
    variables = getattr(loaded, "variables", None)
    if not variables:
        raise InputError(f"{src}: the SavedModel exposes no variables", hint="is it a TF2 SavedModel?")
    return {v.name: v.numpy() for v in variables}


def read_arrays(src: str | Path) -> dict[str, np.ndarray]:
    import numpy as np

    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder", hint="give the REMEDIS SavedModel folder or an .npz of it")
    if src.is_dir():
        if not (src / "saved_model.pb").exists():
            raise InputError(f"{src}: not a TensorFlow SavedModel folder (no saved_model.pb)")
        return read_savedmodel(src)
    if src.suffix != ".npz":
        raise InputError(f"{src}: expected a SavedModel folder or an .npz of BiT-named variables")
    try:
        with np.load(src, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"{src}: not a readable .npz of arrays ({type(exc).__name__}: {exc})",
            hint="write it with np.savez(path, **{v.name: v.numpy() for v in variables}) (see `--help`)",
        ) from None


def convert_bit_arrays(arrays: dict[str, np.ndarray], model) -> dict[str, Any]:
    """Map BiT-named arrays onto ``model``'s state dict (kernels HWIO -> OIHW); strict both ways."""
    import torch

    by_bit: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if _IGNORED.search(name.split(":")[0]):
            continue
        b = bit_name(name)
        if b is None:
            raise InputError(
                f"variable {name!r} is not part of a BiT ResNetV2", hint="is this a REMEDIS model?"
            )
        if b in by_bit:
            raise InputError(f"two variables map to {b!r} (one is {name!r})")
        by_bit[b] = value
    out: dict[str, Any] = {}
    target = model.state_dict()
    for key, ref in target.items():
        b = timm_to_bit(key)
        if b is None:
            continue  # the classifier stays as initialised
        if b not in by_bit:
            raise InputError(
                f"the weights have no {b} (for {key})", hint="is the architecture right (--arch)?"
            )
        v = by_bit.pop(b)
        t = torch.from_numpy(v.transpose(3, 2, 0, 1).copy() if v.ndim == 4 else v.copy())
        if tuple(t.shape) != tuple(ref.shape):
            raise InputError(
                f"{b}: shape {tuple(t.shape)} does not fit {key} {tuple(ref.shape)} of this architecture"
            )
        out[key] = t.to(ref.dtype).contiguous()
    leftover = [b for b in by_bit if not b.startswith(BIT_PREFIX + "head/")]
    if leftover:
        raise InputError(f"{len(leftover)} weight(s) map to nothing in the model, e.g. {leftover[:3]}")
    return out


def convert_remedis(src: str | Path, out: str | Path, *, arch: str = "resnetv2_152x2_bit") -> dict[str, Any]:
    """Convert a REMEDIS SavedModel (or BiT-named .npz) to a timm safetensors file; returns a summary."""
    from safetensors.torch import save_file

    from fairscan.io import atomic_path, sha256_file
    from fairscan.models.build import arch_family, build_model

    if arch_family(arch) != "resnet":
        raise InputError(f"--arch {arch} is not a ResNetV2", hint="REMEDIS is resnetv2_152x2_bit")
    model = build_model(arch, num_classes=0, pooling="avg", image_size=224)
    state = convert_bit_arrays(read_arrays(src), model)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "source": str(src), "arch": arch})
    return {"out": str(out), "arch": arch, "tensors": len(state), "sha256": sha256_file(out)}
