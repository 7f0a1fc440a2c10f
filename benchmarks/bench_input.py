"""CPU benchmark: the input pipeline per data-loading worker, the grey uint8 hand-over against the float one.

Each view reads a synthetic CheXpert manifest through its image cache (as a real run does) and is timed as one
worker delivers it: ``DataLoader(num_workers=0)`` over the seeded ``(epoch, index)`` keys, batches of
``--batch`` collated, on one thread. The baseline is the pipeline fairscan had before, in the same run: the grey
image converted to RGB, timm's / torchvision's to-tensor and normalisation on the host, 3 x H x W float32 per
view. fairscan's now stops at one uint8 channel; the device does the rest (``fairscan.data.device_input``).
Rounds alternate (baseline, fairscan, baseline, ...) so that a busy machine slows both alike; the best round of
each is reported.

Views: ``finetune`` (random-resized crop, flip, RandAugment rand-m6-mstd0.5-inc1), ``eval`` (resize + centre
crop: validation and predict), ``mae`` (crop, flip, rotation +-7) and ``mocov3`` (two such views). Printed per
view: images/s per worker for both, their ratio, bytes per image handed to the device, and how many workers
each needs to feed ``--target`` images/s (4,500: a ViT-B/16 fine-tuning step in bf16 on an H200).

    python benchmarks/bench_input.py                      # 224 px, 5 rounds of 256 images per view
    python benchmarks/bench_input.py --image-size 32 --images 16 --rounds 1 --patients 20   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VIEWS = ("finetune", "eval", "mae", "mocov3")


def make_data(root: Path, *, patients: int, image_size: int) -> Path:
    from fairscan.data.cache import build_cache
    from fairscan.data.dataset import load_size
    from fairscan.data.synthetic import prepare_synthetic_manifest

    prepare_synthetic_manifest(root, patients=patients, image_size=load_size(image_size), seed=0)
    build_cache(root, size=load_size(image_size), workers=1)
    return root


class _FloatRGB:
    """The baseline's last steps: the grey image as RGB, then a float transform (to tensor and normalise)."""

    def __init__(self, transform, views: int = 1):
        self.transform, self.views = transform, views

    def __call__(self, img):
        import torch

        rgb = img.convert("RGB")
        if self.views == 1:
            return self.transform(rgb)
        return torch.stack([self.transform(rgb) for _ in range(self.views)])


def transforms(view: str, size: int, mean, std):
    """(baseline, fairscan) transforms of one view."""
    from timm.data import create_transform
    from torchvision import transforms as T

    from fairscan.data.dataset import RANDAUGMENT, build_transform
    from fairscan.train.pretrain_data import CROP_SCALE, ROTATION, PretrainAugment

    if view == "finetune":
        old = create_transform(size, is_training=True, auto_augment=RANDAUGMENT, interpolation="bicubic",
                               mean=mean, std=std, re_prob=0.0, hflip=0.5, color_jitter=None)  # fmt: skip
        return _FloatRGB(old), build_transform(size, train=True, mean=mean)
    if view == "eval":
        old = create_transform(size, is_training=False, interpolation="bicubic", mean=mean, std=std, crop_pct=0.875)
        return _FloatRGB(old), build_transform(size, train=False, mean=mean)
    views = 2 if view == "mocov3" else 1
    old = T.Compose([
        T.RandomResizedCrop(size, scale=CROP_SCALE, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.5), T.RandomRotation(ROTATION, interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(), T.Normalize(mean, std),
    ])  # fmt: skip
    return _FloatRGB(old, views), PretrainAugment(size, views=views)


def rate(dataset, *, images: int, batch: int) -> tuple[float, int]:
    """(images/s one worker delivers, bytes per image of the batches it hands over)."""
    from torch.utils.data import DataLoader

    from fairscan.data.dataset import EpochSampler

    loader = DataLoader(dataset, batch_size=batch, sampler=EpochSampler(len(dataset), seed=0), num_workers=0)
    done, nbytes, t0 = 0, 0, time.perf_counter()
    while done < images:
        for b in loader:
            done += len(b["image"])
            nbytes += b["image"].numel() * b["image"].element_size()
            if done >= images:
                break
    return done / (time.perf_counter() - t0), nbytes // done


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=256, help="images per view and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patients", type=int, default=120, help="synthetic CheXpert patients (~1.6 images each)")
    ap.add_argument("--target", type=float, default=4500.0, help="images/s the workers must feed")
    ap.add_argument("--views", default=",".join(VIEWS))
    ap.add_argument("--data", type=Path, default=None, help="reuse this synthetic manifest folder")
    args = ap.parse_args(argv)

    import torch

    from fairscan.data.dataset import ImageDataset, open_cache
    from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from fairscan.schema import read_manifest
    from fairscan.train.pretrain_data import PoolDataset

    torch.set_num_threads(1)  # one worker is one core
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or make_data(Path(tmp) / "chexpert", patients=args.patients, image_size=args.image_size)
        df, cache = read_manifest(root), open_cache(root)
        assert cache is not None, "the benchmark reads the image cache"

        def dataset(view: str, transform):
            base = ImageDataset(df, labels=[], transform=transform, manifest_dir=root, decode_size=cache.size,
                                cache=cache, seed=0)  # fmt: skip
            return base if view in ("finetune", "eval") else PoolDataset([base], transform, seed=0)

        out: dict = {"setup": {"image_size": args.image_size, "images_per_round": args.images, "rounds": args.rounds,
                               "batch": args.batch, "threads": 1, "target_images_per_s": args.target,
                               "torch": torch.__version__}}  # fmt: skip
        for view in args.views.split(","):
            old_tf, new_tf = transforms(view, args.image_size, IMAGENET_MEAN, IMAGENET_STD)
            old_ds, new_ds = dataset(view, old_tf), dataset(view, new_tf)
            rate(old_ds, images=args.batch, batch=args.batch)  # warm the cache pages and the code paths
            rate(new_ds, images=args.batch, batch=args.batch)
            olds, news = [], []
            for _ in range(args.rounds):
                olds.append(rate(old_ds, images=args.images, batch=args.batch))
                news.append(rate(new_ds, images=args.images, batch=args.batch))
            old_rate, new_rate = max(r for r, _ in olds), max(r for r, _ in news)
            out[view] = {
                "baseline_float_rgb": {"images_per_s_per_worker": round(old_rate, 1), "bytes_per_image": olds[0][1],
                                       "workers_for_target": math.ceil(args.target / old_rate)},
                "fairscan_grey_uint8": {"images_per_s_per_worker": round(new_rate, 1), "bytes_per_image": news[0][1],
                                        "workers_for_target": math.ceil(args.target / new_rate)},
                "ratio": round(new_rate / old_rate, 2),
                "bytes_ratio": round(olds[0][1] / news[0][1], 1),
            }  # fmt: skip
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
