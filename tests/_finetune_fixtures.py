"""Shared pieces for the models / train / finetune / predict tests: a small synthetic CheXpert manifest, tiny
models, checkpoints written in each official key layout, and one cached fine-tuned run.

Everything is CPU-sized: ``fairscan_vit_micro`` (2 blocks, 64 wide) and ``fairscan_resnetv2_tiny`` at 32 px.
A plugin of the test suite (``conftest.pytest_plugins``): its fixtures ``single_thread`` (a module takes it with
``pytestmark = pytest.mark.usefixtures("single_thread")``), ``manifest`` and ``run`` serve every test module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VIT, RESNET = "fairscan_vit_micro", "fairscan_resnetv2_tiny"
SIZE = 32
TINY_ARGS = ["--arch", VIT, "--image-size", str(SIZE), "--cpu", "--workers", "0"]
_CACHE: dict[str, Path] = {}


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: on a shared 2-core machine, two OpenMP threads slow tiny models down 10-20x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synthetic_manifest(tmp_path_factory, patients: int = 50) -> Path:
    """A prepared synthetic CheXpert manifest folder (about 50 train, 10 validate, 20 test images), made once."""
    key = f"synthetic-{patients}"
    if key not in _CACHE:
        from fairscan.data.synthetic import prepare_synthetic_manifest

        root = tmp_path_factory.mktemp(key)
        prepare_synthetic_manifest(root, patients=patients, image_size=SIZE, seed=0)
        _CACHE[key] = root
    return _CACHE[key]


def finetuned_run(tmp_path_factory, run_cli) -> Path:
    """One tiny fine-tuned run (random init, 2 epochs), made once per test session and shared read-only."""
    if "run" not in _CACHE:
        manifest = synthetic_manifest(tmp_path_factory)
        out = tmp_path_factory.mktemp("run") / "mae-micro"
        code, _, err = run_cli(
            "finetune", "--model", "mae", "--manifest", manifest, "--out", out, "--init", "random",
            "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--warmup-epochs", "0.5", *TINY_ARGS,
        )  # fmt: skip
        assert code == 0, err
        _CACHE["run"] = out
    return _CACHE["run"]


def vit_encoder(image_size: int = SIZE, pooling: str = "token"):
    """A tiny ViT without a classifier: the state dict an official pre-training checkpoint holds."""
    from fairscan.models import build_model

    return build_model(VIT, num_classes=0, pooling=pooling, image_size=image_size)


def mae_checkpoint(path: Path, encoder, *, with_decoder: bool = True) -> Path:
    """The official MAE / Medical MAE layout: {"model": encoder + decoder, "optimizer", "epoch", "args"}."""
    import torch

    model = dict(encoder.state_dict())
    if with_decoder:
        dim = model["cls_token"].shape[-1]
        model.update({
            "mask_token": torch.zeros(1, 1, 32),
            "decoder_embed.weight": torch.randn(32, dim),
            "decoder_embed.bias": torch.zeros(32),
            "decoder_pos_embed": torch.zeros(1, model["pos_embed"].shape[1], 32),
            "decoder_blocks.0.norm1.weight": torch.ones(32),
            "decoder_norm.weight": torch.ones(32),
            "decoder_pred.weight": torch.randn(16 * 16 * 3, 32),
        })  # fmt: skip
    torch.save(
        {"model": model, "optimizer": {"state": {}, "param_groups": []}, "epoch": 799,
         "args": argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75, output_dir=Path("/out"))},
        path,
    )  # fmt: skip
    return path


def mocov3_checkpoint(path: Path, encoder) -> Path:
    """The official MoCo v3 layout: {"state_dict": module.base_encoder./momentum_encoder./predictor., ...}."""
    import torch

    enc = dict(encoder.state_dict())
    dim = enc["cls_token"].shape[-1]
    projector = {  # the 3-layer projector MoCo v3 puts in the encoder's head
        "head.0.weight": torch.randn(48, dim), "head.1.weight": torch.ones(48), "head.1.bias": torch.zeros(48),
        "head.1.running_mean": torch.zeros(48), "head.1.running_var": torch.ones(48),
        "head.1.num_batches_tracked": torch.tensor(5), "head.3.weight": torch.randn(16, 48),
    }  # fmt: skip
    sd = {}
    for k, v in {**enc, **projector}.items():
        sd[f"module.base_encoder.{k}"] = v
        sd[f"module.momentum_encoder.{k}"] = v.clone()
    sd["module.predictor.0.weight"] = torch.randn(48, 16)
    sd["module.predictor.1.running_mean"] = torch.zeros(48)
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": sd, "optimizer": {}, "scaler": {}}, path)
    return path


@pytest.fixture
def single_thread():
    with one_thread():
        yield


@pytest.fixture
def manifest(tmp_path_factory) -> Path:
    """The shared small synthetic CheXpert manifest."""
    return synthetic_manifest(tmp_path_factory)


@pytest.fixture
def run(tmp_path_factory, run_cli) -> Path:
    """The shared tiny fine-tuned run (read-only)."""
    return finetuned_run(tmp_path_factory, run_cli)
