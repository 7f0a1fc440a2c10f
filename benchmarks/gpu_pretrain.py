"""GPU benchmark: MAE and MoCo v3 pre-training steps on a ViT-B/16 in bf16, images/s and FLOP utilisation.

Standalone: needs only torch and timm (the GPU machine has no pydantic, no pandas, no accelerate, no
network). It loads fairscan's two objective modules straight from this checkout without importing the rest
of the package, so what it times is the code ``fairscan pretrain`` runs. Each step is forward + backward +
fused AdamW under bf16 autocast; FLOPs per step come from ``torch.utils.flop_counter`` (matmuls, convs and
attention; forward and backward), utilisation = achieved FLOP/s / the chip's dense bf16 peak.

    python benchmarks/gpu_pretrain.py                                  # on the GPU machine: ViT-B/16, 224 px
    python benchmarks/gpu_pretrain.py --compile                        # also try torch.compile
    python benchmarks/gpu_pretrain.py --device cpu --arch vit_tiny_patch16_224 --image-size 64 \\
        --mae-batch 4 --moco-batch 4 --steps 2 --warmup 1 --dtype fp32 --mlp-dim 256 --threads 1  # CPU smoke test
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
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10G": 70.0}


def load_objectives():
    """Import fairscan.train.objectives.{mae,mocov3} without running any package ``__init__``."""
    for name, rel in (
        ("fairscan", "fairscan"),
        ("fairscan.train", "fairscan/train"),
        ("fairscan.train.objectives", "fairscan/train/objectives"),
    ):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(ROOT / rel)]
            sys.modules[name] = pkg
    mae = importlib.import_module("fairscan.train.objectives.mae")
    moco = importlib.import_module("fairscan.train.objectives.mocov3")
    return mae, moco


def peak_tflops(device, override: float | None) -> float | None:
    import torch

    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def bench(name, model, batch, *, steps, warmup, dtype, device, peak, compile_model):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

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
        "model": name,
        "batch": n,
        "images_per_s": round(n / seconds, 1 if device.type == "cuda" else 3),
        "s_per_step": round(seconds, 4),
        "tflop_per_step": round(flops / 1e12, 4),
        "achieved_tflops": round(achieved, 2 if achieved >= 1 else 5),
        "flop_utilisation": round(achieved / peak, 3) if peak else None,
        "loss": round(float(loss.detach()), 4),
    }
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
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
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="the chip's dense peak (auto for known GPUs)"
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the objectives")
    ap.add_argument("--only", choices=["mae", "mocov3"], default=None)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mae_mod, moco_mod = load_objectives()
    peak = peak_tflops(device, args.peak_tflops)
    gen = torch.Generator().manual_seed(0)
    size = (3, args.image_size, args.image_size)
    results = []
    common = dict(steps=args.steps, warmup=args.warmup, dtype=args.dtype, device=device, peak=peak,
                  compile_model=args.compile)  # fmt: skip
    if args.only in (None, "mae"):
        torch.manual_seed(0)
        model = mae_mod.build_mae(args.arch, img_size=args.image_size, mask_ratio=args.mask_ratio)
        batch = torch.randn(args.mae_batch, *size, generator=gen).to(device)
        results.append(bench("mae", model, batch, **common))
        del model, batch
    if args.only in (None, "mocov3"):
        torch.manual_seed(0)
        model = moco_mod.build_mocov3(args.arch, img_size=args.image_size, mlp_dim=args.mlp_dim)
        model.total_steps = args.steps + args.warmup + 1
        batch = torch.randn(args.moco_batch, 2, *size, generator=gen).to(device)
        results.append(bench("mocov3", model, batch, **common))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# {args.arch} at {args.image_size} px, {args.dtype}, on {where}; peak "
        f"{peak if peak else 'unknown'} TFLOP/s; torch {torch.__version__}"
    )
    for r in results:
        print(json.dumps(r))
    return results


if __name__ == "__main__":
    main()
