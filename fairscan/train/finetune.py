"""``fairscan finetune`` as a library: settings, their resolution from the registry and the recipe, and the run.

:class:`FinetuneConfig` holds every setting; ``None`` means "the model's or the recipe's default", filled in one
place (:meth:`FinetuneConfig.resolve`). Recipes (METHOD section 4):

- fine-tuning (Medical MAE's): AdamW betas (0.9, 0.95), weight decay 0.05 (none on 1-D parameters), base lr
  2.5e-4 x effective batch / 256, 5 warm-up epochs then cosine to 1e-5, layer-wise decay 0.55 (off for scratch
  baselines), RandAugment m6, DropPath 0.2; the batch and epochs of the model's registry entry;
- linear probing (MAE's): frozen backbone, BatchNorm without affine before the head, LARS, base lr 0.1 x batch /
  256, batch 512, 90 epochs with 10 warm-up, no weight decay, crop + flip only, class-token pooling for ViTs;
  the backbone is checked to be bit-identical afterwards.

A run folder holds ``model.safetensors`` (the epoch with the best validation mean AUC), ``model.json``,
``metrics.jsonl``, ``stage.json`` (resolved settings, weight hashes, seed, inputs, results) and ``state/`` (the
last checkpoint, for ``--resume``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fairscan import __version__
from fairscan.errors import InputError, RunError

FT_BLR, LP_BLR = 2.5e-4, 0.1


class FinetuneConfig(BaseModel):
    """Every setting of a fine-tuning run; presets embed it, so unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    model: str
    manifest: str
    out: str
    weights: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    linear_probe: bool = False
    arch: str | None = None
    image_size: int | None = Field(None, ge=16)
    pooling: Literal["avg", "token"] | None = None
    labels: list[str] | None = None
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    accum: int = Field(1, ge=1)
    blr: float | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    min_lr: float | None = Field(None, ge=0)
    warmup_epochs: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    layer_decay: float | None = Field(None, gt=0, le=1)
    drop_path: float | None = Field(None, ge=0, lt=1)
    randaug: str | None = None
    # The paper's random-resized crop (timm's default scale 0.08-1) and flip; the demo's synthetic findings sit
    # at fixed places, so it keeps the whole image (crop_scale [1, 1]) and no flip.
    crop_scale: tuple[float, float] | None = None
    hflip: float = Field(0.5, ge=0, le=1)
    optimizer: Literal["adamw", "lars"] | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    channels_last: bool | None = None
    workers: int | None = Field(None, ge=0)
    cache: str | None = None
    use_cache: bool = True
    save_every: int = Field(500, ge=0)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)
    cpu: bool = False
    procs: int = Field(1, ge=1)
    trackers: list[str] = Field(default_factory=list)

    def resolve(self) -> FinetuneConfig:
        """A copy with every ``None`` filled from the registry entry and the recipe."""
        from fairscan.models import arch_family, get_spec

        spec = get_spec(self.model)
        arch = self.arch or spec.arch
        family = arch_family(arch)
        if family != spec.family:
            raise InputError(
                f"--arch {arch} is a {family} but {spec.name} is a {spec.family}",
                hint=f"pick a {spec.family} architecture (the registry's is {spec.arch})",
            )
        lp = self.linear_probe
        vit_pool = "token" if lp else spec.pooling
        d: dict[str, Any] = {
            "arch": arch,
            "image_size": 224,
            "pooling": vit_pool if family == "vit" else "avg",
            "epochs": 90 if lp else spec.epochs,
            "batch_size": 512 if lp else spec.batch_size,
            "blr": LP_BLR if lp else FT_BLR,
            "min_lr": 0.0 if lp else 1e-5,
            "warmup_epochs": 10.0 if lp else 5.0,
            "weight_decay": 0.0 if lp else 0.05,
            "layer_decay": 1.0 if lp else (spec.layer_decay or 1.0),
            "drop_path": 0.0 if lp else 0.2,
            "randaug": "none" if lp else "rand-m6-mstd0.5-inc1",
            "optimizer": "lars" if lp else "adamw",
            "channels_last": family == "resnet",
        }
        values = self.model_dump()
        for key, default in d.items():
            if values.get(key) is None:
                values[key] = default
        if values["lr"] is None:
            values["lr"] = values["blr"] * values["batch_size"] / 256
        if values["workers"] is None:
            from fairscan.data.images import default_workers

            values["workers"] = max(0, min(8, default_workers() // values["procs"]))
        return FinetuneConfig(**values)


# -------------------------------------------------------------------------------------------------- inputs


def load_splits(manifest: str | Path, labels: list[str] | None):
    """The train and validate rows of a manifest, and the labels to train on; clear errors when unusable."""
    from fairscan.data.manifest import manifest_dir_of
    from fairscan.schema import label_ids, read_manifest

    df = read_manifest(manifest)
    available = label_ids(df)
    if labels:
        unknown = [lab for lab in labels if lab not in available]
        if unknown:
            raise InputError(
                f"{manifest}: no label column(s) for {', '.join(unknown)}",
                hint=f"the manifest has {', '.join(available)}",
            )
    labels = list(labels or available)
    out = {}
    for split in ("train", "validate"):
        part = df[df["split"] == split].reset_index(drop=True)
        if part.empty:
            raise InputError(
                f"{manifest}: the {split} split is empty",
                hint="fine-tuning needs train and validate rows (the model is selected on validate, never test)",
            )
        out[split] = part
    return out["train"], out["validate"], labels, manifest_dir_of(manifest)


def manifest_file(manifest: str | Path) -> Path:
    path = Path(manifest)
    return path / "manifest.parquet" if path.is_dir() else path


def _tensor_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def backbone_digest(model) -> str:
    """sha256 over every backbone tensor (all but the classifier): linear probing must not change it."""
    from fairscan.models import backbone_names

    state = model.state_dict()
    return _tensor_digest({k: state[k] for k in backbone_names(model)})


# ----------------------------------------------------------------------------------------------- the run


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    console=None,
    debug: bool = False,
    launched: bool = False,
) -> dict[str, Any]:
    """Run (or continue) a fine-tuning run; returns the final stage record (on the main process)."""
    from fairscan.train.launch import relaunch, under_launcher
    from fairscan.train.loop import check_run_folder, resumed_config

    if not launched:
        saved = check_run_folder(cfg.out, resume=resume)
        if saved is not None:
            cfg = resumed_config(cfg, saved)
        cfg = cfg.resolve()
        if cfg.procs > 1 and not under_launcher():
            _validate(cfg, console)
            relaunch(
                "finetune", {"config": cfg.model_dump(), "resume": resume}, processes=cfg.procs, debug=debug
            )
            return json.loads((Path(cfg.out) / "stage.json").read_text())
    return _run(cfg, resume=resume, console=console)


def _validate(cfg: FinetuneConfig, console) -> None:
    """What the parent checks before launching workers, so bad input fails here with exit 2."""
    from fairscan.models import build_model, get_spec, load_encoder, resolve_checkpoint

    load_splits(cfg.manifest, cfg.labels)
    ckpt = resolve_checkpoint(get_spec(cfg.model), weights=cfg.weights, init=cfg.init)
    if ckpt is not None:
        model = build_model(cfg.arch, num_classes=1, pooling=cfg.pooling, image_size=cfg.image_size)
        load_encoder(model, ckpt, arch=cfg.arch)


def _run(cfg: FinetuneConfig, *, resume: bool, console) -> dict[str, Any]:
    import torch

    from fairscan.data.dataset import ImageDataset, build_transform, load_size, open_cache
    from fairscan.io import fingerprint, write_json
    from fairscan.models import (
        LINEAR_HEAD,
        MODEL_JSON,
        PROBE_HEAD,
        ModelInfo,
        build_model,
        classifier_name,
        get_spec,
        load_encoder,
        resolve_checkpoint,
    )
    from fairscan.train.loop import TrainConfig, flat_settings, fmt_metric, make_accelerator, printer, train
    from fairscan.train.supervised import Supervised

    t_start = time.time()
    spec = get_spec(cfg.model)
    out = Path(cfg.out)
    train_df, val_df, labels, manifest_dir = load_splits(cfg.manifest, cfg.labels)
    acc = make_accelerator(
        cpu=cfg.cpu, precision=cfg.precision, accum=cfg.accum, seed=cfg.seed, compile=cfg.compile,
        trackers=cfg.trackers, project_dir=out,
    )  # fmt: skip
    main = acc.is_main_process
    say = printer(console if main else None)

    head = PROBE_HEAD if cfg.linear_probe else LINEAR_HEAD
    model = build_model(
        cfg.arch, num_classes=len(labels), pooling=cfg.pooling, image_size=cfg.image_size,
        drop_path=cfg.drop_path, head=head,
    )  # fmt: skip
    saved_stage = json.loads((out / "stage.json").read_text()) if resume else None
    if resume:  # the checkpoint in state/ replaces every weight; keep the record of where they came from
        weights_record = saved_stage.get("weights")
        saved_info = ModelInfo.read(out)
        mean, std = tuple(saved_info.mean), tuple(saved_info.std)
    else:
        ckpt = resolve_checkpoint(spec, weights=cfg.weights, init=cfg.init)
        if ckpt is None:
            weights_record = {"init": "random", "source": None, "sha256": None}
            say(
                f"[bold]{spec.title}[/]: random init ({'scratch baseline' if spec.scratch else '--init random'})"
            )
        else:
            report = load_encoder(model, ckpt, arch=cfg.arch)
            weights_record = report.to_json()
            say(
                f"[bold]{spec.title}[/]: loaded {report.loaded} tensors from {report.source} ({report.format}, "
                f"sha256 {report.sha256[:12]}); new: {', '.join(report.initialised) or 'none'}"
                + (f"; resized {', '.join(report.resized)}" if report.resized else "")
            )
        mean, std = _normalisation(spec, ckpt)
    if cfg.linear_probe:
        prefix = classifier_name(model) + "."
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(prefix))
    before = backbone_digest(model) if cfg.linear_probe and not resume else None
    if before is None and cfg.linear_probe:
        before = (saved_stage or {}).get("linear_probe", {}).get("backbone_sha256_before")
    channels_last = bool(cfg.channels_last) and acc.device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    info = ModelInfo(
        arch=cfg.arch, family=spec.family, pooling=cfg.pooling, image_size=cfg.image_size, labels=labels,
        mean=list(mean), std=list(std), head=head, model=spec.name,
    )  # fmt: skip
    cache = open_cache(manifest_dir, cfg.cache, enabled=cfg.use_cache)
    decode = load_size(cfg.image_size)
    randaug = None if cfg.randaug in (None, "none") else cfg.randaug
    common = dict(labels=labels, manifest_dir=manifest_dir, decode_size=decode, cache=cache, seed=cfg.seed)
    train_set = ImageDataset(
        train_df,
        transform=build_transform(
            cfg.image_size,
            train=True,
            mean=mean,
            std=std,
            randaug=randaug,
            scale=cfg.crop_scale,
            hflip=cfg.hflip,
        ),
        **common,
    )
    val_set = ImageDataset(
        val_df, transform=build_transform(cfg.image_size, train=False, mean=mean, std=std), **common
    )

    world = acc.num_processes
    per_proc = cfg.batch_size // max(1, world * cfg.accum)
    say(
        f"effective batch {cfg.batch_size} = {world} process(es) x {per_proc} x {cfg.accum} accumulation; "
        f"lr {cfg.lr:.3g} = base lr {cfg.blr:.3g} x {cfg.batch_size} / 256; {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}; "
        f"{len(train_set)} train / {len(val_set)} validate images"
        + ("; image cache" if cache is not None else "")
    )
    stage = {
        "stage": "finetune",
        "fairscan_version": __version__,
        "status": "running",
        "created": (saved_stage or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": spec.name,
        "settings": cfg.model_dump(),
        "seed": cfg.seed,
        "weights": weights_record,
        "inputs": {"manifest": fingerprint(manifest_file(cfg.manifest))},
        "images": {"train": len(train_set), "validate": len(val_set)},
        "processes": world,
        "device": acc.device.type,
        "mixed_precision": acc.mixed_precision,
        "batch": {"effective": cfg.batch_size, "per_process": per_proc, "accum": cfg.accum},
        "lr": {"base": cfg.blr, "effective_batch": cfg.batch_size, "lr": cfg.lr},
    }
    if cfg.linear_probe:
        stage["linear_probe"] = {"backbone_sha256_before": before}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MODEL_JSON, info.to_json())
        write_json(out / "stage.json", stage)

    objective = Supervised(model, labels, linear_probe=cfg.linear_probe, channels_last=channels_last)
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr,
        warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay,
        layer_decay=None if cfg.layer_decay == 1.0 else cfg.layer_decay, optimizer=cfg.optimizer,
        betas=tuple(cfg.betas), accum=cfg.accum, clip_grad=cfg.clip_grad, seed=cfg.seed, workers=cfg.workers,
        eval_every=cfg.eval_every, save_every=cfg.save_every, log_every=cfg.log_every,
    )  # fmt: skip
    result = train(
        objective, accelerator=acc, train_set=train_set, val_set=val_set, cfg=tcfg, out_dir=out,
        resume=resume, console=console, tracker_config=flat_settings(cfg.model_dump()),
    )  # fmt: skip

    if cfg.linear_probe:
        stage["linear_probe"] = _check_backbone(
            acc.unwrap_model(objective.model, keep_torch_compile=False), out, before
        )
    stage.update(
        status="complete",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.time() - t_start, 1) + float((saved_stage or {}).get("seconds", 0.0)),
        result={
            "best_val_mean_auc": result.best_metric,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "steps": result.steps,
            "train_images_per_second": round(result.images_per_second, 2),
            "resumed_from_step": result.resumed_from_step,
        },
        outputs={"model": fingerprint(out / "model.safetensors")} if main else {},
    )
    if main:
        write_json(out / "stage.json", stage)
        say(
            f"[green]done[/]: best validation mean AUC {fmt_metric(result.best_metric)} at epoch "
            f"{(result.best_epoch or 0) + 1}; {out}/model.safetensors"
        )
    acc.wait_for_everyone()
    return stage


def _normalisation(spec, ckpt) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation follows the weights: a fairscan run folder's own, else the registry entry's."""
    if ckpt is not None and ckpt.info is not None and ckpt.info.mean:
        return tuple(ckpt.info.mean), tuple(ckpt.info.std)
    return spec.mean, spec.std


def _check_backbone(model, out: Path, before: str | None) -> dict[str, Any]:
    """Linear probing must leave the backbone bit-identical, in memory and in the saved model."""
    from safetensors.torch import load_file

    from fairscan.models import backbone_names

    after = backbone_digest(model)
    saved = load_file(out / "model.safetensors")
    saved_digest = _tensor_digest({k: saved[k] for k in backbone_names(model)})
    identical = before is not None and before == after == saved_digest
    if not identical:
        raise RunError(
            "linear probing changed the frozen backbone (sha256 before "
            f"{before and before[:12]}, after {after[:12]}, saved {saved_digest[:12]})",
            hint="this is a bug in fairscan: please report it with the run's stage.json",
        )
    return {"backbone_sha256_before": before, "backbone_sha256_after": after, "identical": True}
