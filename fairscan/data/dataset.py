"""The torch Dataset behind ``finetune`` and ``predict``: manifest rows to normalised image tensors and targets.

Pixels come from the image cache when the manifest has one (``fairscan.data.cache``), else from the files
through ``fairscan.data.images.load_resized`` (the same decoder that built the cache), so both give the same
square uint8 image. Transforms are timm's (METHOD section 4), applied to the one grey channel:

- training: RandomResizedCrop to ``image_size`` (bicubic), horizontal flip, RandAugment
  ``rand-m6-mstd0.5-inc1`` (rotated, sheared and translated regions filled with grey, :func:`grey_fill`), no
  random erasing, mixup or cutmix; linear probing uses crop and flip only (MAE's linear-probe recipe);
- evaluation: resize to ``image_size / 0.875`` then centre crop.

The host stops at a uint8 ``(1, H, W)`` tensor: repeating to three channels and normalising happen on the device
(:class:`fairscan.data.device_input.DeviceInput`), so a worker hands over 50 KB per 224 px image, not 602 KB.

Augmentation is reproducible per sample: a training sampler yields ``(epoch, index)`` keys and each sample's
random draws are seeded from ``(seed, epoch, index)``, in whichever worker process loads it. A run resumed
mid-epoch therefore sees exactly the images and augmentations an uninterrupted run would.

Each item is ``{"image": uint8 tensor (1, H, W), "target": float tensor (labels,) with NaN where masked,
"index": row number}``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RANDAUGMENT = "rand-m6-mstd0.5-inc1"
IMAGE_UNREADABLE = "image {image} cannot be decoded: {path} ({why})"
CROP_PCT = 0.875


def grey_fill(mean: tuple[float, ...]) -> int:
    """The grey that rotated, sheared and translated regions are filled with: the normalisation mean's average
    as a uint8 level (timm fills with the mean colour, (124, 116, 104) for ImageNet's, which a grey image lacks)."""
    return min(255, round(255 * sum(mean) / len(mean)))


def build_transform(
    image_size: int,
    *,
    train: bool,
    mean: tuple[float, ...],
    randaug: str | None = RANDAUGMENT,
    interpolation: str = "bicubic",
    crop_pct: float = CROP_PCT,
    scale: tuple[float, float] | None = None,
    hflip: float = 0.5,
) -> Callable:
    """timm's transform for a grey PIL image, ending in a uint8 ``(1, H, W)`` tensor: training augmentation
    (random-resized crop of ``scale``, timm's 0.08-1 by default, flip with probability ``hflip``, RandAugment
    with a grey fill, :func:`grey_fill`) or the evaluation resize + centre crop. ``mean`` (the normalisation's)
    sets the fill; normalising happens on the device (:class:`fairscan.data.device_input.DeviceInput`)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    if not train:
        steps = create_transform(image_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct)
        return T.Compose([*_geometric(steps.transforms), T.PILToTensor()])
    crop_flip = create_transform(
        image_size, is_training=True, interpolation=interpolation, re_prob=0.0, hflip=hflip, color_jitter=None,
        scale=scale, separate=True,
    )[0]  # fmt: skip
    augment = [_auto_augment(randaug, image_size, fill=grey_fill(mean), interpolation=interpolation)] if randaug else []
    return T.Compose([*crop_flip.transforms, *augment, T.PILToTensor()])


def _geometric(steps) -> list:
    """timm's evaluation steps up to the tensor: its to-tensor and normalisation are the device's job."""
    host_float = ("ToTensor", "MaybeToTensor", "Normalize")
    return [t for t in steps if type(t).__name__ not in host_float]


def _auto_augment(spec: str, image_size: int, *, fill: int, interpolation: str):
    """timm's auto-augmentation of ``spec`` with timm's own parameters, filling with one grey level."""
    from timm.data.auto_augment import (
        augment_and_mix_transform,
        auto_augment_transform,
        rand_augment_transform,
    )
    from timm.data.transforms import str_to_pil_interp

    params: dict[str, Any] = {"translate_const": int(image_size * 0.45), "img_mean": fill}
    if interpolation and interpolation != "random":
        params["interpolation"] = str_to_pil_interp(interpolation)
    if spec.startswith("rand"):
        return rand_augment_transform(spec, params)
    if spec.startswith("augmix"):
        return augment_and_mix_transform(spec, {**params, "translate_pct": 0.3})
    return auto_augment_transform(spec, params)


def load_size(image_size: int, crop_pct: float = CROP_PCT) -> int:
    """The square size images are decoded to without a cache: the evaluation resize (256 for 224)."""
    return int(round(image_size / crop_pct))


class ImageDataset:
    """Rows of a manifest as training or evaluation samples (a map-style ``torch.utils.data.Dataset``)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        labels: list[str],
        transform: Callable,
        manifest_dir: str | Path,
        decode_size: int,
        cache: Any | None = None,
        seed: int = 0,
    ):
        import numpy as np

        missing = [f"label_{lab}" for lab in labels if f"label_{lab}" not in frame.columns]
        if missing:
            raise InputError(f"{manifest_dir}: the manifest lacks {', '.join(missing)}")
        self.frame = frame.reset_index(drop=True)
        self.labels = list(labels)
        self.transform = transform
        self.manifest_dir = Path(manifest_dir)
        self.decode_size = decode_size
        self.seed = seed
        self.image_ids: list[str] = self.frame["image_id"].astype(str).tolist()
        self.targets = self.frame[[f"label_{lab}" for lab in labels]].to_numpy(dtype=np.float32)
        self.cache = cache
        self._cache_rows = None
        if cache is not None:
            rows, absent = [], []
            for image_id in self.image_ids:
                try:
                    rows.append(cache.index_of(image_id))
                except KeyError:
                    absent.append(image_id)
            if absent:
                raise InputError(
                    f"the image cache lacks {len(absent)} image(s) of the manifest, e.g. {absent[0]}",
                    hint="rebuild the cache with `fairscan prepare`, or run without it (--no-cache)",
                )
            self._cache_rows = rows
        self._paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def pixels(self, i: int) -> np.ndarray:
        """Row ``i``'s image as a square uint8 array."""
        if self._cache_rows is not None:
            return self.cache.get(self._cache_rows[i])
        if self._paths is None:
            from fairscan.data.images import resolve_image_paths

            self._paths = resolve_image_paths(self.manifest_dir, self.frame["path"].astype(str))
        from fairscan.data.images import load_resized

        try:
            return load_resized(self._paths[i], self.decode_size)
        except FileNotFoundError:
            raise InputError(
                f"image {self.image_ids[i]} is missing: {self._paths[i]}",
                hint="check the manifest's image_root (prepare.json), or re-run `fairscan prepare`",
            ) from None
        except Exception as exc:  # PIL and pydicom raise many types for a damaged file
            raise InputError(
                IMAGE_UNREADABLE.format(
                    image=self.image_ids[i], path=self._paths[i], why=f"{type(exc).__name__}: {exc}"
                ),
                hint="replace the file, or drop unreadable images with `fairscan prepare ... --check-images`",
            ) from None

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch
        from PIL import Image

        epoch, i = key if isinstance(key, tuple) else (None, key)
        img = Image.fromarray(self.pixels(i))  # grey ("L"): three channels are made on the device
        if epoch is None:
            x = self.transform(img)
        else:
            with seeded(self.seed, epoch, i):
                x = self.transform(img)
        return {"image": x, "target": torch.from_numpy(self.targets[i]), "index": i}


_M64 = (1 << 64) - 1


def sample_seed(*key: int) -> int:
    """A well-mixed 32-bit seed from integers (splitmix64 over the key)."""
    x = 0
    for k in key:
        z = ((x ^ (int(k) & _M64)) + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        x = z ^ (z >> 31)
    return x & 0xFFFFFFFF


@contextlib.contextmanager
def seeded(*key: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's (CPU) generators from ``key`` for one sample's augmentation.

    torch's CPU generator is restored afterwards: in a single-process loader it also drives DropPath in the
    training step. Python's and numpy's global generators are left seeded by the last sample (nothing in the
    training step draws from them, and saving and restoring numpy's state would cost 0.2 ms per image). Only the
    CPU generator is touched: ``torch.manual_seed`` would also queue a seed for every accelerator, at the cost of
    a stack trace per call before CUDA is initialised.
    """
    import numpy as np
    import torch

    seed = sample_seed(*key)
    random.seed(seed)
    np.random.seed(seed)
    state = torch.default_generator.get_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(state)


class EpochSampler:
    """Shuffles ``n`` rows with a seeded permutation per epoch and yields ``(epoch, row)`` keys.

    The permutation depends only on ``(seed, epoch)``, so every process of a distributed run draws the same
    order (Accelerate then gives each its share of the batches) and a resumed run draws it again.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        import torch

        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        return iter([(self.epoch, i) for i in order])


def open_cache(manifest_dir: str | Path, cache: str | Path | None = None, *, enabled: bool = True) -> Any:
    """The manifest's image cache, or None (the loader then decodes the files).

    ``cache`` names a cache folder or file explicitly; otherwise the manifest's complete, up-to-date cache is used
    when ``fairscan prepare cache`` built one (``ImageCache.find``).
    """
    if not enabled:
        return None
    from fairscan.data.cache import ImageCache

    if cache is not None:
        return ImageCache.open(cache)
    return ImageCache.find(manifest_dir)
