"""``fairscan pretrain`` as a library: MAE or MoCo v3 pre-training of a ViT encoder on chest X-ray pools.

:class:`PretrainConfig` holds the settings every method shares; each method adds its own
(``fairscan.train.objectives``: ``mae.Settings``, ``mocov3.Settings``), and :func:`pretrain_config` builds the
right one from ``method``. ``None`` means "the method's default", filled in one place (:meth:`PretrainConfig.resolve`).
Recipes (METHOD section 3, the official configurations):

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

import json
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field

from fairscan.errors import InputError, RunError
from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
from fairscan.runs import SNAPSHOTS
from fairscan.settings import Cli, CropScale, TrainingOptions, Where, deprecated, origin
from fairscan.train.pretrain_data import CROP_SCALE, ROTATION, build_pool_dataset, load_pool

BLR = 1.5e-4
TARGET_BATCH = 4096
MAX_MICRO_BATCH = 64  # images per process per micro-batch when --accum is not given (MAE)
WARMUP_EPOCHS = 40.0
SELECT_PERCENT = 5  # the final 5% of epochs, rounded up (integer arithmetic: 5% of 20 is exactly 1)
SNAPSHOT_BEYOND = "epoch snapshot {epoch} is outside the schedule of {epochs} epoch(s)"
SNAPSHOT_NOTE = (
    "snapshots of one run stand in cheaply for separate runs of that many epochs (Table 4); the cosine "
    "schedule differs, so they are an approximation"
)
__all__ = ["IMAGENET_MEAN", "PretrainConfig", "load_pool", "build_pool_dataset", "pretrain", "pretrain_config"]


class PretrainConfig(TrainingOptions):
    """The settings every pre-training method shares; a method's ``Settings`` adds its own (unknown keys are
    errors). ``weight_decay`` and ``accum`` default per method (``WEIGHT_DECAY``, :meth:`default_accum`)."""

    input_fields: ClassVar[tuple[str, ...]] = ("manifests", "evaluation")
    path_fields: ClassVar[tuple[str, ...]] = ("manifests", "evaluation", "cache")
    WEIGHT_DECAY: ClassVar[float] = 0.05

    method: str = Field(description="The pre-training method: mae or mocov3.")
    manifests: Annotated[list[str], Cli(("--manifest",), repeat=True)] = Field(
        min_length=1, description="Manifest(s) or pool(s) to pre-train on (manifest.parquet or its folder)."
    )
    out: Annotated[str, Cli(("--out", "-o"))] = Field(description="The run folder to write.")
    # manifests to be evaluated on: their held-out patients must not be pre-trained on (leakage check)
    evaluation: Annotated[list[str], Cli(("--eval-manifest",), repeat=True)] = Field(
        default_factory=list,
        description="A manifest you will evaluate on: warn if its held-out patients are pre-trained on (repeatable).",
    )
    splits: list[str] | None = Field(None, description="Manifest splits to use, comma-separated (default: all).")
    epochs: int = Field(800, ge=1, description="Epochs.")
    arch: str = Field("vit_base_patch16_224", description="timm ViT.")
    image_size: int = Field(224, ge=16, description="Input pixels.")
    batch_size: int | None = Field(None, ge=1, description="Effective batch per optimiser step (4096).")
    accum: int | None = Field(None, ge=1, description="MAE: gradient accumulation steps (default: micro-batches of <= 64).")
    blr: float = Field(BLR, gt=0, description="Base lr, scaled by batch / 256.")
    lr: float | None = Field(None, gt=0, description="Absolute peak lr (overrides --blr).")
    min_lr: float = Field(0.0, ge=0, description="The cosine schedule's end.")
    warmup_epochs: float | None = Field(None, ge=0, description="Linear warm-up epochs (40, at most half the run).")
    weight_decay: float | None = Field(None, ge=0, description="AdamW weight decay (MAE 0.05, MoCo v3 0.1).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    crop_scale: CropScale = Field(CROP_SCALE, description="Smallest share of the image a random crop keeps: LO or LO,HI.")
    rotation: float = Field(ROTATION, ge=0, description="Random rotation within +- this many degrees.")
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="Normalisation mean (ImageNet's).")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="Normalisation std (ImageNet's).")
    snapshots: list[int] = Field(default_factory=list, description="Also save the encoder at these epochs, e.g. 200,400.")
    seed: int = Field(0, description="Seed for init, order, masks and augmentation.")

    def model_post_init(self, context: Any) -> None:
        if type(self) is PretrainConfig:
            raise TypeError("PretrainConfig is the base of each method's settings: use pretrain_config(method=...)")

    @classmethod
    def upgrade(cls, values: dict[str, Any], *, where: Where = None) -> dict[str, Any]:
        """Renamed keys, and another method's keys dropped (0.1 accepted both methods' keys in one preset)."""
        from fairscan.train.objectives import METHODS, method

        values = super().upgrade(values, where=where)
        if cls is PretrainConfig:
            return values
        for name in METHODS:
            other = method(name).Settings
            if other is cls:
                continue
            for key in [k for k in values if k in other.model_fields and k not in cls.model_fields]:
                values.pop(key)
                if where is not None:
                    deprecated(f"{origin(where, key)}.{key} applies to method {name}, not {values.get('method')}; ignored")
        return values

    def default_accum(self, batch: int) -> int:
        """Gradient accumulation steps when ``accum`` is not set (a method may refuse any but one)."""
        return 1 if self.accum is None else self.accum

    def resolve(self) -> PretrainConfig:
        """A copy with every ``None`` filled from the method's recipe, after checking what can be checked."""
        values = self.model_dump()
        bad = [e for e in self.snapshots if not 1 <= e <= self.epochs]
        if bad:
            raise InputError(
                SNAPSHOT_BEYOND.format(epoch=bad[0], epochs=self.epochs),
                hint=f"choose epochs between 1 and {self.epochs} (snapshots are taken during this run)",
            )
        values["snapshots"] = sorted(set(self.snapshots))
        batch = self.batch_size or TARGET_BATCH
        accum = self.default_accum(batch)
        if batch % (self.procs * accum):
            raise InputError(
                f"the effective batch {batch} does not split over {self.procs} process(es) x {accum} accumulation "
                "step(s)",
                hint="choose --batch-size a multiple of processes x --accum",
            )
        values.update(batch_size=batch, accum=accum, workers=self.resolved_workers())
        if values["weight_decay"] is None:
            values["weight_decay"] = self.WEIGHT_DECAY
        if values["warmup_epochs"] is None:
            values["warmup_epochs"] = min(WARMUP_EPOCHS, self.epochs / 2)
        elif values["warmup_epochs"] > self.epochs:
            raise InputError(
                f"--warmup-epochs {self.warmup_epochs} is longer than the run ({self.epochs} epochs)",
                hint="warm-up must end within the schedule",
            )
        if values["lr"] is None:
            values["lr"] = self.blr * batch / 256
        if self.cache and len(self.manifests) > 1:
            raise InputError("--cache names one manifest's image cache", hint="give one manifest, or drop --cache")
        return type(self)(**values)

    @property
    def per_process_batch(self) -> int:
        return (self.batch_size or TARGET_BATCH) // (self.procs * (self.accum or 1))

    @property
    def select_from_epoch(self) -> int:
        """The first epoch (0-based) of the final 5% in which the lowest loss is selected."""
        return self.epochs - max(1, -(-self.epochs * SELECT_PERCENT // 100))


def settings_model(values: dict[str, Any]) -> type[PretrainConfig]:
    """The settings model of ``values["method"]`` (an InputError for a missing or unknown method)."""
    from fairscan.train.objectives import method

    if not values.get("method"):
        raise InputError("--method is required", hint="use mae or mocov3 (see `fairscan pretrain --help`)")
    return method(values["method"]).Settings


def pretrain_config(**values: Any) -> PretrainConfig:
    """The settings of a pre-training run: ``pretrain_config(method="mae", manifests=[...], out=...)``."""
    from fairscan.settings import validate

    return validate(settings_model(values), values)


def auto_accum(batch: int, procs: int, max_micro: int = MAX_MICRO_BATCH) -> int:
    """The fewest accumulation steps that keep each process's micro-batch at most ``max_micro`` images."""
    per_step = batch / procs
    accum = max(1, math.ceil(per_step / max_micro))
    while accum < batch and batch % (procs * accum):
        accum += 1
    return accum


# ------------------------------------------------------------------------------------------ the objective


def make_objective(model, cfg: PretrainConfig, *, out: Path, info_json: dict):
    """The loop objective: the method's loss, the model's own parameter groups, encoder export, snapshots."""
    from fairscan.data.device_input import DeviceInput
    from fairscan.train.loop import Objective
    from fairscan.train.objectives import method

    the_method = method(cfg.method)
    to_input = DeviceInput(cfg.mean, cfg.std)  # the workers hand over uint8 grey views

    class SelfSupervised(Objective):
        select_metric = "train_loss"
        select_mode = "min"

        def loss(self, model, batch):
            return the_method.loss(model, {**batch, "image": to_input(batch["image"])}, self.model)

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
    from fairscan.train.checkpoint import write_weights

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MODEL_JSON, info_json)
    write_weights(folder / MODEL_WEIGHTS, state)


def model_info(cfg: PretrainConfig) -> dict:
    """``model.json`` for the encoder: what ``fairscan finetune --weights RUN`` needs to know."""
    from fairscan.models import ModelInfo
    from fairscan.train.objectives import method

    m = method(cfg.method)
    info = ModelInfo(
        arch=cfg.arch, family="vit", pooling=m.POOLING, image_size=cfg.image_size, labels=[],
        mean=list(cfg.mean), std=list(cfg.std), head="none", model=m.MODEL,
        extra={"stage": "pretrain", "method": cfg.method, "encoder_only": True,
               "key_layout": "timm", "finetune_with": f"--model {m.MODEL} --weights RUN"},
    )  # fmt: skip
    return info.to_json()


# ----------------------------------------------------------------------------------------------- the run


def pretrain(cfg, **options: Any) -> dict[str, Any] | None:
    """Run (or continue) a pre-training run; returns its stage record. ``options``: ``resume``, ``break_lock``,
    ``allow_inexact_resume``, ``console``, ``debug`` (see :func:`fairscan.train.stage.run_stage`)."""
    from fairscan.train.stage import run_settings

    return run_settings(STAGE, cfg, **options)


def _check(cfg: PretrainConfig, console) -> None:
    """What the parent checks before launching workers (the first worker prints the leakage warnings)."""
    from fairscan.train.objectives import method

    method(cfg.method).build(cfg)  # a bad --arch or image size fails here, before any worker starts
    frames, _, _ = load_pool(cfg)
    _check_pool_size(cfg, sum(len(df) for _, df in frames))


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


def _run(cfg: PretrainConfig, folder, *, resume: bool, console, inexact: list[str]) -> None:
    """The run itself, in every process: the pool, the model, the record, the loop, the result."""
    from fairscan.io import write_json
    from fairscan.models import MODEL_JSON
    from fairscan.runs import StageRecord
    from fairscan.train.loop import TrainConfig, make_accelerator, train
    from fairscan.train.objectives import method
    from fairscan.train.progress import flat_settings, printer

    out, the_method = folder.path, method(cfg.method)
    frames, warnings, leakage = load_pool(cfg)
    n_images = sum(len(df) for _, df in frames)
    _check_pool_size(cfg, n_images)
    acc = make_accelerator(
        cpu=cfg.cpu, precision=cfg.precision, accum=cfg.accum, seed=cfg.seed, compile=cfg.compile,
        trackers=cfg.log_with, project_dir=out,
    )  # fmt: skip
    say = printer(console if acc.is_main_process else None)
    for w in warnings:
        say(f"[yellow]warning:[/] {w}")
    world = acc.num_processes
    if world != cfg.procs:
        raise RunError(
            f"Accelerate started {world} process(es) but the settings were resolved for {cfg.procs}",
            hint="start multi-process runs with --gpus/--procs, or under `accelerate launch` / torchrun",
        )
    train_set = build_pool_dataset(cfg, frames)
    model = the_method.build(cfg)
    per_proc = cfg.per_process_batch
    spe = steps_per_epoch(n_images, per_process=per_proc, processes=world, accum=cfg.accum)
    model = the_method.prepare(model, total_steps=spe * cfg.epochs, accelerator=acc)
    info_json = model_info(cfg)
    effective = per_proc * world * cfg.accum
    say(_intro(cfg, the_method, n_images=n_images, effective=effective, per_proc=per_proc, world=world, spe=spe))
    if cfg.snapshots:
        say(f"snapshots at epoch(s) {', '.join(map(str, cfg.snapshots))}: {SNAPSHOT_NOTE}")
    facts = {
        "method": cfg.method, "model": the_method.MODEL, "images": n_images, "leakage": leakage,
        "batch": {"effective": effective, "per_process": per_proc, "accum": cfg.accum},
        "lr": {"base": cfg.blr, "effective_batch": effective, "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs},
        "steps_per_epoch": spe,
        "selection": {
            "rule": "lowest training loss (epoch mean over all processes) in the final 5% of epochs",
            "from_epoch": cfg.select_from_epoch + 1, "to_epoch": cfg.epochs,
        },
        "snapshots": {"epochs": cfg.snapshots, "note": SNAPSHOT_NOTE} if cfg.snapshots else None,
        **({"resume": {"exact": False, "why": inexact}} if inexact else {}),
    }  # fmt: skip
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MODEL_JSON, info_json)
    record = StageRecord.start(folder, stage="pretrain", cfg=cfg, accelerator=acc, saved=folder.read(), **facts)

    objective = make_objective(model, cfg, out=out, info_json=info_json)
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=effective, lr=cfg.lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
        weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), accum=cfg.accum, seed=cfg.seed,
        workers=cfg.resolved_workers(), save_every=cfg.save_every, log_every=cfg.log_every,
        select_after_epoch=cfg.select_from_epoch,
    )  # fmt: skip
    result = train(
        objective, accelerator=acc, train_set=train_set, val_set=None, cfg=tcfg,
        out_dir=out, resume=resume, console=console, tracker_config=flat_settings(cfg.model_dump()),
    )  # fmt: skip
    _complete(record, cfg, result, out, say)
    acc.wait_for_everyone()


def _intro(cfg: PretrainConfig, the_method, *, n_images, effective, per_proc, world, spe) -> str:
    scaled = cfg.blr * effective / 256
    lr_text = (
        f"lr {cfg.lr:.3g} = base lr {cfg.blr:.3g} x {effective} / 256"
        if math.isclose(cfg.lr, scaled, rel_tol=1e-9)
        else f"lr {cfg.lr:.3g} (set with --lr; base lr x batch / 256 would be {scaled:.3g})"
    )
    return (
        f"[bold]{the_method.TITLE}[/] pre-training {cfg.arch} at {cfg.image_size} px on {n_images} images: "
        f"effective batch {effective} = {world} process(es) x {per_proc} x {cfg.accum} accumulation; {lr_text}; "
        f"{cfg.epochs} epochs ({cfg.warmup_epochs:g} warm-up), {spe} steps each; output: lowest loss in epochs "
        f"{cfg.select_from_epoch + 1}-{cfg.epochs}"
    )


def _complete(record, cfg: PretrainConfig, result, out: Path, say) -> None:
    from fairscan.models import MODEL_WEIGHTS
    from fairscan.train.objectives import method
    from fairscan.train.progress import fmt_metric

    losses = epoch_losses(out)
    snaps = {f"snapshot_epoch-{e:04d}": out / SNAPSHOTS / f"epoch-{e:04d}" / MODEL_WEIGHTS for e in cfg.snapshots}
    data = record.complete(
        result={
            "selected_epoch": None if result.best_epoch is None else result.best_epoch + 1,
            "selected_loss": result.best_metric, "final_loss": losses[-1] if losses else None,
            "epoch_losses": losses, "epochs": result.epochs, "steps": result.steps,
            "train_images_per_second": round(result.images_per_second, 2) if result.train_seconds else None,
            "resumed_from_step": result.resumed_from_step,
        },
        outputs={"model": out / MODEL_WEIGHTS, **snaps},
    )  # fmt: skip
    say(
        f"[green]done[/]: selected epoch {data['result']['selected_epoch']} (loss "
        f"{fmt_metric(result.best_metric)}); {out / MODEL_WEIGHTS}; fine-tune it with `fairscan finetune --model "
        f"{method(cfg.method).MODEL} --weights {out} ...`"
    )


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


def _stage():
    from fairscan.train.stage import Stage

    return Stage(name="pretrain", model_for=settings_model, check=_check, run=_run)


STAGE = _stage()
