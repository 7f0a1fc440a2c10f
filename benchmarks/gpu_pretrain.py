"""GPU benchmark: MAE and MoCo v3 pre-training steps on a ViT-B/16, bf16 (+ torch.compile) against eager fp32.

Standalone: needs only torch and timm (the GPU machine has no pydantic, no pandas, no accelerate, no
network). It loads fairscan's two objective modules straight from this checkout without importing the rest
of the package, so what it times is the code ``fairscan pretrain`` runs. Each step is forward + backward +
fused AdamW. Every objective runs three ways in the same process, each from the same fresh model: eager
fp32 (the baseline; TF32 off unless ``--baseline-tf32``), bf16 autocast, and bf16 autocast + torch.compile;
the speed-up of the best over the baseline is printed beside them. FLOPs per step come from
``torch.utils.flop_counter`` (matmuls, convs and attention; forward and backward), and

    MFU = achieved FLOP/s / peak FLOP/s

with the peak from ``--peak-tflops`` (default 790: what an H200 measured here on a large bf16 matmul; the
datasheet's dense bf16 figure is about 990).

    python benchmarks/gpu_pretrain.py                                  # on the GPU machine: ViT-B/16, 224 px
    python benchmarks/gpu_pretrain.py --mask-ratio 0.9 --only mae      # Medical MAE's masking
    python benchmarks/gpu_pretrain.py --device cpu --arch vit_tiny_patch16_224 --image-size 64 \\
        --mae-batch 4 --moco-batch 4 --steps 2 --warmup 1 --mlp-dim 256 --no-compile  # CPU smoke test
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_objectives():
    """Import fairscan.train.objectives.{_mae,_mocov3} without running any package ``__init__``."""
    for name, rel in (
        ("fairscan", "fairscan"),
        ("fairscan.train", "fairscan/train"),
        ("fairscan.train.objectives", "fairscan/train/objectives"),
    ):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(ROOT / rel)]
            sys.modules[name] = pkg
    mae = importlib.import_module("fairscan.train.objectives._mae")
    moco = importlib.import_module("fairscan.train.objectives._mocov3")
    return mae, moco


def bench(model, batch, *, steps, warmup, bf16, compile_model, tf32, device, peak) -> dict:
    """Time ``steps`` optimiser steps after ``warmup``; ``peak`` in TFLOP/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), fused=True)  # as fairscan builds it
    fwd = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = fwd(batch)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with FlopCounterMode(display=False) as counter:  # one eager step; its FLOPs are every step's
        with autocast:
            loss = model(batch)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    n = batch.shape[0]
    achieved = flops / seconds / 1e12
    out = {
        "batch": n,
        "images_per_s": round(n / seconds, 1 if device.type == "cuda" else 3),
        "s_per_step": round(seconds, 4),
        "tflop_per_step": round(flops / 1e12, 4),
        "achieved_tflops": round(achieved, 2 if achieved >= 1 else 5),
        "mfu": round(achieved / peak, 4),
        "tf32": tf32,
        "loss": round(float(loss.detach()), 4),
    }
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--mae-batch", type=int, default=256, help="per-GPU batch for MAE")
    ap.add_argument("--moco-batch", type=int, default=128, help="per-GPU batch for MoCo v3 (two views each)")
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--mlp-dim", type=int, default=4096, help="MoCo v3 projector/predictor hidden width")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="the chip's bf16 peak, for MFU")
    ap.add_argument("--no-compile", action="store_true", help="skip the bf16 + torch.compile run")
    ap.add_argument("--skip-baseline", action="store_true", help="skip the eager fp32 run")
    ap.add_argument("--baseline-tf32", action="store_true", help="let the fp32 baseline use TF32 matmuls")
    ap.add_argument("--only", choices=["mae", "mocov3"], default=None)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = ap.parse_args(argv)

    import timm
    import torch

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    mae_mod, moco_mod = load_objectives()
    size = (3, args.image_size, args.image_size)
    gen = torch.Generator().manual_seed(0)
    objectives = {
        "mae": (
            lambda: mae_mod.build_mae(args.arch, img_size=args.image_size, mask_ratio=args.mask_ratio),
            torch.randn(args.mae_batch, *size, generator=gen),
        ),
        "mocov3": (
            lambda: moco_mod.build_mocov3(args.arch, img_size=args.image_size, mlp_dim=args.mlp_dim),
            torch.randn(args.moco_batch, 2, *size, generator=gen),
        ),
    }
    variants = [] if args.skip_baseline else [("eager_fp32", False, False, args.baseline_tf32)]
    variants.append(("bf16_eager", True, False, True))
    if not args.no_compile:
        variants.append(("bf16_compile", True, True, True))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict = {
        "setup": {"arch": args.arch, "image_size": args.image_size, "mask_ratio": args.mask_ratio,
                  "device": where, "torch": torch.__version__, "timm": timm.__version__,
                  "peak_tflops": args.peak_tflops, "steps": args.steps},
    }  # fmt: skip
    for name, (build, batch) in objectives.items():
        if args.only not in (None, name):
            continue
        runs = {}
        for variant, bf16, compile_model, tf32 in variants:
            torch.manual_seed(0)  # the same fresh model for every variant
            model = build()
            if name == "mocov3":
                model.total_steps = args.steps + args.warmup + 1  # the momentum schedule's length
            runs[variant] = bench(model, batch.to(device), steps=args.steps, warmup=args.warmup, bf16=bf16,
                                  compile_model=compile_model, tf32=tf32, device=device,
                                  peak=args.peak_tflops)  # fmt: skip
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "eager_fp32" in runs:
            best = max(runs.values(), key=lambda r: r["images_per_s"])
            runs["speedup_vs_eager_fp32"] = round(
                best["images_per_s"] / runs["eager_fp32"]["images_per_s"], 2
            )
        results[name] = runs
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
