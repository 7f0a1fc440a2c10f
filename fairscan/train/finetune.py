"""``fairscan finetune`` as a library: settings, their resolution from the registry and the recipe, and the run.

:class:`FinetuneConfig` holds every setting; ``None`` means "the model's or the recipe's default", filled in one
place (:meth:`FinetuneConfig.resolve`). Recipes (METHOD section 4):

- fine-tuning (Medical MAE's): AdamW betas (0.9, 0.95), weight decay 0.05 (none on 1-D parameters), base lr
  2.5e-4 x effective batch / 256, 5 warm-up epochs then cosine to 1e-5, layer-wise decay 0.55 (off for scratch
  baselines), RandAugment m6, DropPath 0.2; the batch and epochs of the model's registry entry;
- linear probing (MAE's): frozen backbone, BatchNorm without affine before the head, LARS, base lr 0.1 x batch /
  256, batch 512, 90 epochs with 10 warm-up, no weight decay, crop + flip only, class-token pooling for ViTs;
  the backbone is checked to be bit-identical afterwards.

A run folder holds ``model.safetensors`` (the epoch with the best validation mean AUC, or the one ``--select``
chooses: ``fairscan.train.mitigation``), ``model.json``,
``metrics.jsonl``, ``stage.json`` (resolved settings, weight hashes, seed, inputs, results) and ``state/`` (the
last checkpoint, for ``--resume``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from fairscan.errors import InputError, RunError
from fairscan.settings import Cli, CropScale, TrainingOptions
from fairscan.train.mitigation.options import MitigationOptions, resolve_mitigation

FT_BLR, LP_BLR = 2.5e-4, 0.1


def recipe(spec, arch: str, *, linear_probe: bool) -> dict[str, Any]:
    """The paper's recipe for a registry entry (METHOD 4): every default a run does not set. The one place it
    is written; presets state only what an experiment changes."""
    from fairscan.models import arch_family

    lp = linear_probe
    family = arch_family(arch)
    return {
        "image_size": 224,
        "pooling": ("token" if lp else spec.pooling) if family == "vit" else "avg",
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


class FinetuneConfig(MitigationOptions, TrainingOptions):
    """Every setting of a fine-tuning run; presets embed it, so unknown keys are errors. ``None``: the model's or
    the recipe's default (:func:`recipe`), filled in by :meth:`resolve`. Bias mitigation and the selection of the
    exported epoch are :class:`~fairscan.train.mitigation.options.MitigationOptions`."""

    input_fields: ClassVar[tuple[str, ...]] = ("manifest",)
    path_fields: ClassVar[tuple[str, ...]] = ("manifest", "weights", "cache")
    execution_fields: ClassVar[frozenset[str]] = frozenset({"channels_last"})

    model: Annotated[str, Cli(("--model", "-m"))] = Field(
        description="Registry name (`fairscan models list`)."
    )
    manifest: str = Field(description="manifest.parquet or its folder.")
    out: Annotated[str, Cli(("--out", "-o"))] = Field(description="The run folder to write.")
    weights: str | None = Field(None, description="Weights file or fairscan run folder (default: the hub).")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained, or random for a random init (never implied)."
    )
    linear_probe: bool = Field(False, description="Frozen backbone, BN + linear head, LARS (MAE's recipe).")
    arch: str | None = Field(None, description="Another timm architecture of the same family (tiny tests).")
    image_size: int | None = Field(None, ge=16, description="Input pixels (224).")
    pooling: Literal["avg", "token"] | None = Field(None, description="avg or token (default: the model's).")
    labels: list[str] | None = Field(
        None, description="Label ids, comma-separated (default: the manifest's)."
    )
    epochs: int | None = Field(None, ge=1, description="Epochs (default: the model's recipe).")
    batch_size: int | None = Field(None, ge=1, description="Effective batch (default: the recipe's).")
    accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    blr: float | None = Field(None, gt=0, description="Base lr, scaled by batch / 256 (2.5e-4; probe 0.1).")
    lr: float | None = Field(None, gt=0, description="Absolute peak lr (overrides --blr).")
    min_lr: float | None = Field(None, ge=0, description="The cosine schedule's end (1e-5; probe 0).")
    warmup_epochs: float | None = Field(None, ge=0, description="Linear warm-up epochs (5; probe 10).")
    weight_decay: float | None = Field(None, ge=0, description="AdamW weight decay, none on 1-D (0.05).")
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise lr decay (the model's: 0.55 for pre-trained, 1 = off)."
    )
    drop_path: float | None = Field(None, ge=0, lt=1, description="DropPath rate (0.2; probe 0).")
    randaug: str | None = Field(None, description="timm RandAugment spec, or none (rand-m6-mstd0.5-inc1).")
    # The paper's random-resized crop (timm's default scale 0.08-1) and flip; the demo's synthetic findings sit
    # at fixed places, so it keeps the whole image (crop_scale [1, 1]) and no flip.
    crop_scale: CropScale | None = Field(
        None, description="Random crop's share of the image: LO or LO,HI (0.08,1)."
    )
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    optimizer: Literal["adamw", "lars"] | None = Field(None, description="adamw, or lars (linear probing).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this.")
    seed: int = Field(0, description="Seed for init, order and augmentation.")
    eval_every: int = Field(1, ge=1, description="Epochs between validations.")
    channels_last: bool | None = Field(None, description="channels-last memory on a GPU (default: ResNets).")

    def resolve(self) -> FinetuneConfig:
        """A copy with every ``None`` filled from the registry entry and the recipe."""
        from fairscan.models import get_spec, spec_arch

        spec = get_spec(self.model)
        arch, family = spec_arch(spec, self.arch)
        values = resolve_mitigation(self.model_dump())  # before the recipe: Group DRO has its own weight decay
        values["arch"] = arch
        for key, default in recipe(spec, arch, linear_probe=self.linear_probe).items():
            if values.get(key) is None:
                values[key] = default
        if values["lr"] is None:
            values["lr"] = values["blr"] * values["batch_size"] / 256
        values["workers"] = self.resolved_workers()
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


def finetune(cfg, **options: Any) -> dict[str, Any] | None:
    """Run (or continue) a fine-tuning run; returns its stage record. ``options``: ``resume``, ``break_lock``,
    ``allow_inexact_resume``, ``console``, ``debug`` (see :func:`fairscan.train.stage.run_stage`)."""
    from fairscan.train.stage import run_settings

    return run_settings(STAGE, cfg, **options)


def _check(cfg: FinetuneConfig, console) -> None:
    """What the parent checks before launching workers, so that bad input fails here with exit 2."""
    from fairscan.models import build_model, get_spec, load_encoder, resolve_checkpoint
    from fairscan.train import mitigation

    train_df, val_df, labels, _ = load_splits(cfg.manifest, cfg.labels)
    model = build_model(cfg.arch, num_classes=1, pooling=cfg.pooling, image_size=cfg.image_size)
    mitigation.check(cfg, model, train_df, val_df, labels)
    ckpt = resolve_checkpoint(get_spec(cfg.model), weights=cfg.weights, init=cfg.init)
    if ckpt is not None:
        load_encoder(model, ckpt, arch=cfg.arch)


def _run(cfg: FinetuneConfig, folder, *, resume: bool, console, inexact: list[str]) -> None:
    """The run itself, in every process: data, model and weights, the record, the loop, the result."""
    from fairscan.data.device_input import DeviceInput
    from fairscan.models import get_spec
    from fairscan.runs import MODEL_WEIGHTS, StageRecord
    from fairscan.train import mitigation
    from fairscan.train.loop import TrainConfig, make_accelerator, train
    from fairscan.train.progress import flat_settings, fmt_metric, printer

    spec = get_spec(cfg.model)
    out = folder.path
    train_df, val_df, labels, manifest_dir = load_splits(cfg.manifest, cfg.labels)
    train_df, groups = mitigation.split(cfg, train_df, val_df, labels)
    acc = make_accelerator(
        cpu=cfg.cpu, precision=cfg.precision, accum=cfg.accum, seed=cfg.seed, compile=cfg.compile,
        trackers=cfg.log_with, project_dir=out,
    )  # fmt: skip
    say = printer(console if acc.is_main_process else None)
    saved = folder.read() if resume else None
    start = _start_model(cfg, spec, labels, folder, saved, say)
    model, channels_last = start["model"], bool(cfg.channels_last) and acc.device.type == "cuda"
    if channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    train_set, val_set = _datasets(cfg, train_df, val_df, labels, manifest_dir, start["mean"])
    world = acc.num_processes
    per_proc = cfg.batch_size // max(1, world * cfg.accum)
    say(
        f"effective batch {cfg.batch_size} = {world} process(es) x {per_proc} x {cfg.accum} accumulation; "
        f"lr {cfg.lr:.3g} = base lr {cfg.blr:.3g} x {cfg.batch_size} / 256; {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}; "
        f"{len(train_set)} train / {len(val_set)} validate images"
        + ("; image cache" if train_set.cache is not None else "")
    )
    facts = {
        "model": spec.name, "weights": start["weights"], "images": {"train": len(train_set), "validate": len(val_set)},
        "batch": {"effective": cfg.batch_size, "per_process": per_proc, "accum": cfg.accum},
        "lr": {"base": cfg.blr, "effective_batch": cfg.batch_size, "lr": cfg.lr},
        **({"resume": {"exact": False, "why": inexact}} if inexact else {}),
        **({"linear_probe": {"backbone_sha256_before": start["before"]}} if cfg.linear_probe else {}),
        **mitigation.facts(cfg, groups, labels),
    }  # fmt: skip
    if acc.is_main_process:
        from fairscan.io import write_json
        from fairscan.models import MODEL_JSON

        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MODEL_JSON, start["info"].to_json())
    record = StageRecord.start(folder, stage="finetune", cfg=cfg, accelerator=acc, saved=saved, **facts)

    to_input = DeviceInput(start["mean"], start["std"], channels_last=channels_last)
    objective, sampler = mitigation.objective_for(
        cfg, model, labels, groups, train_set, accelerator=acc, out=out, to_input=to_input
    )
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr,
        warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay,
        layer_decay=None if cfg.layer_decay == 1.0 else cfg.layer_decay, optimizer=cfg.optimizer,
        betas=tuple(cfg.betas), accum=cfg.accum, clip_grad=cfg.clip_grad, seed=cfg.seed,
        workers=cfg.resolved_workers(), eval_every=cfg.eval_every, save_every=cfg.save_every,
        log_every=cfg.log_every,
    )  # fmt: skip
    result = train(
        objective, accelerator=acc, train_set=train_set, val_set=val_set, cfg=tcfg, out_dir=out,
        resume=resume, console=console, tracker_config=flat_settings(cfg.model_dump()), sampler=sampler,
    )  # fmt: skip
    record.data["selection"] = selection = mitigation.finish(cfg, out, groups, main=acc.is_main_process)
    if cfg.linear_probe:
        unwrapped = acc.unwrap_model(objective.model, keep_torch_compile=False)
        record.data["linear_probe"] = _check_backbone(unwrapped, out, start["before"])
    record.complete(
        result={
            "best_val_mean_auc": selection["chosen_val_mean_auc"], "best_epoch": selection["chosen_epoch"],
            "select": cfg.select, "epochs": result.epochs,
            "steps": result.steps, "train_images_per_second": round(result.images_per_second, 2),
            "resumed_from_step": result.resumed_from_step,
        },
        outputs={"model": out / MODEL_WEIGHTS},
    )  # fmt: skip
    chosen = f"epoch {(selection['chosen_epoch'] or 0) + 1}" + ("" if cfg.select == "val_mean_auc" else f" by {cfg.select}")
    say(f"[green]done[/]: best validation mean AUC {fmt_metric(selection['chosen_val_mean_auc'])} at {chosen}; "
        f"{out}/{MODEL_WEIGHTS}")  # fmt: skip
    acc.wait_for_everyone()


def _start_model(cfg: FinetuneConfig, spec, labels: list[str], folder, saved, say) -> dict[str, Any]:
    """The model to train, and where its weights come from: the checkpoint (on resume; its record says where
    they came from first), the weights asked for, or a random init."""
    from fairscan.models import (
        LINEAR_HEAD,
        PROBE_HEAD,
        ModelInfo,
        build_model,
        classifier_name,
        load_encoder,
        normalisation,
        resolve_checkpoint,
    )  # fmt: skip

    head = PROBE_HEAD if cfg.linear_probe else LINEAR_HEAD
    model = build_model(
        cfg.arch, num_classes=len(labels), pooling=cfg.pooling, image_size=cfg.image_size,
        drop_path=cfg.drop_path, head=head,
    )  # fmt: skip
    if saved is not None:  # the checkpoint in state/ replaces every weight
        weights = saved.get("weights")
        info = ModelInfo.read(folder.path)
        mean, std = tuple(info.mean), tuple(info.std)
    else:
        ckpt = resolve_checkpoint(spec, weights=cfg.weights, init=cfg.init)
        if ckpt is None:
            weights = {"init": "random", "source": None, "sha256": None}
            say(
                f"[bold]{spec.title}[/]: random init ({'scratch baseline' if spec.scratch else '--init random'})"
            )
        else:
            report = load_encoder(model, ckpt, arch=cfg.arch)
            weights = report.to_json()
            if not report.source.startswith("hf-hub:"):  # a file outside the run: recorded by its absolute path
                weights["source"] = str(Path(report.source).absolute())
            say(
                f"[bold]{spec.title}[/]: loaded {report.loaded} tensors from {report.source} ({report.format}, "
                f"sha256 {report.sha256[:12]}); new: {', '.join(report.initialised) or 'none'}"
                + (f"; resized {', '.join(report.resized)}" if report.resized else "")
            )
        mean, std = normalisation(spec, ckpt)
    before = None
    if cfg.linear_probe:
        prefix = classifier_name(model) + "."
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(prefix))
        before = backbone_digest(model) if saved is None else (saved.get("linear_probe") or {}).get(
            "backbone_sha256_before")  # fmt: skip
    info = ModelInfo(
        arch=cfg.arch, family=spec.family, pooling=cfg.pooling, image_size=cfg.image_size, labels=labels,
        mean=list(mean), std=list(std), head=head, model=spec.name,
    )  # fmt: skip
    return {"model": model, "weights": weights, "mean": mean, "std": std, "before": before, "info": info}


def _datasets(cfg: FinetuneConfig, train_df, val_df, labels, manifest_dir, mean):
    from fairscan.data.dataset import ImageDataset, build_transform, load_size, open_cache

    cache = open_cache(manifest_dir, cfg.cache, enabled=cfg.use_cache)
    randaug = None if cfg.randaug in (None, "none") else cfg.randaug
    common = dict(
        labels=labels,
        manifest_dir=manifest_dir,
        decode_size=load_size(cfg.image_size),
        cache=cache,
        seed=cfg.seed,
    )
    augment = build_transform(cfg.image_size, train=True, mean=mean, randaug=randaug, scale=cfg.crop_scale, hflip=cfg.hflip)
    train_set = ImageDataset(train_df, transform=augment, **common)
    val_set = ImageDataset(val_df, transform=build_transform(cfg.image_size, train=False, mean=mean), **common)
    return train_set, val_set


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


def _model_for(values: dict[str, Any]) -> type:
    return FinetuneConfig


def _stage():
    from fairscan.train.stage import Stage

    return Stage(name="finetune", model_for=_model_for, check=_check, run=_run)


STAGE = _stage()
