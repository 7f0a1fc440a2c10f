"""GPU benchmark, end to end: fairscan's own ``finetune``, ``pretrain`` and ``predict`` on a synthetic CheXpert held
in the image cache, against the standalone model step of ``gpu_finetune.py`` / ``gpu_pretrain.py`` in the same run.

Every configuration is a real run through the library (``fairscan.train.finetune.finetune``,
``fairscan.train.pretrain.pretrain``: settings, run folder, Accelerate, the loop, the data loader with
``--workers`` processes, the host-to-device copy, validation and checkpoints), timed step by step with
``fairscan.train.timing`` (CUDA synchronised around every ``next(loader)``). Configurations, compiled ones last:

    vit_ft        ViT-B/16 fine-tuning, 224 px, batch 128, layer-decay AdamW, DropPath 0.2, RandAugment, bf16
    bit_ft        BiT ResNet-152x2 fine-tuning (its recipe's batch 32, channels-last)
    linear_probe  ViT-B/16 linear probe (frozen backbone, BN + linear head, LARS)
    mae_075       MAE pre-training, mask ratio 0.75
    mae_090       MAE pre-training, mask ratio 0.90 (Medical MAE)
    mocov3        MoCo v3 pre-training (two views)
    vit_ft_compile  vit_ft with --compile

Per configuration: images/s over ``--steps`` optimiser steps after ``--warmup`` (compilation falls in the
warm-up); the share of step time blocked in ``next(loader)``; MFU against the nominal ``--peak-tflops`` (989, an
H200's dense bf16) and against a large bf16 matmul measured here; peak GPU memory; seconds per phase (warm-up,
measured steps, the rest: set-up, validation, checkpoints). Then ``predict`` (bf16 and fp32) on the training
split with the fine-tuned ViT, its images/s and the largest per-label AUC gap between the two; and the
standalone steps (eager fp32 with TF32 off, bf16 eager, bf16 compile) with the ratio of each end-to-end run to
its standalone step. ``--max-seconds`` bounds the whole run: configurations not started by then are skipped
and named in ``skipped``.

    python benchmarks/gpu_e2e.py --max-seconds 360                     # on one H200
    python benchmarks/gpu_e2e.py --device cpu --tiny ...               # see tests/test_gpu_e2e.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
CONFIGS = ("vit_ft", "bit_ft", "linear_probe", "mae_075", "mae_090", "mocov3", "vit_ft_compile")
NOMINAL_TFLOPS = 989.0


def host_workers() -> int:
    """Data-loading workers for one process on this host: every core but the one the training loop runs on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus - 1)


def matmul_tflops(device, size: int, dtype_name: str) -> float:
    """A large square matmul's achieved TFLOP/s: what the chip really delivers to a GEMM."""
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e12


def make_data(root: Path, *, train_images: int, image_size: int, source_size: int) -> Path:
    """A synthetic CheXpert manifest with at least ``train_images`` training images, in an image cache."""
    from fairscan.data.cache import build_cache
    from fairscan.data.dataset import load_size
    from fairscan.data.synthetic import prepare_synthetic_manifest
    from fairscan.schema import read_manifest

    patients = max(20, math.ceil(train_images / 0.9))  # ~0.95 training images per patient in the synthetic layout
    while True:
        prepare_synthetic_manifest(root, patients=patients, image_size=source_size, seed=0)
        if (read_manifest(root)["split"] == "train").sum() >= train_images:
            break
        patients = int(patients * 1.3) + 1
        import shutil

        shutil.rmtree(root)
    build_cache(root, size=load_size(image_size), workers=host_workers())
    return root


def settings(name: str, args, data: Path, out: Path):
    """(stage, settings) of a configuration: what a user would give ``fairscan finetune`` / ``pretrain``."""
    from fairscan.train.finetune import FinetuneConfig
    from fairscan.train.pretrain import pretrain_config

    common = dict(out=str(out), cpu=args.device == "cpu", precision=args.precision, workers=args.workers,
                  save_every=0, log_every=10**6, image_size=args.image_size)  # fmt: skip
    bit = name == "bit_ft"
    batch = args.bit_batch if bit else args.batch
    # enough epochs of the synthetic training split for warm-up + measured steps at this batch, no more
    epochs = math.ceil((args.warmup + args.steps) / max(1, args.train_images // batch))
    if name.startswith(("vit_ft", "linear_probe", "bit_ft")):
        return "finetune", FinetuneConfig(
            model="bit" if bit else "mae", manifest=str(data), init="random", arch=args.bit_arch if bit else args.arch,
            batch_size=batch, epochs=epochs, linear_probe=name == "linear_probe", compile=name.endswith("_compile"),
            eval_every=epochs, **common,
        )  # fmt: skip
    method = "mocov3" if name == "mocov3" else "mae"
    extra = {"mask_ratio": 0.9 if name == "mae_090" else 0.75} if method == "mae" else {"mlp_dim": args.mlp_dim}
    if method == "mae" and args.decoder_dim:
        extra.update(decoder_dim=args.decoder_dim, decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads)
    return "pretrain", pretrain_config(
        method=method, manifests=[str(data)], splits=["train"], arch=args.arch, batch_size=batch, accum=1,
        epochs=epochs, **extra, **common,
    )  # fmt: skip


def train_flops_per_image(stage: str, cfg, device) -> float:
    """FLOPs of one training image (forward + backward of fairscan's own model and loss), counted by
    ``torch.utils.flop_counter`` on the meta device (shapes only), or on ``device`` where meta cannot run."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fairscan.models import LINEAR_HEAD, PROBE_HEAD, build_model, classifier_name
    from fairscan.train.objectives import method

    n = 2  # BatchNorm in training mode needs more than one image

    def count(where) -> float:
        with torch.device(where):
            if stage == "finetune":
                c = cfg.resolve()
                model = build_model(c.arch, num_classes=14, pooling=c.pooling, image_size=c.image_size,
                                    drop_path=c.drop_path, head=PROBE_HEAD if c.linear_probe else LINEAR_HEAD)  # fmt: skip
                if c.linear_probe:  # as fine-tuning freezes it: the backward reaches the head alone
                    prefix = classifier_name(model) + "."
                    for name, p in model.named_parameters():
                        p.requires_grad_(name.startswith(prefix))
                x = torch.zeros(n, 3, c.image_size, c.image_size)
                run = lambda: model(x).float().sum()  # noqa: E731
            else:
                model = method(cfg.method).build(cfg.resolve())
                model.total_steps = 10
                views = (2,) if cfg.method == "mocov3" else ()
                x = torch.zeros(n, *views, 3, cfg.image_size, cfg.image_size)
                run = lambda: model(x)  # noqa: E731
        model.train()
        with FlopCounterMode(display=False) as counter:
            run().backward()
        return counter.get_total_flops() / n

    try:
        return count("meta")
    except (RuntimeError, NotImplementedError):  # e.g. MoCo v3's momentum schedule reads a tensor's value
        return count(device)


def one_config(name: str, args, data: Path, work: Path, peaks: dict) -> dict:
    import torch

    from fairscan.train import timing
    from fairscan.train.finetune import finetune
    from fairscan.train.pretrain import pretrain

    stage, cfg = settings(name, args, data, work / name)
    cuda = args.device != "cpu"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with timing.recording(sync=True) as clock:
        record = (finetune if stage == "finetune" else pretrain)(cfg)
    total = time.perf_counter() - t0
    steps = [s for s in clock.steps if s["kind"] == "train"]  # validation batches are timed apart
    batch = record["batch"]["effective"]
    measured = steps[args.warmup : args.warmup + args.steps]
    if not measured:
        raise SystemExit(f"{name}: only {len(steps)} steps ran; raise --epochs or lower --warmup/--steps")
    seconds = sum(s["seconds"] for s in measured)
    ips = batch * len(measured) / seconds
    flops = train_flops_per_image(stage, cfg, torch.device(args.device))
    out = {
        "stage": stage, "batch": batch, "steps_measured": len(measured), "images_per_s": round(ips, 2),
        "ms_per_step": round(1000 * seconds / len(measured), 2),
        "data_wait_share": round(sum(s["data_wait"] for s in measured) / seconds, 4),
        "train_gflops_per_image": round(flops / 1e9, 3),
        "mfu_vs_nominal": round(ips * flops / (args.peak_tflops * 1e12), 4),
        "mfu_vs_matmul": round(ips * flops / (peaks["matmul_tflops"] * 1e12), 4),
        "phases_s": {"warmup": round(sum(s["seconds"] for s in steps[: args.warmup]), 2),
                     "measured_steps": round(seconds, 2), "rest": round(total - sum(s["seconds"] for s in steps), 2),
                     "total": round(total, 2)},
        "precision": args.precision,
        "compile": bool(getattr(cfg, "compile", False)), "workers": args.workers,
        "run": str(work / name),
    }  # fmt: skip
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def predict_figures(args, data: Path, run: Path, work: Path) -> dict:
    """``fairscan predict`` on the training split with the fine-tuned ViT: images/s per precision, the AUC gap."""
    import numpy as np

    from fairscan.schema import read_predictions
    from fairscan.train import timing
    from fairscan.train.predict import PredictConfig, predict
    from fairscan.train.supervised import label_aucs

    out: dict = {}
    probs = {}
    for precision in ("bf16", "fp32"):
        path = work / f"predict-{precision}.parquet"
        cfg = PredictConfig(run=str(run), manifest=str(data), out=str(path), split="train", cpu=args.device == "cpu",
                            precision=precision, workers=args.workers, batch_size=args.predict_batch)  # fmt: skip
        t0 = time.perf_counter()
        with timing.recording(sync=True) as clock:  # one "step" per batch: copy, forward, gather
            predict(cfg)
        seconds = time.perf_counter() - t0
        preds = read_predictions(path)
        f = preds.frame
        p = f[[f"prob_{lab}" for lab in preds.labels]].to_numpy()
        t = f[[f"label_{lab}" for lab in preds.labels]].to_numpy(dtype=np.float64)
        probs[precision] = label_aucs(p, t, preds.labels)
        timed = [b for b in clock.steps if b["kind"] == "inference"]
        batches = timed[1:] or timed  # the first batch warms up (cuDNN, the allocator)
        per_batch = len(f) / len(timed)
        out[precision] = {
            "images": len(f), "batches": len(timed),
            "images_per_s": round(per_batch * len(batches) / sum(b["seconds"] for b in batches), 1),
            "data_wait_share": round(sum(b["data_wait"] for b in batches) / sum(b["seconds"] for b in batches), 4),
            "images_per_s_whole_command": round(len(f) / seconds, 1),
        }  # fmt: skip
    gaps = [abs(probs["bf16"][k] - v) for k, v in probs["fp32"].items() if v is not None]
    out["max_auc_gap_bf16_vs_fp32"] = round(max(gaps), 6) if gaps else None
    return out


def standalone(args, *, compiled: bool) -> dict:
    """The model step alone (images already on the device), from gpu_finetune.py and gpu_pretrain.py: eager
    (fp32 with TF32 off, the baseline; the run's precision; MAE 0.75), or ``compiled`` (the ViT step)."""
    import torch

    sys.path.insert(0, str(HERE))
    import gpu_finetune
    import gpu_pretrain

    from fairscan.models import register_tiny_models

    register_tiny_models()
    ns = argparse.Namespace(model=args.arch, image_size=args.image_size, batch=args.batch, num_classes=14,
                            steps=args.steps, warmup=args.warmup, pool=max(args.batch * 2, 64), device=args.device)
    bf16 = args.precision != "fp32"
    if compiled:
        return {"vit_ft": {"compile": gpu_finetune.run(ns, bf16=bf16, compile=True, tf32=True)}}
    out = {"vit_ft": {"eager_fp32": gpu_finetune.run(ns, bf16=False, compile=False, tf32=False)}}
    out["vit_ft"]["eager"] = gpu_finetune.run(ns, bf16=bf16, compile=False, tf32=True)
    mae_mod, _ = gpu_pretrain.load_objectives()
    device = torch.device(args.device)
    torch.manual_seed(0)
    kw = dict(decoder_dim=args.decoder_dim, decoder_depth=args.decoder_depth,
              decoder_heads=args.decoder_heads) if args.decoder_dim else {}  # fmt: skip
    mae = mae_mod.build_mae(args.arch, img_size=args.image_size, mask_ratio=0.75, **kw)
    batch = torch.randn(args.batch, 3, args.image_size, args.image_size)
    out["mae_075"] = {"eager": gpu_pretrain.bench(mae, batch.to(device), steps=args.steps, warmup=args.warmup,
                      bf16=bf16, compile_model=False, tf32=True, device=device, peak=args.peak_tflops)}  # fmt: skip
    return out


def ratios(results: dict) -> dict:
    """Each end-to-end run over its standalone step, and the compiled fine-tuning over the eager fp32 step."""
    sa, r = results.get("standalone", {}), {}
    pairs = (("vit_ft", "vit_ft", "eager"), ("vit_ft_compile", "vit_ft", "compile"), ("mae_075", "mae_075", "eager"))
    for e2e, key, variant in pairs:
        if e2e in results["configs"] and variant in sa.get(key, {}):
            r[f"{e2e}_over_standalone"] = round(
                results["configs"][e2e]["images_per_s"] / sa[key][variant]["images_per_s"], 3
            )
    best = results["configs"].get("vit_ft_compile") or results["configs"].get("vit_ft")
    if best and "eager_fp32" in sa.get("vit_ft", {}):
        r["vit_ft_best_over_standalone_eager_fp32"] = round(best["images_per_s"] / sa["vit_ft"]["eager_fp32"]["images_per_s"], 3)
    cfgs = results["configs"]
    if "mae_075" in cfgs and "vit_ft" in cfgs:
        counted = cfgs["vit_ft"]["train_gflops_per_image"] / cfgs["mae_075"]["train_gflops_per_image"]
        r["mae_075_over_vit_ft"] = round(cfgs["mae_075"]["images_per_s"] / cfgs["vit_ft"]["images_per_s"], 3)
        r["mae_075_counted_flop_ratio"] = round(counted, 3)
    if "vit_ft_compile" in cfgs and "vit_ft" in cfgs:
        r["compile_over_eager"] = round(cfgs["vit_ft_compile"]["images_per_s"] / cfgs["vit_ft"]["images_per_s"], 3)
    return r


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, or cpu (tests)")
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument("--bit-arch", default="resnetv2_152x2_bit")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--source-size", type=int, default=64, help="pixels of the synthetic images (the cache resizes)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bit-batch", type=int, default=32, help="BiT's recipe batch")
    ap.add_argument("--predict-batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps measured per configuration")
    ap.add_argument("--warmup", type=int, default=8, help="steps before measuring (compilation falls here)")
    ap.add_argument("--steps-per-epoch", type=int, default=10, help="sets the synthetic training split's size")
    ap.add_argument("--workers", type=int, default=None, help="data-loading workers (default: cores - 1)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--mlp-dim", type=int, default=4096, help="MoCo v3 projector/predictor width")
    ap.add_argument("--decoder-dim", type=int, default=None, help="MAE decoder width (tiny runs)")
    ap.add_argument("--decoder-depth", type=int, default=None)
    ap.add_argument("--decoder-heads", type=int, default=None)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled configurations")
    ap.add_argument("--no-standalone", dest="standalone", action="store_false")
    ap.add_argument("--no-predict", dest="predict", action="store_false")
    ap.add_argument("--max-seconds", type=float, default=float("inf"), help="skip what has not started by then")
    ap.add_argument("--peak-tflops", type=float, default=NOMINAL_TFLOPS, help="nominal bf16 peak, for MFU")
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    args.workers = host_workers() if args.workers is None else args.workers
    args.train_images = max(args.batch, args.bit_batch) * args.steps_per_epoch  # the synthetic split's size
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    import timm
    import torch

    start = time.perf_counter()
    device = torch.device(args.device)
    configs = [c for c in args.configs.split(",") if args.compile or not c.endswith("_compile")]
    mm_dtype = "fp32" if args.precision == "fp32" else "bf16"
    peaks = {"nominal_tflops": args.peak_tflops, "matmul_tflops": round(matmul_tflops(device, args.matmul_size, mm_dtype), 2),
             "matmul": f"{args.matmul_size}^3 {mm_dtype}"}  # fmt: skip
    results: dict = {
        "setup": {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
                  "timm": timm.__version__, "cpus": host_workers() + 1, "workers": args.workers, "arch": args.arch,
                  "image_size": args.image_size, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                  "train_images": args.train_images, **peaks},
        "configs": {}, "skipped": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        data = make_data(work / "chexpert", train_images=args.train_images, image_size=args.image_size,
                         source_size=args.source_size)  # fmt: skip
        results["setup"]["data_s"] = round(time.perf_counter() - t0, 1)
        # eager runs, then the standalone eager steps and predict, then what compiles (slowest to warm up)
        plan = [(c, "config", c) for c in configs if not c.endswith("_compile")]
        plan += [("standalone", "standalone", False)] if args.standalone else []
        plan += [("predict", "predict", None)] if args.predict else []
        plan += [(c, "config", c) for c in configs if c.endswith("_compile")]
        plan += [("standalone_compile", "standalone", True)] if args.standalone and args.compile else []
        for label, kind, what in plan:
            if time.perf_counter() - start > args.max_seconds:
                results["skipped"].append(label)
                continue
            if kind == "config":
                results["configs"][what] = one_config(what, args, data, work, peaks)
                print(f"{what}: {json.dumps(results['configs'][what])}", file=sys.stderr, flush=True)
            elif kind == "standalone":
                for key, runs in standalone(args, compiled=what).items():
                    results.setdefault("standalone", {}).setdefault(key, {}).update(runs)
            elif "vit_ft" in results["configs"]:
                results["predict"] = predict_figures(args, data, Path(results["configs"]["vit_ft"]["run"]), work)
            else:
                results["skipped"].append("predict (needs vit_ft)")
            print(f"{label}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    results["ratios"] = ratios(results)
    results["total_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        from fairscan.io import write_text

        write_text(args.out, text + "\n")
    return results


if __name__ == "__main__":
    main()
