"""Reading images: JPEG, PNG and DICOM to one uint8 grayscale array, and resolving manifest paths.

DICOM: pydicom decodes the pixels; the modality LUT (rescale) is applied, then the VOI transform: a VOI LUT
sequence when the file has one, else the first window (``WindowCenter`` / ``WindowWidth``, linear, values
outside the window clipped), else the image's own min..max. MONOCHROME1 images (where a high value is white
film, i.e. dark) are inverted so that, like every JPEG/PNG radiograph, bone is bright. The result is scaled to
0..255.

Everything that feeds training decodes through :func:`load_resized`, so the image cache and the file fallback
give the same pixels: a square ``size`` x ``size`` image (aspect ratio not kept, as the reference preprocessing
resizes straight to a square), PIL bilinear with antialiasing; JPEGs decode at reduced scale when they are
much larger than ``size`` (PIL's draft mode) to save time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError

if TYPE_CHECKING:
    import numpy as np

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike) -> bool:
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:  # a DICOM file without a suffix: "DICM" after the 128-byte preamble
        f.seek(128)
        return f.read(4) == b"DICM"


def load_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as a uint8 grayscale array (H, W)."""
    if is_dicom(path):
        return _load_dicom(path)
    from PIL import Image

    with Image.open(path) as im:
        return _to_uint8(im)


def load_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """The image at ``path`` as a uint8 (size, size) array: the one decoder behind the cache and the loader."""
    import numpy as np
    from PIL import Image

    if is_dicom(path):
        im = Image.fromarray(_load_dicom(path))
    else:
        with Image.open(path) as src:
            if src.format == "JPEG":
                src.draft("L", (size, size))  # DCT-domain downscale to >= size: far less to decode
            im = Image.fromarray(_to_uint8(src))
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _to_uint8(im) -> np.ndarray:
    import numpy as np

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit PNGs: stretch to 0..255
        arr = np.asarray(im, dtype=np.float64)
        return _scale(arr, float(arr.min()), float(arr.max()))
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.uint8)


def _scale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    import numpy as np

    x = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(arr)
    return (x * 255.0 + 0.5).astype(np.uint8)


def _load_dicom(path) -> np.ndarray:
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        arr = arr[0]  # a multi-frame file: its first frame
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds, index=0)
        lo, hi = float(arr.min()), float(arr.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
    out = _scale(arr, lo, hi)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255 - out
    return out


def _first(value) -> float:
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


# ------------------------------------------------------------------------------------------- manifest paths


@functools.lru_cache(maxsize=64)
def _image_root(manifest_dir: str, mtime: float) -> Path | None:
    from fairscan.data.manifest import read_record

    root = read_record(manifest_dir).get("image_root")
    if not root:
        return None
    root = Path(root)
    return root if root.is_absolute() else Path(manifest_dir) / root


def image_root(manifest_dir: str | os.PathLike) -> Path | None:
    """The folder that relative manifest paths start from (``image_root`` in ``prepare.json``)."""
    from fairscan.data.manifest import RECORD_NAME

    record = Path(manifest_dir) / RECORD_NAME
    return _image_root(str(manifest_dir), record.stat().st_mtime if record.exists() else 0.0)


def resolve_image_path(manifest_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """A manifest's ``path`` as a file path: absolute paths as they are, others under the image root."""
    return resolve_image_paths(manifest_dir, [path])[0]


def resolve_image_paths(manifest_dir: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> list[Path]:
    """:func:`resolve_image_path` for many paths (the image root is looked up once)."""
    root: str | None = None
    out = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isabs(path):
            root = root or _require_root(manifest_dir, path)
            path = os.path.join(root, path)
        out.append(Path(path))
    return out


def _require_root(manifest_dir, example: str) -> str:
    root = image_root(manifest_dir)
    if root is None:
        raise InputError(
            f"{manifest_dir}: the manifest has relative image paths (e.g. {example}) but prepare.json records "
            "no image_root",
            hint='re-run `fairscan prepare`, or add "image_root": "/folder/of/the/images" to prepare.json',
        )
    return str(root)


# ------------------------------------------------------------------------------------ checks, in parallel


def default_workers(n_items: int | None = None) -> int:
    """The CPUs (at most 8); 1 when ``n_items`` is too little work to pay for starting processes."""
    if n_items is not None and n_items < 2000:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus))


def parallel_chunks(
    fn: Callable[[Any], Any],
    chunks: Sequence[Any],
    *,
    workers: int,
    on_result: Callable[[Any, Any], None],
) -> None:
    """Run ``fn(chunk)`` for every chunk, in ``workers`` processes (in this one when workers <= 1), calling
    ``on_result(chunk, result)`` here as each finishes. ``fn`` must be a module-level function."""
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            on_result(chunk, fn(chunk))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(fn, chunk): chunk for chunk in chunks}
        try:
            for fut in as_completed(futures):
                on_result(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def image_problem(path: Path, decode: bool) -> str | None:
    """None when the image is there (and decodes, with ``decode``); else what is wrong."""
    if not path.is_file():
        return "missing"
    if not decode:
        return None
    try:
        if is_dicom(path):
            import pydicom

            pydicom.dcmread(path).pixel_array  # noqa: B018 - decoding is the check
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
    except Exception as exc:  # any decoder failure means the file cannot be used
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def _check_chunk(args: tuple[list[str], bool]) -> list[tuple[str, str]]:
    paths, decode = args
    out = []
    for p in paths:
        problem = image_problem(Path(p), decode)
        if problem:
            out.append((p, problem))
    return out


def check_images(
    paths: Sequence[Path],
    *,
    decode: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 256,
) -> dict[str, str]:
    """{path: problem} for every image that is missing or (with ``decode``) does not decode."""
    items = [str(p) for p in paths]
    chunks = [(items[i : i + chunk], decode) for i in range(0, len(items), chunk)]
    problems: dict[str, str] = {}
    done = 0

    def collect(chunk_args, result):
        nonlocal done
        problems.update(result)
        done += len(chunk_args[0])
        if progress:
            progress(done, len(items))

    parallel_chunks(_check_chunk, chunks, workers=workers or default_workers(len(items)), on_result=collect)
    return problems
