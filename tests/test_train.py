"""The loop's pieces: layer-wise lr decay, weight decay, the schedule, the masked loss, LARS, a non-finite loss."""

from __future__ import annotations

import json
import math

import pytest

from tests._finetune_fixtures import RESNET, SIZE, VIT, one_thread

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("single_thread")


def _groups(arch, decay=0.55):
    from fairscan.models import build_model
    from fairscan.train.optim import param_groups

    model = build_model(arch, num_classes=14, pooling="avg", image_size=SIZE)
    return model, param_groups(model, weight_decay=0.05, layer_decay=decay)


def _scale_of(groups, name):
    return next(g["lr_scale"] for g in groups if name in g["names"])


def test_vit_layer_decay_is_055_per_block():
    _, groups = _groups(VIT)  # 2 blocks: embedding (layer 0), blocks 1-2, head + fc_norm (layer 3)
    assert _scale_of(groups, "head.weight") == 1.0
    assert _scale_of(groups, "fc_norm.weight") == 1.0
    assert _scale_of(groups, "blocks.1.attn.qkv.weight") == pytest.approx(0.55)
    assert _scale_of(groups, "blocks.0.attn.qkv.weight") == pytest.approx(0.55**2)
    for name in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        assert _scale_of(groups, name) == pytest.approx(0.55**3)


def test_vit_base_has_13_decayed_layers():
    from fairscan.models import build_model
    from fairscan.train.optim import param_groups

    model = build_model("vit_base_patch16_224", num_classes=14, pooling="avg", image_size=SIZE)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.55)
    for k in range(12):
        assert _scale_of(groups, f"blocks.{11 - k}.mlp.fc1.weight") == pytest.approx(0.55 ** (k + 1))
    assert _scale_of(groups, "patch_embed.proj.weight") == pytest.approx(0.55**13)


def test_resnet_layer_decay_is_per_stage():
    _, groups = _groups(RESNET)
    assert _scale_of(groups, "head.fc.weight") == _scale_of(groups, "norm.weight") == 1.0
    for stage in range(4):
        expected = 0.55 ** (4 - stage)
        assert _scale_of(groups, f"stages.{stage}.blocks.0.conv1.weight") == pytest.approx(expected)
    assert _scale_of(groups, "stem.conv.weight") == pytest.approx(0.55**5)


def test_no_weight_decay_on_1d_parameters_and_embeddings():
    model, groups = _groups(VIT)
    for g in groups:
        for name, p in zip(g["names"], g["params"]):
            exempt = p.ndim <= 1 or name in ("pos_embed", "cls_token")
            assert g["weight_decay"] == (0.0 if exempt else 0.05), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_decay_off_gives_one_scale():
    _, groups = _groups(VIT, decay=None)
    assert {g["lr_scale"] for g in groups} == {1.0}


def test_warmup_then_cosine_per_step():
    from fairscan.train.optim import lr_at

    lrs = [lr_at(s, total=100, warmup=10, lr=1.0, min_lr=0.01) for s in range(100)]
    assert lrs[:3] == pytest.approx([0.1, 0.2, 0.3])
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, total=100, warmup=10, lr=1.0, min_lr=0.01) == pytest.approx(0.01)


def test_masked_bce_ignores_masked_labels():
    import torch.nn.functional as F

    from fairscan.train.supervised import masked_bce

    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
    assert masked_bce(logits, targets) == pytest.approx(float(expected))


def test_lars_scales_matrix_updates_by_trust_ratio():
    from fairscan.train.optim import LARS

    w = torch.nn.Parameter(torch.ones(4, 4))
    b = torch.nn.Parameter(torch.ones(4))
    opt = LARS([{"params": [w, b]}], lr=1.0, momentum=0.0)
    w.grad, b.grad = torch.full((4, 4), 2.0), torch.full((4,), 2.0)
    opt.step()
    assert torch.allclose(w, torch.full((4, 4), 1 - 0.001))  # trust 0.001 * |w| / |g| = 0.0005, times g = 2
    assert torch.allclose(b, torch.full((4,), -1.0))  # 1-D: plain SGD step


class _Data:
    image_ids = [f"img{i}" for i in range(16)]

    def __len__(self):
        return 16

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(4, generator=g), "target": torch.tensor([float(i % 2)]), "index": i}


def _linear_objective(nan_at: int | None):
    from fairscan.train.loop import Objective

    class Linear(Objective):
        calls = 0

        def loss(self, model, batch):
            Linear.calls += 1
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(batch["image"]), batch["target"]
            )
            return loss * float("nan") if Linear.calls == nan_at else loss

        def param_groups(self, cfg):
            return [{"params": list(self.model.parameters()), "weight_decay": 0.0}]

    return Linear(torch.nn.Linear(4, 1))


def test_non_finite_loss_stops_with_step_and_ids_and_keeps_the_checkpoint(tmp_path):
    from fairscan.errors import RunError
    from fairscan.train.loop import TrainConfig, make_accelerator, train

    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1, save_every=2, log_every=1)
    train(
        _linear_objective(None),
        accelerator=make_accelerator(cpu=True),
        train_set=_Data(),
        cfg=cfg,
        out_dir=tmp_path,
    )
    assert json.loads((tmp_path / "state" / "progress.json").read_text())["step"] == 8

    out = tmp_path / "nan"
    with pytest.raises(RunError) as info:
        train(
            _linear_objective(3),
            accelerator=make_accelerator(cpu=True),
            train_set=_Data(),
            cfg=cfg,
            out_dir=out,
        )
    msg = str(info.value)
    assert "non-finite loss (nan) at step 3 (epoch 0, process 0)" in msg
    assert "batch image ids: img" in msg and msg.count("img") >= 4
    assert json.loads((out / "state" / "progress.json").read_text())["step"] == 2  # the last good one, intact
    assert not (out / "state.next").exists()


def _script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_script_runs_on_cpu_with_a_tiny_model():
    res = _script("gpu_finetune").main(
        [
            "--device",
            "cpu",
            "--model",
            "vit_tiny_patch16_224",
            "--image-size",
            "32",
            "--batch",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--pool",
            "8",
            "--no-compile",
        ]  # fmt: skip
    )
    assert res["eager_fp32"]["images_per_s"] > 0 and res["bf16_eager"]["bf16"] is True
    assert 0 < res["setup"]["train_gflops_per_image"] < 1 and "speedup_vs_eager_fp32" in res


def test_loop_benchmark_script_runs(tmp_path_factory):
    from fairscan.data.cache import build_cache
    from tests._finetune_fixtures import synthetic_manifest

    data = synthetic_manifest(tmp_path_factory)
    build_cache(data, size=37, workers=1)  # the evaluation resize of 32 px
    res = _script("bench_train_loop").main(
        [
            "--arch",
            VIT,
            "--image-size",
            "32",
            "--batch",
            "8",
            "--steps",
            "4",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--data",
            str(data),
            "--baseline",
            "none",  # the baseline's worktree and fresh processes are for the real measurement
        ]  # fmt: skip
    )
    assert res["median_images_per_s"]["plain_cpu"] > 0 and res["median_images_per_s"]["fairscan_cpu"] > 0
    assert res["ratio_cpu"] > 0


def test_pretrain_benchmark_scripts_run_on_cpu_with_a_tiny_vit():
    """The CPU and GPU pre-training benchmarks stay runnable (their figures are not checked here)."""
    # fmt: off
    cpu_args = ["--arch", "vit_tiny_patch16_224", "--image-size", "64", "--batch", "4", "--steps", "1",
                "--mask-ratio", "0.75", "0.9", "--mocov3", "--json"]
    gpu_args = ["--device", "cpu", "--arch", "vit_tiny_patch16_224", "--image-size", "32", "--mae-batch", "4",
                "--moco-batch", "4", "--steps", "1", "--warmup", "1", "--mlp-dim", "64", "--no-compile"]
    # fmt: on
    with one_thread():
        res = _script("bench_pretrain").main(cpu_args)
        gpu = _script("gpu_pretrain").main(gpu_args)
    assert set(res["images_per_s"]) == {"supervised", "mae@0.75", "mae@0.9", "mocov3"}
    ratios = res["mae_over_supervised"]
    assert ratios["mae@0.9"]["flops"] > ratios["mae@0.75"]["flops"] > 1  # masking more encodes fewer tokens
    for name in ("mae", "mocov3"):
        runs = gpu[name]
        assert runs["eager_fp32"]["images_per_s"] > 0 and runs["bf16_eager"]["tflop_per_step"] > 0
        assert runs["speedup_vs_eager_fp32"] > 0
