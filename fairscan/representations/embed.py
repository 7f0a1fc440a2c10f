"""``fairscan embed`` as a library: the features of every image of a manifest split, for ``probe`` and ``inspect``.

Two sources of features:

- a run folder of ``fairscan finetune``: the input of its classifier head (timm's ``forward_head(...,
  pre_logits=True)``: the pooled, normed tokens of a ViT, the pooled map of a ResNet); the head applied to them
  gives ``predict``'s logits;
- a named foundation model used frozen (``--model medical-mae --weights FILE``), as Glocker et al. used theirs:
  the pooling of that model's fine-tuning recipe (METHOD 5b: global average of the patch tokens for the MAE family,
  the class token for MoCo v3; ResNets average), ``--pool`` to choose the other. A ViT averaged without a trained
  ``fc_norm`` gets the checkpoint's final norm there (the norm the pre-trained encoder ends with), so the frozen
  features are the encoder's own, not a freshly initialised norm's.

The output is the features table (``fairscan.representations.features``): one row per image, in manifest order,
``image_id``, ``patient_id``, the attribute columns, ``label_<id>`` and ``feat_0 .. feat_<d-1>`` (float32, or
float16 with ``--float16``), provenance in the parquet metadata. Images are loaded, batched and gathered by the
code ``predict`` uses (``fairscan.train.inference``), so every image is written exactly once on any number of
processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.settings import Cli, ExecutionOptions

if TYPE_CHECKING:
    import torch.nn as nn

ONE_SOURCE = "name a run folder or --model, not both"
FROZEN_ONLY = "{flag} applies to a frozen --model; a run folder's features are its head's input"


class EmbedConfig(ExecutionOptions):
    """The settings of ``fairscan embed``: which model embeds which split, and where the features go."""

    run: Annotated[str | None, Cli(argument=True, metavar="RUN")] = Field(
        None, description="A run folder of `fairscan finetune` (or use --model)."
    )
    model: Annotated[str | None, Cli(("--model", "-m"))] = Field(
        None, description="A registry model used frozen (`fairscan models list`)."
    )
    weights: str | None = Field(
        None, description="With --model: weights file or pretrain run (default: the hub)."
    )
    arch: str | None = Field(
        None, description="With --model: another timm architecture of its family (tests)."
    )
    image_size: int | None = Field(None, ge=16, description="With --model: input pixels (224).")
    pool: Literal["avg", "token"] | None = Field(
        None, description="With --model: avg or token (default: the model's recipe, METHOD 5b)."
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="With --model: pretrained, or random (a baseline; never implied)."
    )
    manifest: str = Field(description="manifest.parquet or its folder.")
    out: Annotated[str, Cli(("--output", "-o"))] = Field(description="Features file (.parquet or .csv).")
    split: Literal["train", "validate", "test"] = Field("test", description="The split to embed.")
    batch_size: int | None = Field(
        None, ge=1, description="Images per batch and process (default: 256 on a GPU, 64 on the CPU)."
    )
    float16: bool = Field(False, description="Store the features as float16 (half the file).")


def head_input(model: nn.Module) -> nn.Module:
    """``model`` as a module whose ``forward`` returns the input of its classifier head: Accelerate prepares
    (and autocasts) ``forward`` only, so the features must come out of it."""
    import torch.nn as nn

    class HeadInput(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_head(self.inner.forward_features(x), pre_logits=True).flatten(1)

    return HeadInput(model)


def check_settings(cfg: EmbedConfig) -> None:
    """Refuse settings that cannot go together, before anything is read."""
    if (cfg.run is None) == (cfg.model is None):
        raise InputError(
            ONE_SOURCE if cfg.run else "name what to embed with: a run folder or --model",
            hint="fairscan embed runs/mae --manifest data/chexpert -o feats.parquet, or "
            "fairscan embed --model medical-mae --weights FILE --manifest data/chexpert -o feats.parquet",
        )
    if cfg.run is not None:
        for key, flag in (("weights", "--weights"), ("arch", "--arch"), ("image_size", "--image-size"),
                          ("pool", "--pool")):  # fmt: skip
            if getattr(cfg, key) is not None:
                raise InputError(FROZEN_ONLY.format(flag=flag), hint=f"drop {flag}, or embed with --model")
        if cfg.init != "pretrained":
            raise InputError(FROZEN_ONLY.format(flag="--init"), hint="drop --init, or embed with --model")


def _frame(cfg: EmbedConfig):
    from fairscan.schema import label_ids, read_manifest

    frame = read_manifest(cfg.manifest, split=cfg.split)
    return frame, label_ids(frame)


def load_model(cfg: EmbedConfig) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(the model, its ModelInfo for preprocessing, the provenance of its weights)."""
    if cfg.run is not None:
        from fairscan.io import sha256_file
        from fairscan.models import MODEL_WEIGHTS, load_run_model

        model, info = load_run_model(cfg.run)
        return (
            model,
            info,
            {
                "features_of": "head input",
                "run": str(Path(cfg.run).resolve()),
                "weights_sha256": sha256_file(Path(cfg.run) / MODEL_WEIGHTS),
            },
        )
    return _frozen_model(cfg)


def _frozen_model(cfg: EmbedConfig):
    from dataclasses import replace

    from fairscan.models import (
        ModelInfo,
        build_model,
        get_spec,
        load_encoder,
        normalisation,
        resolve_checkpoint,
        spec_arch,
    )

    spec = get_spec(cfg.model)
    arch, family = spec_arch(spec, cfg.arch)
    pool = cfg.pool or (spec.pooling if family == "vit" else "avg")
    image_size = cfg.image_size or 224
    model = build_model(arch, num_classes=0, pooling=pool, image_size=image_size)
    ckpt = resolve_checkpoint(spec, weights=cfg.weights, init=cfg.init)
    weights: dict[str, Any] = {
        "features_of": "frozen encoder",
        "pooling": pool,
        "init": cfg.init,
        "weights": None,
    }
    if ckpt is not None:
        ckpt = replace(ckpt, state_dict=_final_norm_as_fc_norm(model, ckpt.state_dict))
        report = load_encoder(model, ckpt, arch=arch)
        weights["weights"] = {"source": report.source, "format": report.format, "sha256": report.sha256}
    mean, std = normalisation(spec, ckpt)
    info = ModelInfo(arch=arch, family=family, pooling=pool, image_size=image_size, labels=[], mean=list(mean),
                     std=list(std), model=spec.name)  # fmt: skip
    model.eval()
    return model, info, weights


def _final_norm_as_fc_norm(model: nn.Module, state: dict) -> dict:
    """A frozen ViT averaged over its tokens norms the average with ``fc_norm``, which pre-training never
    trained: give it the encoder's final ``norm`` (which the average makes unused)."""
    target = model.state_dict()
    if not any(k.startswith("fc_norm.") for k in target) or any(k.startswith("fc_norm.") for k in state):
        return state
    out = dict(state)
    for key in [k for k in state if k.startswith("norm.")]:
        out["fc_norm." + key[len("norm.") :]] = out.pop(key)
    return out


def embed(cfg: EmbedConfig, *, console=None, debug: bool = False) -> Path | None:
    """Write the features file; returns its path (None on processes other than the main one).

    The settings, the output path, the manifest and the model are checked before any image is read; the file
    is written once, atomically, at the end.
    """
    from fairscan.io import check_output_file, table_format
    from fairscan.train.launch import launch, under_launcher

    check_settings(cfg)
    check_output_file(cfg.out, "--output")
    table_format(cfg.out)
    frame, labels = _frame(cfg)
    model, info, weights = load_model(cfg)
    if cfg.procs > 1 and not under_launcher():
        del model
        launch(_worker, {"settings": cfg.model_dump(mode="json")}, processes=cfg.procs, debug=debug)
        return Path(cfg.out)
    return _run(cfg, frame, labels, (model, info, weights), console=console)


def _worker(*, settings: dict[str, Any]) -> None:
    """A launched process's part of ``embed``."""
    from rich.console import Console

    cfg = EmbedConfig(**settings)
    frame, labels = _frame(cfg)
    _run(cfg, frame, labels, load_model(cfg), console=Console(stderr=True))


def _run(cfg: EmbedConfig, frame, labels: list[str], loaded, *, console) -> Path | None:
    from fairscan.train.inference import over_split

    model, info, weights = loaded
    source = cfg.run or f"{cfg.model} (frozen, {info.pooling} pooling)"
    return over_split(
        head_input(model), info, frame, cfg, manifest=cfg.manifest, labels=labels,
        batch_size=cfg.batch_size, doing=f"embedding {len(frame)} {cfg.split} images with {source}",
        write=lambda feats, execution: _write(cfg, frame, labels, info, weights, feats, execution),
        console=console,
    )  # fmt: skip


def _write(cfg: EmbedConfig, frame, labels, info, weights: dict, feats, execution: dict[str, Any]) -> Path:
    import numpy as np
    import pandas as pd

    from fairscan.io import fingerprint
    from fairscan.representations.features import FEATURE_PREFIX, write_features
    from fairscan.runs import input_file
    from fairscan.train.predict import KEEP

    dtype = np.float16 if cfg.float16 else np.float32
    ids = frame[[c for c in KEEP if c in frame.columns]].reset_index(drop=True)
    label_cols = frame[[f"label_{lab}" for lab in labels]].astype(np.float64).reset_index(drop=True)
    values = pd.DataFrame(
        feats.astype(dtype), columns=[f"{FEATURE_PREFIX}{k}" for k in range(feats.shape[1])]
    )
    out = pd.concat([ids, label_cols, values], axis=1)
    provenance: dict[str, Any] = {
        "stage": "embed",
        "fairscan_version": __version__,
        "model": info.model,
        "arch": info.arch,
        "pooling": info.pooling,
        **weights,
        "manifest": fingerprint(input_file(cfg.manifest)),
        "split": cfg.split,
        "images": len(out),
        "features": int(feats.shape[1]),
        "dtype": np.dtype(dtype).name,
        "image_size": info.image_size,
        **execution,
        "settings": cfg.model_dump(mode="json"),
    }
    return write_features(out, cfg.out, provenance=provenance)
