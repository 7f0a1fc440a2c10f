"""GPU benchmark: one ViT-B/16 fine-tuning step, bf16 autocast + torch.compile against eager fp32.

Standalone: needs only torch and timm (no fairscan, no pydantic, no network). The images are already on the GPU
(a pool of random uint8 images, normalised on the device), so this measures the model step alone: forward,
masked multi-label BCE, backward, AdamW, as fairscan's fine-tuning recipe runs it (DropPath 0.2, global average
pooling, 14 labels). Reported per configuration: images/s, ms/step, and the model FLOP utilisation (MFU)

    MFU = images/s x training FLOPs per image / peak FLOP/s

with the training FLOPs per image counted by ``torch.utils.flop_counter`` (forward x 3; ViT-B/16 at 224 px is
~105.5 GFLOPs) and the peak given by ``--peak-tflops`` (default 790: what an H200 measured on a large bf16
matmul). The fp32 baseline runs with TF32 off unless ``--baseline-tf32``; the output says which.

Target on one H200: bf16 + compile at least 3x the eager fp32 baseline and at least 2,800 images/s.

    python benchmarks/gpu_finetune.py                                     # ViT-B/16, 224 px, batch 256
    python benchmarks/gpu_finetune.py --batch 128 --steps 50
    python benchmarks/gpu_finetune.py --device cpu --model vit_tiny_patch16_224 --image-size 32 --batch 4 \\
        --steps 2 --warmup 1 --no-compile                                 # smoke test without a GPU
"""

from __future__ import annotations

import argparse
import json
import time


def build(model_name: str, image_size: int, num_classes: int, device, channels_last: bool):
    import timm
    import torch

    kwargs = {"img_size": image_size} if "vit" in model_name else {}
    model = timm.create_model(
        model_name, num_classes=num_classes, drop_path_rate=0.2, global_pool="avg", **kwargs
    )
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_flops_per_image(model_name: str, image_size: int, num_classes: int) -> float:
    """3 x the forward FLOPs of one image (backward ~ 2 x forward), counted on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build(model_name, image_size, num_classes, "cpu", False).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return 3.0 * counter.get_total_flops()


def run(args, *, bf16: bool, compile: bool, tf32: bool) -> dict:
    import torch
    import torch.nn.functional as F

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    channels_last = "resnet" in args.model
    model = build(args.model, args.image_size, args.num_classes, device, channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=cuda)
    step_model = torch.compile(model) if compile else model

    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randint(
        0,
        256,
        (args.pool, 1, args.image_size, args.image_size),
        dtype=torch.uint8,
        device=device,
        generator=g,
    )
    labels = torch.randint(0, 2, (args.pool, args.num_classes), device=device, generator=g).float()
    labels[torch.rand(labels.shape, device=device, generator=g) < 0.3] = float("nan")  # masked labels
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def batch(i: int):
        idx = torch.arange(i * args.batch, (i + 1) * args.batch, device=device) % args.pool
        x = (pool[idx].float().div_(255).expand(-1, 3, -1, -1) - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels[idx]

    def step(i: int) -> None:
        x, y = batch(i)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = step_model(x)
        mask = ~torch.isnan(y)
        loss = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(y), reduction="none")
        loss = (loss * mask).sum() / mask.sum().clamp(min=1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for i in range(args.warmup):  # includes compilation
        step(i)
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync()
    seconds = time.perf_counter() - t0
    ips = args.steps * args.batch / seconds
    out = {
        "bf16": bf16, "compile": compile, "tf32": tf32 if cuda else None,
        "images_per_s": round(ips, 1), "ms_per_step": round(1000 * seconds / args.steps, 2),
        "warmup_s": round(warm_s, 1),
    }  # fmt: skip
    if cuda:
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--num-classes", type=int, default=14)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--pool", type=int, default=1024, help="images kept on the device")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (bf16 eager only)")
    ap.add_argument("--baseline-tf32", action="store_true", help="let the fp32 baseline use TF32 matmuls")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)

    import timm
    import torch

    info = {"torch": torch.__version__, "timm": timm.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    flops = train_flops_per_image(args.model, args.image_size, args.num_classes)
    results = {
        "setup": {**info, "model": args.model, "image_size": args.image_size, "batch": args.batch,
                  "steps": args.steps, "train_gflops_per_image": round(flops / 1e9, 2),
                  "peak_tflops": args.peak_tflops},
    }  # fmt: skip
    runs = []
    if not args.skip_baseline:
        runs.append(("eager_fp32", run(args, bf16=False, compile=False, tf32=args.baseline_tf32)))
    runs.append(("bf16_eager", run(args, bf16=True, compile=False, tf32=True)))
    if not args.no_compile:
        runs.append(("bf16_compile", run(args, bf16=True, compile=True, tf32=True)))
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    for name, r in runs:
        r["mfu"] = round(r["images_per_s"] * flops / (args.peak_tflops * 1e12), 4)
        results[name] = r
    best = runs[-1][1]
    if "eager_fp32" in results:
        results["speedup_vs_eager_fp32"] = round(
            best["images_per_s"] / results["eager_fp32"]["images_per_s"], 2
        )
    results["target"] = {"images_per_s": 2800, "speedup": 3.0}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
