"""`fairscan embed` throughput against `fairscan predict`'s: the same run folder, images and settings, one process.

    python benchmarks/bench_embed.py [--arch vit_base_patch16_224] [--image-size 224] [--patients 400]
                                     [--batch-size 64] [--rounds 3] [--cpu] [--workers N]

The run folder holds a randomly initialised model of ``--arch`` with a head over the manifest's labels (speed does not depend on
the weights); the images are a synthetic CheXpert manifest's train split, decoded from their files (no cache) on
both sides. Each round runs ``predict`` and ``embed`` through their library calls, in alternating order, after one
warm-up call of each (model build, first CUDA kernels); the figure per side is its best round (images/s, wall
clock, including the model load and the file written, as a user sees it). The target: embed / predict >= 0.9.
``--arch fairscan_vit_micro --image-size 32 --patients 40 --cpu`` makes it a smoke test that runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _run_folder(folder: Path, arch: str, image_size: int, labels: list[str]) -> Path:
    """A run folder ``predict`` and ``embed`` accept: model.json and model.safetensors of a random model."""
    from safetensors.torch import save_file

    from fairscan.models import MODEL_JSON, MODEL_WEIGHTS, ModelInfo, arch_family, build_model

    family = arch_family(arch)
    pooling = "avg"
    model = build_model(arch, num_classes=len(labels), pooling=pooling, image_size=image_size)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / MODEL_WEIGHTS)
    info = ModelInfo(arch=arch, family=family, pooling=pooling, image_size=image_size, labels=labels,
                     mean=[0.5] * 3, std=[0.5] * 3, model="mae")  # fmt: skip
    (folder / MODEL_JSON).write_text(json.dumps(info.to_json()))
    return folder


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args(argv)

    from fairscan.data.synthetic import prepare_synthetic_manifest
    from fairscan.representations.embed import EmbedConfig, embed
    from fairscan.schema import label_ids, read_manifest
    from fairscan.train.predict import PredictConfig, predict

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp = Path(tmp)
        manifest = prepare_synthetic_manifest(
            tmp / "data", patients=args.patients, image_size=256, seed=0
        ).parent
        train = read_manifest(manifest, split="train")
        run = _run_folder(tmp / "run", args.arch, args.image_size, label_ids(train))
        images = len(train)
        common = dict(manifest=str(manifest), split="train", batch_size=args.batch_size, cpu=args.cpu,
                      workers=args.workers, use_cache=False)  # fmt: skip
        sides = {
            "predict": lambda: predict(PredictConfig(run=str(run), out=str(tmp / "p.parquet"), **common)),
            "embed": lambda: embed(EmbedConfig(run=str(run), out=str(tmp / "f.parquet"), **common)),
        }
        for call in sides.values():  # warm-up
            call()
        seconds: dict[str, list[float]] = {"predict": [], "embed": []}
        for r in range(args.rounds):
            for side in ("predict", "embed") if r % 2 == 0 else ("embed", "predict"):
                start = time.perf_counter()
                sides[side]()
                seconds[side].append(time.perf_counter() - start)
    rate = {side: images / min(s) for side, s in seconds.items()}
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    result = {
        "arch": args.arch, "image_size": args.image_size, "images": images, "batch_size": args.batch_size,
        "device": device, "rounds": args.rounds, "seconds": seconds,
        "predict_images_per_s": rate["predict"], "embed_images_per_s": rate["embed"],
        "ratio_embed_over_predict": rate["embed"] / rate["predict"],
    }  # fmt: skip
    print(
        f"{images} images, {args.arch} at {args.image_size} px, batch {args.batch_size}, {device}: "
        f"predict {rate['predict']:.1f} images/s, embed {rate['embed']:.1f} images/s, "
        f"ratio embed/predict {result['ratio_embed_over_predict']:.3f} (target >= 0.9)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
