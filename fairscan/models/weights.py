"""Reading pre-trained weights in each official format, and loading them strictly into a timm model.

Formats (detected from the file, never from its name):

- ``mae``: MAE and Medical MAE ``.pth`` files, ``{"model": state_dict, ...}`` with timm key names; the decoder
  (``decoder_*``) and ``mask_token`` are dropped.
- ``mocov3``: MoCo v3 ``.pth.tar`` files, ``{"state_dict": ...}`` with the encoder under
  ``module.base_encoder.``; the momentum encoder, the predictor and the encoder's projection head are dropped.
- ``timm``: a timm state dict (``.safetensors``, or a ``.pth``/``.bin`` holding only tensors, or timm's training
  checkpoint ``{"state_dict": ...}``); a ``module.`` prefix left by DistributedDataParallel is removed. The hub
  weights and converted REMEDIS weights (``fairscan models convert-remedis``) are in this format.
- ``fairscan``: a run folder (``model.safetensors`` + ``model.json``) from ``fairscan pretrain`` or ``finetune``.

Loading is safe (safetensors, or ``torch.load(weights_only=True)``) and strict about the encoder: the classifier
is always re-initialised; the only other keys that may be missing or left over are the ones the pooling
explains (a ViT fine-tuned with average pooling has a fresh ``fc_norm`` and no final ``norm``, as in MAE);
position embeddings are resized for another input size; anything else missing, unexpected or of another shape
refuses the checkpoint. There is no fallback to random weights.
"""

from __future__ import annotations

import argparse
import pathlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError
from fairscan.io import sha256_file
from fairscan.models.build import MODEL_JSON, MODEL_WEIGHTS, ModelInfo, classifier_name, read_safetensors

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

MOCO_PREFIX = "module.base_encoder."
MOCO_DROPPED = ("module.momentum_encoder.", "module.predictor.")
MAE_DROPPED = ("decoder", "mask_token")
WRONG_ARCH = "{source} does not fit {arch}: {detail}"


@dataclass
class Checkpoint:
    """An encoder state dict in timm's key names, with where it came from."""

    source: str
    format: str
    sha256: str
    state_dict: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)  # removed by the format's rules
    info: ModelInfo | None = None  # model.json of a fairscan run folder


@dataclass
class LoadReport:
    """What loading did; goes into ``stage.json``."""

    source: str
    format: str
    sha256: str
    loaded: int
    dropped: list[str]  # checkpoint keys not used (decoder, momentum encoder, old classifier, ...)
    initialised: list[str]  # model keys given fresh values (classifier; fc_norm under average pooling)
    resized: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "loaded_tensors": self.loaded,
            "dropped": _summarise(self.dropped),
            "initialised": self.initialised,
            "resized": self.resized,
        }


# ------------------------------------------------------------------------------------------------- reading


def read_checkpoint(source: str | Path) -> Checkpoint:
    """Read a weights file or fairscan run folder in any supported format."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such weights file or run folder", hint="check the --weights path")
    if path.is_dir():
        if not (path / MODEL_WEIGHTS).exists():
            raise InputError(
                f"{path}: a folder without {MODEL_WEIGHTS}",
                hint="give a weights file, or a run folder written by `fairscan pretrain` or `finetune`",
            )
        info = ModelInfo.read(path) if (path / MODEL_JSON).exists() else None
        sd = read_safetensors(path / MODEL_WEIGHTS)
        return Checkpoint(str(path), "fairscan", sha256_file(path / MODEL_WEIGHTS), sd, info=info)
    digest = sha256_file(path)
    if path.suffix == ".safetensors":
        return Checkpoint(str(path), "timm", digest, _strip_module(read_safetensors(path)))
    if path.suffix == ".npz":
        raise InputError(
            f"{path}: a TensorFlow/JAX .npz checkpoint cannot be fine-tuned directly",
            hint="convert it first: `fairscan models convert-remedis SRC OUT.safetensors`",
        )
    return convert_checkpoint(_torch_load(path), source=str(path), sha256=digest)


def convert_checkpoint(obj: Any, *, source: str, sha256: str = "") -> Checkpoint:
    """Turn a loaded checkpoint object into timm encoder keys, detecting MAE, MoCo v3 and timm layouts."""
    if not isinstance(obj, dict):
        raise InputError(f"{source}: not a checkpoint (a {type(obj).__name__}, not a dict)")
    if isinstance(obj.get("state_dict"), dict) and any(k.startswith(MOCO_PREFIX) for k in obj["state_dict"]):
        sd = obj["state_dict"]
        enc = {k[len(MOCO_PREFIX) :]: v for k, v in sd.items() if k.startswith(MOCO_PREFIX)}
        dropped = [k for k in sd if k.startswith(MOCO_DROPPED)]
        other = [k for k in sd if not k.startswith((MOCO_PREFIX, *MOCO_DROPPED))]
        enc.update({k: sd[k] for k in other})  # reported as unexpected by the strict load
        return Checkpoint(source, "mocov3", sha256, enc, dropped)
    if isinstance(obj.get("model"), dict):
        sd = obj["model"]
        dropped = [k for k in sd if k.startswith(MAE_DROPPED)]
        enc = {k: v for k, v in sd.items() if not k.startswith(MAE_DROPPED)}
        return Checkpoint(source, "mae", sha256, _strip_module(enc), dropped)
    if isinstance(obj.get("state_dict"), dict):  # timm's train.py checkpoints
        return Checkpoint(source, "timm", sha256, _strip_module(obj["state_dict"]))
    if obj and all(_is_tensor(v) for v in obj.values()):
        return Checkpoint(source, "timm", sha256, _strip_module(obj))
    raise InputError(
        f"{source}: unrecognised checkpoint layout (top-level keys: {', '.join(list(obj)[:8])})",
        hint="fairscan reads MAE ('model'), MoCo v3 ('state_dict' with module.base_encoder.), timm state dicts "
        "and safetensors, and fairscan run folders",
    )


def hub_checkpoint(hub_name: str) -> Checkpoint:
    """Weights from the Hugging Face hub through timm's pretrained config: the local cache first, then the
    network. Without a copy in the cache and without the hub (offline, or no connection) it fails at once,
    rather than after the hub client's retries."""
    import timm

    cfg = timm.models.get_pretrained_cfg(hub_name)
    if cfg is None or not cfg.hf_hub_id:
        raise InputError(f"timm has no hub weights named {hub_name!r}")
    from huggingface_hub import hf_hub_download

    filename = cfg.hf_hub_filename or "model.safetensors"
    try:
        path = hf_hub_download(cfg.hf_hub_id, filename, local_files_only=True)
    except Exception:  # not in the cache
        why = _hub_unreachable()
        if why is not None:
            raise InputError(
                f"the weights {hub_name} are not in the local cache, and {why}",
                hint=f"pass --weights FILE (a copy of {cfg.hf_hub_id}/{filename}), or run once with network access",
            ) from None
        try:
            path = hf_hub_download(cfg.hf_hub_id, filename)
        except Exception as exc:  # network errors, a missing file on the hub: all mean "not available here"
            raise InputError(
                f"the weights {hub_name} could not be downloaded ({type(exc).__name__}: {str(exc)[:160]})",
                hint="pass --weights FILE, or try again with network access",
            ) from exc
    ckpt = read_checkpoint(path)
    ckpt.source = f"hf-hub:{cfg.hf_hub_id}"
    return ckpt


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached now (None if it can): offline mode, or no connection to its host."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "the hub is offline (HF_HUB_OFFLINE is set)"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"
    return None


def _torch_load(path: Path) -> Any:
    import torch

    # MAE-style checkpoints also store the training arguments as an argparse.Namespace.
    allowed = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{path}: cannot be read safely as a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
            hint="fairscan loads with weights_only=True; save the state dict alone, or as .safetensors",
        ) from exc


def _strip_module(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _is_tensor(v: Any) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


# ------------------------------------------------------------------------------------------------- loading


def load_encoder(model: nn.Module, ckpt: Checkpoint, *, arch: str) -> LoadReport:
    """Load ``ckpt`` into ``model`` strictly; the classifier (and ViT pooling norms) start fresh."""
    import torch
    from timm.layers import resample_abs_pos_embed

    target = model.state_dict()
    head = classifier_name(model) + "."
    sd = dict(ckpt.state_dict)
    dropped = list(ckpt.dropped) + [k for k in sd if k.startswith(head)]
    sd = {k: v for k, v in sd.items() if not k.startswith(head)}
    expected_missing = {k for k in target if k.startswith(head)}

    is_vit = hasattr(model, "patch_embed") and hasattr(model, "fc_norm")
    if is_vit:
        # Pooling decides which final norm is live: timm makes the unused one an Identity with no keys.
        for unused in ("norm.", "fc_norm."):
            if not any(k.startswith(unused) for k in target):
                dropped += [k for k in sd if k.startswith(unused)]
                sd = {k: v for k, v in sd.items() if not k.startswith(unused)}
        if any(k.startswith("fc_norm.") for k in target) and not any(k.startswith("fc_norm.") for k in sd):
            expected_missing |= {k for k in target if k.startswith("fc_norm.")}

    resized = []
    if (
        is_vit
        and "pos_embed" in sd
        and "pos_embed" in target
        and sd["pos_embed"].shape != target["pos_embed"].shape
    ):
        old, new = sd["pos_embed"], target["pos_embed"]
        n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        old_grid = int(round((old.shape[1] - n_prefix) ** 0.5))
        if old.shape[-1] == new.shape[-1] and old_grid**2 == old.shape[1] - n_prefix:
            sd["pos_embed"] = resample_abs_pos_embed(
                old, new_size=list(model.patch_embed.grid_size), old_size=[old_grid, old_grid],
                num_prefix_tokens=n_prefix,
            )  # fmt: skip
            resized.append(f"pos_embed {tuple(old.shape)} -> {tuple(new.shape)}")

    missing = sorted(set(target) - set(sd) - expected_missing)
    unexpected = sorted(set(sd) - set(target))
    wrong_shape = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}"
        for k in sd
        if k in target and sd[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder key(s) missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatch(es) ({_few(wrong_shape, 3)})")
        raise InputError(
            WRONG_ARCH.format(source=ckpt.source, arch=arch, detail="; ".join(parts)),
            hint="are these weights for another --model or --arch? (`fairscan models list` shows each model's "
            "architecture); fairscan never falls back to random weights: ask for --init random explicitly",
        )
    with torch.no_grad():
        result = model.load_state_dict(sd, strict=False)
    assert set(result.missing_keys) <= expected_missing and not result.unexpected_keys, result
    return LoadReport(
        source=ckpt.source,
        format=ckpt.format,
        sha256=ckpt.sha256,
        loaded=len(sd),
        dropped=sorted(dropped),
        initialised=sorted(expected_missing),
        resized=resized,
    )


def _few(keys: list[str], n: int = 4) -> str:
    more = f", +{len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _summarise(keys: list[str]) -> dict[str, int]:
    """Dropped keys grouped by their first name segment, so stage.json stays short."""
    out: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        top = ".".join(parts[:3]) if parts[0] == "module" else parts[0]
        out[top] = out.get(top, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------- resolving

NO_WEIGHTS = "model {name!r} needs pre-trained weights: {where}"


def resolve_checkpoint(spec, *, weights: str | Path | None, init: str) -> Checkpoint | None:
    """The checkpoint a fine-tuning run starts from, or None for an explicit random init.

    Order: ``--init random`` (never combined with ``--weights``); ``--weights FILE|RUN``; the registry's hub
    name; otherwise an error that says where the weights come from. Scratch entries are random by definition.
    """
    if init not in ("pretrained", "random"):
        raise InputError(f"unknown --init {init!r}", hint="use pretrained or random")
    if init == "random":
        if weights is not None:
            raise InputError("--init random and --weights exclude each other", hint="drop one of them")
        return None
    if weights is not None:
        return read_checkpoint(weights)
    if spec.scratch:
        return None
    if spec.hub:
        return hub_checkpoint(spec.hub)
    raise InputError(
        NO_WEIGHTS.format(name=spec.name, where=spec.weights),
        hint="pass --weights FILE or a run folder; or ask for --init random (a scratch baseline)",
    )
