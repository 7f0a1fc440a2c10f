"""The image cache: every image of a manifest decoded and resized once into one uint8 array on disk.

Layout, in ``DIR/cache/`` beside ``DIR/manifest.parquet`` (S = the size in pixels):

- ``images_S.u8``: the raw array, N x S x S uint8, row i = image i of the index (memory-mapped to read);
- ``images_S.index.parquet``: ``image_id`` per row, in manifest order;
- ``images_S.json``: size, count, the manifest's sha256, ``complete`` and the verification record;
- ``images_S.done``: one byte per row while building (1 = written), so an interrupted build resumes where it
  stopped; it is removed once the cache is complete.

Images decode through :func:`fairscan.data.images.load_resized`, as the file fallback of the loader does, so a
cached image and a freshly decoded one are identical. A build ends by re-decoding a seeded sample of rows and
comparing them byte for byte.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError, RunError

if TYPE_CHECKING:
    import numpy as np

CACHE_FOLDER = "cache"
FORMAT = "fairscan.image-cache/1"
DEFAULT_SIZE = 256


def cache_files(manifest_dir: str | os.PathLike, size: int) -> dict[str, Path]:
    folder = Path(manifest_dir) / CACHE_FOLDER
    stem = f"images_{size}"
    return {
        "array": folder / f"{stem}.u8",
        "index": folder / f"{stem}.index.parquet",
        "meta": folder / f"{stem}.json",
        "done": folder / f"{stem}.done",
    }


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ImageCache:
    """A complete cache, memory-mapped read-only. Rows are looked up by ``image_id`` with :meth:`index_of`.

    Pickles without its array (it reopens the file), so DataLoader workers share the page cache, not copies.
    """

    def __init__(self, array_path: Path, meta: dict[str, Any], image_ids: Sequence[str]):
        self.path, self.meta = Path(array_path), meta
        self.size = int(meta["size"])
        self.image_ids = list(image_ids)
        self._rows = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._array = None

    @property
    def array(self) -> np.ndarray:
        import numpy as np

        if self._array is None:
            shape = (len(self.image_ids), self.size, self.size)
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)
        return self._array

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.image_ids)

    def index_of(self, image_id: str) -> int:
        try:
            return self._rows[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the cache {self.path}") from None

    def get(self, i: int) -> np.ndarray:
        """Row ``i`` as a (size, size) uint8 array (a copy: safe to modify)."""
        import numpy as np

        return np.array(self.array[i])

    def get_many(self, indices: Sequence[int]) -> np.ndarray:
        """Rows ``indices`` as (k, size, size), in the order asked; read in sorted order, which is what makes a
        random batch cheap on a memory-mapped file."""
        import numpy as np

        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), self.size, self.size), dtype=np.uint8)
        out[order] = self.array[indices[order]]
        return out

    @classmethod
    def open(cls, path: str | os.PathLike, size: int | None = None) -> ImageCache:
        """Open a complete cache: ``path`` is a manifest folder, its ``cache/`` folder, or a cache file."""
        folder, size = _locate(Path(path), size)
        files = cache_files(folder, size)
        meta = _read_meta(files["meta"])
        if meta is None or not meta.get("complete"):
            raise InputError(
                f"{files['array']}: no complete image cache here",
                hint=f"build it with `fairscan prepare cache {folder}` (an interrupted build resumes)",
            )
        import pandas as pd

        ids = pd.read_parquet(files["index"])["image_id"].astype(str).tolist()
        return cls(files["array"], meta, ids)

    @classmethod
    def find(cls, manifest_dir: str | os.PathLike, size: int | None = None) -> ImageCache | None:
        """The manifest's complete, up-to-date cache (the largest size when ``size`` is None), or None: the loader
        falls back to decoding files. A cache built for an older version of the manifest is not used."""
        from fairscan.io import sha256_file

        manifest_dir = Path(manifest_dir)
        sizes = [size] if size else sorted(_sizes(manifest_dir), reverse=True)
        manifest = manifest_dir / "manifest.parquet"
        digest = None  # hashed once, and only when a complete cache turns up
        for s in sizes:
            meta = _read_meta(cache_files(manifest_dir, s)["meta"])
            if not (meta and meta.get("complete") and manifest.is_file()):
                continue
            digest = digest or sha256_file(manifest)
            if meta.get("manifest_sha256") == digest:
                return cls.open(manifest_dir, s)
        return None


def _sizes(manifest_dir: Path) -> list[int]:
    folder = manifest_dir / CACHE_FOLDER
    out = []
    for meta in folder.glob("images_*.json"):
        tail = meta.stem.split("_", 1)[1]
        if tail.isdigit():
            out.append(int(tail))
    return out


def _locate(path: Path, size: int | None) -> tuple[Path, int]:
    """(manifest folder, size) from a manifest folder, a cache folder or a cache file."""
    if path.is_file() or path.suffix in (".u8", ".json", ".parquet"):
        size = size or int(path.name.split(".")[0].split("_")[1])
        return path.parent.parent, size
    folder = path.parent if path.name == CACHE_FOLDER else path
    if size is None:
        sizes = _sizes(folder)
        if not sizes:
            raise InputError(
                f"{folder}: no image cache", hint=f"build one with `fairscan prepare cache {folder}`"
            )
        size = max(sizes)
    return folder, size


# ---------------------------------------------------------------------------------------------- building


def _decode_chunk(
    args: tuple[str, int, int, list[int], list[str]],
) -> tuple[list[int], list[tuple[str, str]]]:
    """Worker: decode ``paths`` into rows ``rows`` of the array file; returns (rows written, failures)."""
    import numpy as np

    from fairscan.data.images import load_resized

    array_path, n, size, rows, paths = args
    array = np.memmap(array_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
    written, failed = [], []
    for row, path in zip(rows, paths, strict=True):
        try:
            array[row] = load_resized(path, size)
            written.append(row)
        except Exception as exc:  # a missing or corrupt image: reported, the row stays to do
            failed.append((path, f"{type(exc).__name__}: {exc}"))
    array.flush()
    del array
    return written, failed


def build_cache(
    manifest_dir: str | os.PathLike,
    *,
    size: int = DEFAULT_SIZE,
    workers: int | None = None,
    chunk: int = 64,
    verify: int = 64,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Decode every image of the manifest in ``manifest_dir`` into the cache (resuming an interrupted build),
    verify a sample, and return the cache's metadata (``resumed_rows`` tells how many rows were already done)."""
    import numpy as np
    import pandas as pd

    from fairscan.data.images import default_workers, parallel_chunks, resolve_image_paths
    from fairscan.data.manifest import manifest_dir_of
    from fairscan.io import sha256_file, write_json, write_table
    from fairscan.schema import read_manifest

    if not 16 <= size <= 2048:
        raise InputError(f"cache size {size} is out of range", hint="use a size between 16 and 2048 pixels")
    manifest_dir = manifest_dir_of(manifest_dir)  # the folder, or its manifest.parquet
    manifest = read_manifest(manifest_dir)
    if manifest.empty:
        raise InputError(f"{manifest_dir}: the manifest has no rows", hint="prepare it again")
    files = cache_files(manifest_dir, size)
    ids, n = manifest["image_id"].tolist(), len(manifest)
    paths = [str(p) for p in resolve_image_paths(manifest_dir, manifest["path"])]
    meta = {
        "format": FORMAT,
        "size": size,
        "count": n,
        "dtype": "uint8",
        "manifest_sha256": sha256_file(manifest_dir / "manifest.parquet"),
        "complete": False,
    }
    old = _read_meta(files["meta"])
    if _same_build(old, meta, files) and old.get("complete"):
        return {**old, "resumed_rows": n, "up_to_date": True}
    done = _open_progress(files, meta, resume=_same_build(old, meta, files))
    resumed = int(done.sum())
    started = time.monotonic()
    todo = np.flatnonzero(done == 0)
    chunks = [
        (str(files["array"]), n, size, todo[i : i + chunk].tolist(), [paths[j] for j in todo[i : i + chunk]])
        for i in range(0, len(todo), chunk)
    ]
    failures: list[tuple[str, str]] = []

    def record(_chunk, result):
        rows, failed = result
        done[rows] = 1
        done.flush()
        failures.extend(failed)
        if progress:
            progress(int(done.sum()), n)

    if progress:
        progress(resumed, n)
    parallel_chunks(_decode_chunk, chunks, workers=workers or default_workers(len(todo)), on_result=record)
    if failures:
        listed = "; ".join(f"{p} ({why})" for p, why in failures[:5])
        raise InputError(
            f"{len(failures)} image(s) could not be decoded: {listed}",
            hint="drop them with `fairscan prepare ... --check-images`, then run `fairscan prepare cache` again "
            "(the images already cached are kept)",
        )
    meta["verified"] = _verify(files["array"], n, size, paths, sample=verify, seed=seed)
    meta.update(complete=True, seconds=round(time.monotonic() - started, 2), resumed_rows=resumed)
    write_table(pd.DataFrame({"image_id": ids}), files["index"])
    write_json(files["meta"], meta)
    files["done"].unlink(missing_ok=True)
    return meta


def _same_build(old: dict[str, Any] | None, meta: dict[str, Any], files: dict[str, Path]) -> bool:
    """Whether the cache files on disk were (being) built for this manifest at this size."""
    n, size = meta["count"], meta["size"]
    return (
        old is not None
        and old.get("manifest_sha256") == meta["manifest_sha256"]
        and old.get("size") == size
        and files["array"].is_file()
        and files["array"].stat().st_size == n * size * size
    )


def _open_progress(files: dict[str, Path], meta: dict[str, Any], *, resume: bool):
    """The per-row done flags: those of an interrupted build when ``resume`` finds them, else fresh files."""
    import numpy as np

    from fairscan.io import write_json

    n, size = meta["count"], meta["size"]
    if resume and files["done"].is_file() and files["done"].stat().st_size == n:
        return np.memmap(files["done"], dtype=np.uint8, mode="r+", shape=(n,))
    files["array"].parent.mkdir(parents=True, exist_ok=True)
    write_json(files["meta"], meta)  # complete: False until the very end
    with open(files["array"], "wb") as f:
        f.truncate(n * size * size)  # a sparse file: no time spent writing zeros
    return np.memmap(files["done"], dtype=np.uint8, mode="w+", shape=(n,))


def _verify(
    array_path: Path, n: int, size: int, paths: list[str], *, sample: int, seed: int
) -> dict[str, Any]:
    """Re-decode a seeded sample of rows and compare them with the cache, byte for byte."""
    import numpy as np

    from fairscan.data.images import load_resized

    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    array = np.memmap(array_path, dtype=np.uint8, mode="r", shape=(n, size, size))
    bad = [int(i) for i in rows if not np.array_equal(array[i], load_resized(paths[i], size))]
    if bad:
        raise RunError(
            f"{array_path}: {len(bad)} of {len(rows)} sampled rows differ from their images (e.g. row {bad[0]})",
            hint="an image changed while the cache was built, or the disk is failing; delete the cache folder "
            "and build it again",
        )
    return {"sample": len(rows), "mismatches": 0, "seed": seed}
