"""CPU benchmark: fairscan's training loop against a plain hand-written timm + torch loop.

Both loops train the same timm model (fresh init, same seed) on the same synthetic CheXpert manifest read through
the same image cache and the same Dataset (RandAugment, masked BCE, fused AdamW), with the same batch size and
threads. The plain loop is ``DataLoader -> forward -> loss -> backward -> step``; fairscan's adds everything a run
has (Accelerate, layer-wise lr decay groups, per-step lr, the non-finite check, seeded per-sample augmentation,
metrics.jsonl). Rounds alternate (plain, fairscan, plain, ...) so that a busy machine slows both alike; the ratio
of images/s must be at least 0.95. Both are timed over the whole call (fairscan's includes Accelerate's set-up,
the epoch-end checkpoint and ``model.safetensors``), in wall-clock seconds and in CPU seconds of this process:
on a machine shared with other jobs the wall clock swings by tens of per cent between rounds, while the CPU
time each loop spends is what the framework's overhead would show in. Run with ``--threads 1`` there: with
more threads than free cores, OpenMP's waiting makes both loops many times slower and the numbers meaningless.

``--baseline REF`` (default ``main``) also times the fairscan loop of another commit in the same run: a git
worktree of ``REF`` (made once under ``--baseline-cache``) whose own ``benchmarks/bench_train_loop.py`` runs its
own package. Then every measurement is a fresh process (plain, this checkout, the baseline, in turn, each after
the same warm-up: two plain steps, and for a fairscan loop one epoch of it), and the result adds
``ratio_vs_baseline_cpu`` and ``_wall``: this checkout's loop over the baseline's.
``--baseline none`` times this checkout alone, in this process.

``--input-only`` instead measures how many images/s the input pipeline alone (cache + RandAugment at
``--image-size``) delivers per data-loading worker.

    python benchmarks/bench_train_loop.py --rounds 5 --threads 1            # vit_tiny, 64 px, batch 32, vs main
    python benchmarks/bench_train_loop.py --arch fairscan_vit_micro --image-size 32 --steps 6 --rounds 1
    python benchmarks/bench_train_loop.py --input-only --image-size 224 --workers 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(root: Path, *, patients: int, image_size: int):
    """A synthetic manifest with an image cache at the evaluation resize size."""
    from fairscan.data.cache import build_cache
    from fairscan.data.dataset import load_size
    from fairscan.data.synthetic import prepare_synthetic_manifest

    prepare_synthetic_manifest(root, patients=patients, image_size=max(64, image_size), seed=0)
    build_cache(root, size=load_size(image_size), workers=1)
    return root


def dataset(root: Path, image_size: int, *, train: bool = True):
    from fairscan.data.dataset import ImageDataset, build_transform, load_size, open_cache
    from fairscan.models.registry import IMAGENET_MEAN
    from fairscan.schema import label_ids, read_manifest

    df = read_manifest(root, split="train")
    cache = open_cache(root)
    assert cache is not None, "the benchmark reads the image cache"
    tf = build_transform(image_size, train=train, mean=IMAGENET_MEAN)
    return ImageDataset(df, labels=label_ids(df), transform=tf, manifest_dir=root, decode_size=load_size(image_size),
                        cache=cache, seed=0)  # fmt: skip


def plain_loop(ds, *, arch: str, image_size: int, batch: int, steps: int, workers: int):
    """The reference: what one would write by hand with timm and torch. Returns (images, wall s, CPU s)."""
    import timm
    import torch
    from torch.utils.data import DataLoader

    from fairscan.data.device_input import DeviceInput
    from fairscan.models import register_tiny_models
    from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from fairscan.train.supervised import masked_bce

    register_tiny_models()  # only so that --arch may name fairscan's tiny test models
    torch.manual_seed(0)
    kwargs = {"img_size": image_size} if "vit" in arch else {}
    model = timm.create_model(
        arch, num_classes=len(ds.labels), drop_path_rate=0.2, global_pool="avg", **kwargs
    )
    # fused, as fairscan's AdamW is: the comparison is of the loops, not of PyTorch's two AdamW kernels
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    to_input = DeviceInput(IMAGENET_MEAN, IMAGENET_STD)  # the dataset hands over uint8 grey images
    model.train()
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while done < steps:
        for b in loader:
            loss = masked_bce(model(to_input(b["image"])).float(), b["target"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return steps * batch, time.perf_counter() - t0, time.process_time() - c0


def fairscan_loop(ds, *, arch: str, image_size: int, batch: int, steps: int, workers: int, out: Path):
    """fairscan's loop on the same data; returns (images, wall s, CPU s) over the whole ``train()`` call
    (set-up, the epoch-end checkpoint and ``model.safetensors`` included)."""
    import shutil

    from fairscan.data.device_input import DeviceInput
    from fairscan.models import build_model
    from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from fairscan.train.loop import TrainConfig, make_accelerator, train
    from fairscan.train.supervised import Supervised

    shutil.rmtree(out, ignore_errors=True)
    acc = make_accelerator(cpu=True, seed=0)
    model = build_model(arch, num_classes=len(ds.labels), pooling="avg", image_size=image_size, drop_path=0.2)
    per_epoch = len(ds) // batch
    epochs = max(1, -(-steps // per_epoch))
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-4, min_lr=1e-5, warmup_epochs=0.5, weight_decay=0.05,
                      layer_decay=0.55, workers=workers, save_every=0, log_every=10)  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    objective = Supervised(model, ds.labels, to_input=DeviceInput(IMAGENET_MEAN, IMAGENET_STD))
    result = train(objective, accelerator=acc, train_set=ds, cfg=cfg, out_dir=out)
    return result.steps * batch, time.perf_counter() - t0, time.process_time() - c0


def input_only(ds, *, batch: int, steps: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    from fairscan.data.dataset import EpochSampler

    loader = DataLoader(ds, batch_size=batch, sampler=EpochSampler(len(ds)), drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    it, n = iter(loader), 0
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    while n < steps:
        for _ in loader if n else it:
            n += 1
            if n == steps:
                break
    return steps * batch / (time.perf_counter() - t0)


def baseline_tree(ref: str, cache: Path) -> Path | None:
    """A git worktree of ``ref`` (made once, kept under ``cache``), or None when there is no such commit."""
    done = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return None
    sha = done.stdout.strip()
    tree = cache / sha[:12]
    if not (tree / "fairscan").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)  # fmt: skip
    return tree


def worker(args) -> dict:
    """One measurement in this fresh process: the plain loop, or the fairscan loop of ``--tree`` (its own
    package and its own ``fairscan_loop``), after the same warm-up."""
    import torch

    torch.set_num_threads(args.threads)
    tree = Path(args.tree)
    sys.path.insert(0, str(tree))
    spec = importlib.util.spec_from_file_location("tree_bench", tree / "benchmarks" / "bench_train_loop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ds = bench.dataset(args.data, args.image_size)
    common = dict(arch=args.arch, image_size=args.image_size, batch=args.batch, workers=args.workers)
    bench.plain_loop(ds, **common, steps=2)  # warm-up: first-touch allocations, lazy imports
    with tempfile.TemporaryDirectory(prefix="fairscan-bench-run-") as tmp:
        if args.worker == "fairscan":  # and the loop's own first-call costs (Accelerate's set-up, first save)
            bench.fairscan_loop(ds, **common, steps=1, out=Path(tmp) / "warm-up")
        if args.worker == "plain":
            n, wall, cpu = bench.plain_loop(ds, **common, steps=args.steps)
        else:
            n, wall, cpu = bench.fairscan_loop(ds, **common, steps=args.steps, out=Path(tmp) / "run")
    return {"images": n, "wall": wall, "cpu": cpu}


def _measure(kind: str, tree: Path, args, steps: int, root: Path) -> tuple[float, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--tree", str(tree), "--data", str(root),
           "--arch", args.arch, "--image-size", str(args.image_size), "--batch", str(args.batch), "--steps",
           str(steps), "--workers", str(args.workers), "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} in {tree} failed:\n{done.stderr[-3000:]}")
    m = json.loads(done.stdout.strip().splitlines()[-1])
    return m["images"] / m["wall"], m["images"] / m["cpu"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_tiny_patch16_224")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=24, help="optimiser steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-only", action="store_true")
    ap.add_argument("--data", type=Path, help="reuse a prepared manifest folder with its cache")
    ap.add_argument("--baseline", default="main", help="a git ref whose loop to time beside this one, or none")
    ap.add_argument("--baseline-cache", type=Path, default=Path(tempfile.gettempdir()) / "fairscan-bench-trees")
    ap.add_argument("--worker", choices=["plain", "fairscan"], help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(args)
        print(json.dumps(res))
        return res

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fairscan-bench-") as tmp:
        root = args.data or make_data(Path(tmp) / "data", patients=args.patients, image_size=args.image_size)
        ds = dataset(root, args.image_size)
        if args.input_only:
            rates = [
                input_only(ds, batch=args.batch, steps=args.steps, workers=args.workers)
                for _ in range(args.rounds)
            ]
            res = {"input_images_per_s": max(rates), "workers": args.workers, "image_size": args.image_size,
                   "per_worker": max(rates) / max(1, args.workers)}  # fmt: skip
            print(json.dumps(res, indent=2))
            return res
        per_epoch = len(ds) // args.batch
        steps = -(-args.steps // per_epoch) * per_epoch  # whole epochs, the same for both loops
        common = dict(arch=args.arch, image_size=args.image_size, batch=args.batch, steps=steps,
                      workers=args.workers)  # fmt: skip
        base = None if args.baseline == "none" else baseline_tree(args.baseline, args.baseline_cache)
        if args.baseline != "none" and base is None:
            print(f"note: no commit {args.baseline!r} here; timing this checkout alone", file=sys.stderr)
        rounds = []
        if base is None:
            plain_loop(ds, **{**common, "steps": 2})  # warm-up: first-touch allocations, lazy imports
            for r in range(args.rounds):
                p_n, p_wall, p_cpu = plain_loop(ds, **common)
                f_n, f_wall, f_cpu = fairscan_loop(ds, **common, out=Path(tmp) / f"run{r}")
                rounds.append({
                    "plain_wall": p_n / p_wall, "fairscan_wall": f_n / f_wall,
                    "plain_cpu": p_n / p_cpu, "fairscan_cpu": f_n / f_cpu,
                })  # fmt: skip
        else:
            for _ in range(args.rounds):  # interleaved: plain, this checkout, the baseline, each a fresh process
                row = {}
                for name, kind, tree in (("plain", "plain", HERE), ("fairscan", "fairscan", HERE),
                                         ("baseline", "fairscan", base)):  # fmt: skip
                    row[f"{name}_wall"], row[f"{name}_cpu"] = _measure(kind, tree, args, steps, root)
                rounds.append(row)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    res = {
        "arch": args.arch, "image_size": args.image_size, "batch": args.batch, "steps": steps,
        "threads": args.threads, "workers": args.workers, "train_images": len(ds),
        "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
        "median_images_per_s": {k: round(med(k), 2) for k in rounds[0]},
        # per CPU-second: what each loop costs, robust to other processes sharing the machine
        "ratio_cpu": round(med("fairscan_cpu") / med("plain_cpu"), 3),
        "ratio_wall": round(med("fairscan_wall") / med("plain_wall"), 3),
        "ratio_wall_per_round_median": round(statistics.median(r["fairscan_wall"] / r["plain_wall"] for r in rounds), 3),
    }  # fmt: skip
    if "baseline_cpu" in rounds[0]:
        res["baseline"] = {"ref": args.baseline, "tree": str(base)}
        res["ratio_vs_baseline_cpu"] = round(med("fairscan_cpu") / med("baseline_cpu"), 3)
        res["ratio_vs_baseline_wall"] = round(med("fairscan_wall") / med("baseline_wall"), 3)
        res["baseline_ratio_cpu"] = round(med("baseline_cpu") / med("plain_cpu"), 3)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
