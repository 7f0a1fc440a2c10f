"""Image loading: the uint8 memory-mapped cache against decoding files with PIL, per item.

    python benchmarks/bench_cache.py [--patients 200] [--width 320] [--size 256] [--batch 64] [--reps 5]

The files are synthetic radiographs the size of CheXpert-v1.0-small's (320 px wide, portrait JPEGs) in the real
CheXpert layout, prepared with ``fairscan prepare``; the cache is built with ``fairscan prepare cache`` at
``--size``. The file path is what the loader does without a cache: ``load_resized`` (PIL decode + resize to
size x size) per item, in a shuffled order. The cache path is what it does with one: a random batch of row
numbers, gathered in sorted order from the memory-mapped array (``ImageCache.get_many``), page cache warm.
Prints both figures side by side (time per image and images/s on one core) and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument(
        "--width", type=int, default=320, help="width of the synthetic JPEGs (CheXpert-small: 320)"
    )
    parser.add_argument("--size", type=int, default=256, help="cache size in pixels")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5, help="passes over the images (the best is reported)")
    args = parser.parse_args()

    from fairscan.data.cache import ImageCache, build_cache
    from fairscan.data.images import load_resized, resolve_image_paths
    from fairscan.data.synthetic import prepare_synthetic_manifest
    from fairscan.schema import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        folder = prepare_synthetic_manifest(Path(tmp), patients=args.patients, image_size=args.width).parent
        m = read_manifest(folder)
        paths = resolve_image_paths(folder, m["path"])
        kb = np.mean([p.stat().st_size for p in paths]) / 1024
        t0 = time.perf_counter()
        build_cache(folder, size=args.size, workers=1)
        build_s = time.perf_counter() - t0
        cache = ImageCache.find(folder, args.size)
        n = len(paths)
        rng = np.random.default_rng(0)

        def pil_pass() -> float:
            order = rng.permutation(n)
            start = time.perf_counter()
            for i in order:
                load_resized(paths[i], args.size)
            return (time.perf_counter() - start) / n

        def cache_pass() -> float:
            order = rng.permutation(n)
            start = time.perf_counter()
            for k in range(0, n, args.batch):
                cache.get_many(order[k : k + args.batch])
            return (time.perf_counter() - start) / n

        cache_pass()  # touch every page once, as an epoch after the build would
        pil = min(pil_pass() for _ in range(args.reps))
        cached = min(cache_pass() for _ in range(args.reps))

    print(f"{n} images, {args.width} px wide JPEGs ({kb:.1f} KiB each) -> {args.size}x{args.size} uint8")
    print(f"cache build (1 process, incl. verification): {build_s:.2f} s")
    print(f"{'loader':<34}{'per image':>12}{'images/s':>12}")
    print(f"{'PIL decode + resize (files)':<34}{pil * 1e3:>9.3f} ms{1 / pil:>12,.0f}")
    print(
        f"{'cache: sorted gather, batch ' + str(args.batch):<34}{cached * 1e6:>9.1f} us{1 / cached:>12,.0f}"
    )
    print(f"ratio: the cache is {pil / cached:,.0f}x faster per image")


if __name__ == "__main__":
    main()
