"""CPU benchmark: the per-step cost of each mitigation method against ERM, same model, data and run.

Every method trains the same timm model (fresh init, same seed) through fairscan's loop (``train()``) on the same
synthetic CheXpert manifest, read through the same image cache and Dataset, with subgroups by race: ``erm`` is
today's objective (``fairscan.train.supervised.Supervised``), the others are ``fairscan.train.mitigation``'s, set
up as ``fairscan finetune --mitigation NAME --group-attr race`` sets them up. Rounds alternate the methods (erm,
resample, reweight, groupdro, adversarial, erm, ...) so that a busy machine slows all alike. Per method: the
median over rounds of the loop's own seconds per optimiser step (``TrainResult.train_seconds``: the steps alone,
without set-up and the epoch-end checkpoint) and of the process's CPU seconds per step over the whole
``train()`` call; the ratio of each to ERM's. Targets (issue 13): resample, reweight and groupdro within 1.05x,
adversarial within 1.3x. Run with ``--threads 1`` on a shared machine (more threads than free cores make every
loop many times slower and the numbers meaningless).

    python benchmarks/bench_mitigation.py --rounds 3 --threads 1                 # vit_tiny, 64 px, batch 32
    python benchmarks/bench_mitigation.py --arch fairscan_vit_micro --image-size 32 --steps 6 --rounds 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
METHODS = ("erm", "resample", "reweight", "groupdro", "adversarial")
TARGET = {"resample": 1.05, "reweight": 1.05, "groupdro": 1.05, "adversarial": 1.3}


def _loop_bench():
    """``bench_train_loop``'s data helpers (one synthetic manifest with an image cache, one Dataset)."""
    spec = importlib.util.spec_from_file_location("bench_train_loop", HERE / "bench_train_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_method(method: str, ds, frame, *, root: Path, arch: str, image_size: int, batch: int, steps: int,
               out: Path) -> tuple[float, float, int]:  # fmt: skip
    """One method's run of the loop; (loop seconds per step, CPU seconds per step, steps)."""
    from fairscan.data.device_input import DeviceInput
    from fairscan.models import build_model
    from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from fairscan.train import mitigation
    from fairscan.train.finetune import FinetuneConfig
    from fairscan.train.loop import TrainConfig, make_accelerator, train

    shutil.rmtree(out, ignore_errors=True)
    cfg = FinetuneConfig(model="mae", manifest=str(root), out=str(out), arch=arch, image_size=image_size,
                         mitigation=method, group_attr=None if method == "erm" else "race").resolve()  # fmt: skip
    train_df, groups = mitigation.split(cfg, frame, frame, ds.labels)
    assert len(train_df) == len(ds), "the benchmark's rows all have a race"
    acc = make_accelerator(cpu=True, seed=0)
    model = build_model(arch, num_classes=len(ds.labels), pooling="avg", image_size=image_size, drop_path=0.2)
    objective, sampler = mitigation.objective_for(cfg, model, ds.labels, groups, ds, accelerator=acc, out=out,
                                                  to_input=DeviceInput(IMAGENET_MEAN, IMAGENET_STD))  # fmt: skip
    per_epoch = len(ds) // batch
    tcfg = TrainConfig(epochs=max(1, -(-steps // per_epoch)), batch_size=batch, lr=1e-4, min_lr=1e-5,
                       warmup_epochs=0.5, weight_decay=cfg.weight_decay, layer_decay=0.55, save_every=0,
                       log_every=10)  # fmt: skip
    c0 = time.process_time()
    result = train(objective, accelerator=acc, train_set=ds, cfg=tcfg, out_dir=out, sampler=sampler)
    cpu = time.process_time() - c0
    return result.train_seconds / result.steps, cpu / result.steps, result.steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="vit_tiny_patch16_224")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="optimiser steps per run (whole epochs)")
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    from fairscan.models import register_tiny_models
    from fairscan.schema import read_manifest

    torch.set_num_threads(args.threads)
    register_tiny_models()
    bench = _loop_bench()
    with tempfile.TemporaryDirectory() as tmp:
        root = bench.make_data(Path(tmp) / "data", patients=args.patients, image_size=args.image_size)
        ds = bench.dataset(root, args.image_size)
        frame = read_manifest(root, split="train")
        common = dict(root=root, arch=args.arch, image_size=args.image_size, batch=args.batch, steps=args.steps)
        run_method("erm", ds, frame, out=Path(tmp) / "warm", **common)  # warm-up: imports, allocator, caches
        loop: dict[str, list[float]] = {m: [] for m in METHODS}
        cpu: dict[str, list[float]] = {m: [] for m in METHODS}
        for _ in range(args.rounds):
            for method in METHODS:
                s, c, steps = run_method(method, ds, frame, out=Path(tmp) / method, **common)
                loop[method].append(s)
                cpu[method].append(c)
    res = {"arch": args.arch, "image_size": args.image_size, "batch": args.batch, "steps": steps,
           "train_images": len(ds), "rounds": args.rounds, "threads": args.threads, "methods": {}}  # fmt: skip
    base_loop, base_cpu = statistics.median(loop["erm"]), statistics.median(cpu["erm"])
    for method in METHODS:
        ms, mc = statistics.median(loop[method]), statistics.median(cpu[method])
        res["methods"][method] = {
            "loop_ms_per_step": round(1000 * ms, 2), "cpu_ms_per_step": round(1000 * mc, 2),
            "ratio_loop": round(ms / base_loop, 3), "ratio_cpu": round(mc / base_cpu, 3),
            "target": TARGET.get(method), "per_round_loop_ms": [round(1000 * x, 1) for x in loop[method]],
        }  # fmt: skip
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{args.arch} at {args.image_size} px, batch {args.batch}, {steps} steps x {args.rounds} rounds, "
          f"{len(ds)} train images, {args.threads} thread(s); medians, ratio = method / erm")  # fmt: skip
    print(f"{'method':<12} {'loop ms/step':>12} {'ratio':>7} {'cpu ms/step':>12} {'ratio':>7} {'target':>7}")
    for method, r in res["methods"].items():
        target = f"{r['target']:.2f}" if r["target"] else "-"
        print(f"{method:<12} {r['loop_ms_per_step']:>12.1f} {r['ratio_loop']:>7.3f} {r['cpu_ms_per_step']:>12.1f} "
              f"{r['ratio_cpu']:>7.3f} {target:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
