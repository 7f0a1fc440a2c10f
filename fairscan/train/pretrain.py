"""``fairscan pretrain`` as a library: MAE or MoCo v3 pre-training of a ViT encoder on chest X-ray pools.

:class:`PretrainConfig` holds every setting; ``None`` means "the method's default", filled in one place
(:meth:`PretrainConfig.resolve`). Recipes (METHOD section 3, the official configurations):

- both: AdamW betas (0.9, 0.95), peak lr = base lr 1.5e-4 x effective batch / 256, linear warm-up then a
  half-cosine to 0, per optimiser step; 800 epochs; the paper's augmentations (random crop resized to 224,
  horizontal flip p=0.5, rotation within +-7 degrees); effective batch 4096.
- MAE: mask ratio 0.75 (Medical MAE: 0.90), decoder 8 x 512, normalised-pixel loss, weight decay 0.05 (none
  on biases and norms). The effective batch is reached by gradient accumulation when the processes cannot
  hold it: by default each process takes at most 64 images per micro-batch.
- MoCo v3: weight decay 0.1 on every trained parameter, momentum 0.99 -> 1, temperature 0.2, 4096/256 MLPs.
  Its batch is the contrastive batch of one step over all processes: gradient accumulation is refused
  (it would not add negatives).

fairscan's stated assumptions where the paper is silent:

- Warm-up is 40 epochs (both official recipes) but at most half the run, so that short runs reach the peak.
- The random crop keeps 20-100% of the image (MAE's scale range; the paper gives no range); ``crop_scale``.
- Inputs are normalised with ImageNet's mean and std (both official pre-training scripts); ``model.json``
  records it, so ``fairscan finetune --weights RUN`` normalises the same way.
- The checkpoint with the lowest *training* loss (the epoch's mean over all processes) during the final 5%
  of epochs (at least the last epoch) is the run's output ``model.safetensors``.
- Epoch snapshots (``snapshots``) save the encoder at chosen epochs of this one run. They are a cheap
  stand-in for Table 4's separate 200/400/800-epoch runs, not the same thing: a 200-epoch run anneals its
  cosine schedule to zero by epoch 200, while the snapshot at epoch 200 of an 800-epoch run is taken at a
  high learning rate.

A run folder holds ``model.safetensors`` (the encoder alone in timm's key layout), ``model.json`` (which
``fairscan finetune --weights RUN --model medical-mae|medical-mocov3`` reads), ``metrics.jsonl``,
``stage.json`` (settings, inputs, leakage, selection, timings), ``state/`` (for ``--resume``) and
``snapshots/epoch-NNNN/`` (each a run folder of its own) when asked for.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fairscan import __version__
from fairscan.errors import InputError, RunError
from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD

BLR = 1.5e-4
TARGET_BATCH = 4096
MAX_MICRO_BATCH = 64  # images per process per micro-batch when --accum is not given (MAE)
WARMUP_EPOCHS = 40.0
SELECT_PERCENT = 5  # the final 5% of epochs, rounded up (integer arithmetic: 5% of 20 is exactly 1)
CROP_SCALE = (0.2, 1.0)
ROTATION = 7.0
WEIGHT_DECAY = {"mae": 0.05, "mocov3": 0.1}
MODEL_NAMES = {"mae": "medical-mae", "mocov3": "medical-mocov3"}
POOLING = {"mae": "avg", "mocov3": "token"}  # how each family fine-tunes (METHOD 5b)
SNAPSHOTS = "snapshots"
SNAPSHOT_BEYOND = "epoch snapshot {epoch} is outside the schedule of {epochs} epoch(s)"
EMPTY_POOL = "{source}: no images to pre-train on{why}"
LEAKAGE = (
    "leakage: {patients} patient(s) ({images} images) pre-trained on from {folder} are held out (validate/test) "
    "in {evaluation} ({dataset}); a model evaluated there will have seen them"
)
SNAPSHOT_NOTE = (
    "snapshots of one run stand in cheaply for separate runs of that many epochs (Table 4); the cosine "
    "schedule differs, so they are an approximation"
)


class PretrainConfig(BaseModel):
    """Every setting of a pre-training run; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["mae", "mocov3"]
    manifests: list[str] = Field(min_length=1)
    out: str
    # manifests to be evaluated on: their held-out patients must not be pre-trained on (leakage check)
    evaluation: list[str] = Field(default_factory=list)
    splits: list[Literal["train", "validate", "test"]] | None = None  # None: every row of each manifest
    epochs: int = Field(800, ge=1)
    arch: str = "vit_base_patch16_224"
    image_size: int = Field(224, ge=16)
    batch_size: int | None = Field(None, ge=1)  # effective batch per optimiser step
    accum: int | None = Field(None, ge=1)
    blr: float = Field(BLR, gt=0)
    lr: float | None = Field(None, gt=0)
    min_lr: float = Field(0.0, ge=0)
    warmup_epochs: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int | None = Field(None, ge=1)
    decoder_depth: int | None = Field(None, ge=1)
    decoder_heads: int | None = Field(None, ge=1)
    proj_dim: int = Field(256, ge=1)
    mlp_dim: int = Field(4096, ge=1)
    temperature: float = Field(0.2, gt=0)
    momentum: float = Field(0.99, ge=0, le=1)
    crop_scale: tuple[float, float] = CROP_SCALE
    rotation: float = Field(ROTATION, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    snapshots: list[int] = Field(default_factory=list)
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    workers: int | None = Field(None, ge=0)
    cache: str | None = None
    use_cache: bool = True
    save_every: int = Field(500, ge=0)
    log_every: int = Field(10, ge=1)
    cpu: bool = False
    procs: int = Field(1, ge=1)
    trackers: list[str] = Field(default_factory=list)

    def resolve(self) -> PretrainConfig:
        """A copy with every ``None`` filled from the method's recipe, after checking what can be checked."""
        from fairscan.train.objectives.mae import check_mask_ratio
        from fairscan.train.objectives.mocov3 import NO_ACCUMULATION, NO_ACCUMULATION_HINT

        values = self.model_dump()
        if self.method == "mae":
            check_mask_ratio(self.mask_ratio)
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise InputError(
                f"crop scale {lo}-{hi} is not a range within (0, 1]", hint="e.g. --crop-scale 0.2"
            )
        bad = [e for e in self.snapshots if not 1 <= e <= self.epochs]
        if bad:
            raise InputError(
                SNAPSHOT_BEYOND.format(epoch=bad[0], epochs=self.epochs),
                hint=f"choose epochs between 1 and {self.epochs} (snapshots are taken during this run)",
            )
        values["snapshots"] = sorted(set(self.snapshots))
        batch = self.batch_size or TARGET_BATCH
        procs = self.procs
        if self.method == "mocov3":
            if self.accum not in (None, 1):
                raise InputError(NO_ACCUMULATION, hint=NO_ACCUMULATION_HINT)
            accum = 1
        else:
            accum = self.accum or auto_accum(batch, procs)
        if batch % (procs * accum):
            raise InputError(
                f"the effective batch {batch} does not split over {procs} process(es) x {accum} accumulation "
                "step(s)",
                hint="choose --batch-size a multiple of processes x --accum",
            )
        values.update(batch_size=batch, accum=accum)
        if values["weight_decay"] is None:
            values["weight_decay"] = WEIGHT_DECAY[self.method]
        if values["warmup_epochs"] is None:
            values["warmup_epochs"] = min(WARMUP_EPOCHS, self.epochs / 2)
        elif values["warmup_epochs"] > self.epochs:
            raise InputError(
                f"--warmup-epochs {self.warmup_epochs} is longer than the run ({self.epochs} epochs)",
                hint="warm-up must end within the schedule",
            )
        if values["lr"] is None:
            values["lr"] = self.blr * batch / 256
        if values["workers"] is None:
            from fairscan.data.images import default_workers

            values["workers"] = max(0, min(8, default_workers() // procs))
        if self.cache and len(self.manifests) > 1:
            raise InputError(
                "--cache names one manifest's image cache", hint="give one manifest, or drop --cache"
            )
        return PretrainConfig(**values)

    @property
    def per_process_batch(self) -> int:
        return (self.batch_size or TARGET_BATCH) // (self.procs * (self.accum or 1))

    @property
    def select_from_epoch(self) -> int:
        """The first epoch (0-based) of the final 5% in which the lowest loss is selected."""
        return self.epochs - max(1, -(-self.epochs * SELECT_PERCENT // 100))


def auto_accum(batch: int, procs: int, max_micro: int = MAX_MICRO_BATCH) -> int:
    """The fewest accumulation steps that keep each process's micro-batch at most ``max_micro`` images."""
    per_step = batch / procs
    accum = max(1, math.ceil(per_step / max_micro))
    while accum < batch and batch % (procs * accum):
        accum += 1
    return accum


# ---------------------------------------------------------------------------------------------- the data


class PretrainAugment:
    """The paper's augmentation (after Hosseinzadeh Taher et al. 2021): random crop resized to ``size``,
    horizontal flip (p=0.5), rotation within +-``rotation`` degrees, then tensor + normalisation.
    ``views=2`` draws two independent views (MoCo v3), stacked as (2, C, H, W)."""

    def __init__(
        self,
        size: int,
        *,
        views: int = 1,
        scale: tuple[float, float] = CROP_SCALE,
        rotation: float = ROTATION,
        hflip: float = 0.5,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        from torchvision import transforms as T

        self.views = views
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=tuple(scale), interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(hflip),
                T.RandomRotation(rotation, interpolation=T.InterpolationMode.BILINEAR),
                T.ToTensor(),
                T.Normalize(mean, std),
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
        img = Image.fromarray(self.parts[k].pixels(i - self.offsets[k])).convert("RGB")
        with seeded(self.seed, epoch, i):
            x = self.transform(img)
        return {"image": x, "index": i, "epoch": epoch}


def load_pool(cfg: PretrainConfig) -> tuple[list[tuple[Path, Any]], list[str], list[dict]]:
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
            records.append({"manifest": str(folder), **leak})
            warnings.append(LEAKAGE.format(folder=folder, **leak))
    return frames, warnings, records


def build_pool_dataset(cfg: PretrainConfig, frames) -> PoolDataset:
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
    views = 2 if cfg.method == "mocov3" else 1
    augment = PretrainAugment(
        cfg.image_size,
        views=views,
        scale=cfg.crop_scale,
        rotation=cfg.rotation,
        hflip=cfg.hflip,
        mean=cfg.mean,
        std=cfg.std,
    )
    return PoolDataset(parts, augment, seed=cfg.seed)


# ------------------------------------------------------------------------------------------ the objective


def build_ssl_model(cfg: PretrainConfig):
    """The MAE or MoCo v3 module for ``cfg`` (call after seeding)."""
    if cfg.method == "mae":
        from fairscan.train.objectives.mae import build_mae

        return build_mae(
            cfg.arch, img_size=cfg.image_size, mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim,
            decoder_depth=cfg.decoder_depth, decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss,
        )  # fmt: skip
    from fairscan.train.objectives.mocov3 import build_mocov3

    return build_mocov3(
        cfg.arch, img_size=cfg.image_size, dim=cfg.proj_dim, mlp_dim=cfg.mlp_dim, temperature=cfg.temperature,
        momentum=cfg.momentum,
    )  # fmt: skip


def make_objective(model, cfg: PretrainConfig, *, out: Path, info_json: dict):
    """The loop objective: SSL loss, the objective's own parameter groups, encoder export, snapshots."""
    from fairscan.train.loop import Objective

    class SelfSupervised(Objective):
        select_metric = "train_loss"
        select_mode = "min"

        def loss(self, model, batch):
            if cfg.method == "mae":
                return model(batch["image"])
            loss, (_, _, k1, _) = model(batch["image"], return_outputs=True)
            return loss, {"negatives": float(k1.shape[0]), "momentum": self.model.last_momentum}

        def param_groups(self, tcfg):
            return self.model.optimizer_groups(tcfg.weight_decay)

        def export(self, unwrapped):
            return unwrapped.encoder_state_dict()

        def on_epoch_end(self, unwrapped, epoch, accelerator):
            done = epoch + 1  # snapshots are named by 1-based epoch: the one just finished
            if done in cfg.snapshots and accelerator.is_main_process:
                save_encoder(out / SNAPSHOTS / f"epoch-{done:04d}", self.export(unwrapped), info_json)
            return {}

    return SelfSupervised(model)


def save_encoder(folder: Path, state: dict, info_json: dict) -> None:
    """``model.json`` then ``model.safetensors``, each written atomically (a reader never sees half a file)."""
    from fairscan.io import write_json
    from fairscan.models import MODEL_JSON, MODEL_WEIGHTS
    from fairscan.train.loop import write_weights

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MODEL_JSON, info_json)
    write_weights(folder / MODEL_WEIGHTS, state)


def model_info(cfg: PretrainConfig) -> dict:
    """``model.json`` for the encoder: what ``fairscan finetune --weights RUN`` needs to know."""
    from fairscan.models import ModelInfo

    info = ModelInfo(
        arch=cfg.arch, family="vit", pooling=POOLING[cfg.method], image_size=cfg.image_size, labels=[],
        mean=list(cfg.mean), std=list(cfg.std), head="none", model=MODEL_NAMES[cfg.method],
        extra={"stage": "pretrain", "method": cfg.method, "encoder_only": True,
               "key_layout": "timm", "finetune_with": f"--model {MODEL_NAMES[cfg.method]} --weights RUN"},
    )  # fmt: skip
    return info.to_json()


# ----------------------------------------------------------------------------------------------- the run


def prepare_run(cfg: PretrainConfig, resume: bool = False) -> tuple[PretrainConfig, dict | None]:
    """Resolve settings and check everything that can fail on bad input, before any process starts."""
    from fairscan.train.loop import check_run_folder, resumed_config

    saved = check_run_folder(cfg.out, resume=resume, stage="pretrain")
    if saved is not None:
        cfg = resumed_config(cfg, saved)
    return cfg.resolve(), saved


def pretrain(
    cfg: PretrainConfig,
    *,
    resume: bool = False,
    console=None,
    debug: bool = False,
    launched: bool = False,
) -> dict[str, Any]:
    """Run (or continue) a pre-training run; returns the stage record (on the main process)."""
    from fairscan.train.launch import relaunch, under_launcher
    from fairscan.train.loop import printer

    say = printer(console)
    if not launched:
        if (
            under_launcher()
        ):  # started by an outside launcher (e.g. several machines): its process count rules
            cfg = cfg.model_copy(update={"procs": int(os.environ["WORLD_SIZE"])})
        cfg, _ = prepare_run(cfg, resume)
        if cfg.procs > 1 and not under_launcher():
            build_ssl_model(
                cfg
            )  # a bad --arch, image size or mask ratio fails here, before any worker starts
            frames, warnings, _ = load_pool(cfg)
            for w in warnings:
                say(f"[yellow]warning:[/] {w}")
            _check_pool_size(cfg, sum(len(df) for _, df in frames))
            relaunch("pretrain", {"config": cfg.model_dump(), "resume": resume, "warned": True},
                     processes=cfg.procs, debug=debug)  # fmt: skip
            return json.loads((Path(cfg.out) / "stage.json").read_text())
    return _run(cfg, resume=resume, console=console, warned=launched)


def _check_pool_size(cfg: PretrainConfig, n: int) -> None:
    per_step = cfg.batch_size // cfg.accum
    if n < per_step:
        raise InputError(
            f"the pool has {n} images, fewer than one step's {per_step} ({cfg.procs} process(es) x "
            f"{cfg.per_process_batch})",
            hint="lower --batch-size (MAE: or raise --accum), or pre-train on a larger pool",
        )


def steps_per_epoch(n: int, *, per_process: int, processes: int, accum: int) -> int:
    """Optimiser steps per epoch, as the loop counts them (whole micro-batches only, shared over processes)."""
    return math.ceil(((n // per_process) // processes) / accum)


def _run(cfg: PretrainConfig, *, resume: bool, console, warned: bool) -> dict[str, Any]:
    import torch

    from fairscan.io import fingerprint, write_json
    from fairscan.models import MODEL_JSON, MODEL_WEIGHTS
    from fairscan.train.loop import TrainConfig, flat_settings, fmt_metric, make_accelerator, printer, train

    t_start = time.time()
    out = Path(cfg.out)
    frames, warnings, leakage = load_pool(cfg)
    n_images = sum(len(df) for _, df in frames)
    _check_pool_size(cfg, n_images)
    acc = make_accelerator(
        cpu=cfg.cpu, precision=cfg.precision, accum=cfg.accum, seed=cfg.seed, compile=cfg.compile,
        trackers=cfg.trackers, project_dir=out,
    )  # fmt: skip
    main = acc.is_main_process
    say = printer(console if main else None)
    if not warned:
        for w in warnings:
            say(f"[yellow]warning:[/] {w}")
    world = acc.num_processes
    if world != cfg.procs:
        raise RunError(
            f"Accelerate started {world} process(es) but the settings were resolved for {cfg.procs}",
            hint="start multi-process runs with --gpus/--procs, or under `accelerate launch` / torchrun",
        )
    train_set = build_pool_dataset(cfg, frames)

    model = build_ssl_model(cfg)
    per_proc = cfg.per_process_batch
    spe = steps_per_epoch(n_images, per_process=per_proc, processes=world, accum=cfg.accum)
    if cfg.method == "mocov3":
        model.total_steps = spe * cfg.epochs
        if world > 1 and acc.device.type == "cuda":  # BatchNorm statistics over the global batch, as official
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    info_json = model_info(cfg)
    saved_stage = json.loads((out / "stage.json").read_text()) if resume else None
    effective = per_proc * world * cfg.accum
    scaled = cfg.blr * effective / 256
    lr_text = (
        f"lr {cfg.lr:.3g} = base lr {cfg.blr:.3g} x {effective} / 256"
        if math.isclose(cfg.lr, scaled, rel_tol=1e-9)
        else f"lr {cfg.lr:.3g} (set with --lr; base lr x batch / 256 would be {scaled:.3g})"
    )
    say(
        f"[bold]{cfg.method.upper() if cfg.method == 'mae' else 'MoCo v3'}[/] pre-training {cfg.arch} at "
        f"{cfg.image_size} px on {n_images} images: effective batch {effective} = {world} process(es) x "
        f"{per_proc} x {cfg.accum} accumulation; {lr_text}; "
        f"{cfg.epochs} epochs ({cfg.warmup_epochs:g} warm-up), {spe} steps each; output: lowest loss in epochs "
        f"{cfg.select_from_epoch + 1}-{cfg.epochs}"
    )
    if cfg.snapshots:
        say(f"snapshots at epoch(s) {', '.join(map(str, cfg.snapshots))}: {SNAPSHOT_NOTE}")
    stage = {
        "stage": "pretrain",
        "fairscan_version": __version__,
        "status": "running",
        "created": (saved_stage or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": cfg.method,
        "model": MODEL_NAMES[cfg.method],
        "settings": cfg.model_dump(),
        "seed": cfg.seed,
        "inputs": {
            f"manifest_{k}": fingerprint(folder / "manifest.parquet") for k, (folder, _) in enumerate(frames)
        },
        "images": n_images,
        "leakage": leakage,
        "processes": world,
        "device": acc.device.type,
        "mixed_precision": acc.mixed_precision,
        "batch": {"effective": effective, "per_process": per_proc, "accum": cfg.accum},
        "lr": {
            "base": cfg.blr,
            "effective_batch": effective,
            "lr": cfg.lr,
            "warmup_epochs": cfg.warmup_epochs,
        },
        "steps_per_epoch": spe,
        "selection": {
            "rule": "lowest training loss (epoch mean over all processes) in the final 5% of epochs",
            "from_epoch": cfg.select_from_epoch + 1,
            "to_epoch": cfg.epochs,
        },
        "snapshots": {"epochs": cfg.snapshots, "note": SNAPSHOT_NOTE} if cfg.snapshots else None,
    }
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MODEL_JSON, info_json)
        write_json(out / "stage.json", stage)

    objective = make_objective(model, cfg, out=out, info_json=info_json)
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=effective, lr=cfg.lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
        weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), accum=cfg.accum, seed=cfg.seed,
        workers=cfg.workers, save_every=cfg.save_every, log_every=cfg.log_every,
        select_after_epoch=cfg.select_from_epoch,
    )  # fmt: skip
    result = train(
        objective, accelerator=acc, train_set=train_set, val_set=None, cfg=tcfg,
        out_dir=out, resume=resume, console=console, tracker_config=flat_settings(cfg.model_dump()),
    )  # fmt: skip

    snaps = [out / SNAPSHOTS / f"epoch-{e:04d}" for e in cfg.snapshots]
    losses = epoch_losses(out)
    stage.update(
        status="complete",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.time() - t_start, 1) + float((saved_stage or {}).get("seconds", 0.0)),
        result={
            "selected_epoch": None if result.best_epoch is None else result.best_epoch + 1,
            "selected_loss": result.best_metric,
            "final_loss": losses[-1] if losses else None,
            "epoch_losses": losses,
            "epochs": result.epochs,
            "steps": result.steps,
            "train_images_per_second": round(result.images_per_second, 2) if result.train_seconds else None,
            "resumed_from_step": result.resumed_from_step,
        },
        outputs=(
            {"model": fingerprint(out / MODEL_WEIGHTS),
             **{f"snapshot_{p.name}": fingerprint(p / MODEL_WEIGHTS) for p in snaps if (p / MODEL_WEIGHTS).exists()}}
            if main else {}
        ),
    )  # fmt: skip
    if main:
        write_json(out / "stage.json", stage)
        say(
            f"[green]done[/]: selected epoch {stage['result']['selected_epoch']} (loss "
            f"{fmt_metric(result.best_metric)}); {out / MODEL_WEIGHTS}; fine-tune it with `fairscan finetune --model "
            f"{MODEL_NAMES[cfg.method]} --weights {out} ...`"
        )
    acc.wait_for_everyone()
    return stage


def epoch_losses(out: Path) -> list[float]:
    """Each finished epoch's mean training loss, from ``metrics.jsonl``."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    losses = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "epoch":
            losses.append(round(float(rec["train_loss"]), 6))
    return losses
