"""What ``fairscan pretrain`` trains on: the images of one or several manifests (pools), their leakage check, and
the paper's augmentation.

A pool made by ``fairscan prepare pool`` brings the leakage it found; a plain dataset manifest is checked like a
pool of itself (its validate/test patients are held-out patients); every manifest is also checked against the
evaluation manifests the run names.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from fairscan.errors import InputError

CROP_SCALE = (0.2, 1.0)
ROTATION = 7.0
EMPTY_POOL = "{source}: no images to pre-train on{why}"
LEAKAGE = (
    "leakage: {patients} patient(s) ({images} images) pre-trained on from {folder} are held out (validate/test) "
    "in {evaluation} ({dataset}); a model evaluated there will have seen them"
)


class PretrainAugment:
    """The paper's augmentation (after Hosseinzadeh Taher et al. 2021) of a grey image: random crop resized to
    ``size``, horizontal flip (p=0.5), rotation within +-``rotation`` degrees (corners black, as before), then a
    uint8 ``(1, H, W)`` tensor; normalisation by ``mean``/``std`` happens on the device
    (:class:`fairscan.data.device_input.DeviceInput`). ``views=2`` draws two independent views (MoCo v3), stacked
    as (2, 1, H, W)."""

    def __init__(
        self,
        size: int,
        *,
        views: int = 1,
        scale: tuple[float, float] = CROP_SCALE,
        rotation: float = ROTATION,
        hflip: float = 0.5,
    ):
        from torchvision import transforms as T

        self.views = views
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=tuple(scale), interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(hflip),
                T.RandomRotation(rotation, interpolation=T.InterpolationMode.BILINEAR),
                T.PILToTensor(),
            ]
        )

    def __call__(self, img):
        import torch

        if self.views == 1:
            return self.transform(img)
        return torch.stack([self.transform(img) for _ in range(self.views)])


class PoolDataset:
    """The images of one or several manifests as pre-training samples (map-style, keys ``(epoch, i)``).

    Pixels come from each manifest's image cache when it has one, else from the files (through
    :class:`fairscan.data.dataset.ImageDataset`). Each sample's augmentation is seeded from
    ``(seed, epoch, i)``, so a resumed run sees the same views. Items: ``{"image", "index", "epoch"}``; the
    epoch lets the objective know which epoch a batch belongs to (for snapshots).
    """

    def __init__(self, parts: list, transform, *, seed: int = 0):
        self.parts = parts
        self.transform = transform
        self.seed = seed
        self.offsets = [0]
        for p in parts:
            self.offsets.append(self.offsets[-1] + len(p))
        self.image_ids: list[str] = [i for p in parts for i in p.image_ids]

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key):
        from PIL import Image

        from fairscan.data.dataset import seeded

        epoch, i = key if isinstance(key, tuple) else (0, key)
        k = bisect.bisect_right(self.offsets, i) - 1
        img = Image.fromarray(self.parts[k].pixels(i - self.offsets[k]))  # grey: channels are made on the device
        with seeded(self.seed, epoch, i):
            x = self.transform(img)
        return {"image": x, "index": i, "epoch": epoch}


def load_pool(cfg) -> tuple[list[tuple[Path, Any]], list[str], list[dict]]:
    """Each manifest's rows to pre-train on, the leakage warnings, and the leakage records.

    A pool made by ``fairscan prepare pool`` brings the leakage it found; a plain dataset manifest is checked
    like a pool of itself (its validate/test patients are held-out patients). Every manifest is also checked
    against ``cfg.evaluation``.
    """
    from fairscan.data.cohorts import HELD_OUT, find_leakage
    from fairscan.data.manifest import manifest_dir_of, read_record
    from fairscan.schema import read_manifest

    frames, warnings, records = [], [], []
    for m in cfg.manifests:
        folder = manifest_dir_of(m)
        df = read_manifest(m)
        record = read_record(folder)
        if cfg.splits:
            df = df[df["split"].isin(cfg.splits)].reset_index(drop=True)
        if df.empty:
            why = f" in the split(s) {', '.join(cfg.splits)}" if cfg.splits else " (the manifest is empty)"
            raise InputError(
                EMPTY_POOL.format(source=folder, why=why),
                hint="check --splits, or rebuild the pool with `fairscan prepare pool`",
            )
        frames.append((folder, df))
        is_pool = record.get("dataset") == "pool"
        found = list(record.get("leakage", [])) if is_pool else []
        name = str(record.get("dataset") or folder.name)
        probe = df if is_pool else df.assign(patient_id=name + "/" + df["patient_id"].astype(str))
        if not is_pool:  # a dataset manifest: its own held-out patients count as evaluation patients
            held = df["split"].isin(HELD_OUT)
            if held.any():
                found.append(
                    {"dataset": name, "evaluation": str(folder), "patients": int(df.loc[held, "patient_id"].nunique()),
                     "images": int(held.sum())}
                )  # fmt: skip
        if cfg.evaluation:
            found += find_leakage(probe, [manifest_dir_of(e) for e in cfg.evaluation])
        seen = set()
        for leak in found:
            key = (leak["dataset"], str(Path(leak["evaluation"]).resolve()))
            if key in seen:  # a pool's own record and the --eval-manifest check can name the same folder
                continue
            seen.add(key)
            records.append(
                {
                    **leak,
                    "manifest": str(folder.absolute()),
                    "evaluation": str(Path(leak["evaluation"]).absolute()),
                }
            )
            warnings.append(LEAKAGE.format(folder=folder, **leak))
    return frames, warnings, records


def build_pool_dataset(cfg, frames) -> PoolDataset:
    from fairscan.data.dataset import ImageDataset, load_size, open_cache

    parts = []
    for folder, df in frames:
        cache = open_cache(folder, cfg.cache, enabled=cfg.use_cache)
        decode = cache.size if cache is not None else load_size(cfg.image_size)
        parts.append(
            ImageDataset(
                df,
                labels=[],
                transform=None,
                manifest_dir=folder,
                decode_size=decode,
                cache=cache,
                seed=cfg.seed,
            )
        )
    from fairscan.train.objectives import method

    augment = PretrainAugment(
        cfg.image_size,
        views=method(cfg.method).VIEWS,
        scale=cfg.crop_scale,
        rotation=cfg.rotation,
        hflip=cfg.hflip,
    )
    return PoolDataset(parts, augment, seed=cfg.seed)
