"""The one training loop, on Hugging Face Accelerate, shared by ``finetune`` and ``pretrain``.

API
---
::

    from fairscan.train.loop import Objective, TrainConfig, make_accelerator, train

    accelerator = make_accelerator(cpu=False, precision="auto", accum=1, seed=0)   # also seeds everything
    model = ...                                  # build after make_accelerator, so initialisation is seeded
    result = train(MyObjective(model), accelerator=accelerator, train_set=ds, val_set=val_ds,
                   cfg=TrainConfig(epochs=..., batch_size=..., lr=...), out_dir=run, resume=False)

An :class:`Objective` says what is trained and how it is scored; the loop does everything else:

- ``objective.model``: the ``nn.Module`` to optimise (for MAE the whole MAE module, for fine-tuning the timm
  classifier). ``loss(model, batch) -> Tensor`` (or ``(Tensor, {name: float})``) gets the prepared model
  (wrapped for DDP, autocast applied) and a batch already on the device.
- ``param_groups(cfg)``: the optimiser's groups, each may carry ``lr_scale`` (default: layer-wise decay and no
  weight decay on 1-D parameters, :func:`fairscan.train.optim.param_groups`).
- ``at_step(step, total_steps)``: before each micro-batch's loss (a schedule inside the objective, such as the
  adversarial head's gradient-reversal strength, follows the optimiser step, so a resumed run follows it too).
- ``train_mode(unwrapped)``: called after ``model.train()`` each epoch (linear probing puts the frozen
  backbone back in eval mode).
- ``evaluate(model, loader, accelerator) -> {name: float}``: after every ``eval_every`` epochs on the
  validation set; use ``accelerator.gather_for_metrics`` so every sample counts exactly once.
- ``on_epoch_end(unwrapped, epoch, accelerator) -> {name: value}``: after every epoch (and its evaluation), on
  every process; ``epoch`` is 0-based. For per-epoch side effects such as snapshots; extra metrics are merged.
- ``select_metric`` / ``select_mode``: the epoch metric that picks the exported model (``val_mean_auc``, max,
  for fine-tuning; e.g. ``train_loss``, min, from ``select_after_epoch`` on, for pre-training). The loop adds
  ``train_loss`` (the epoch's mean loss over all processes) to each epoch's metrics. ``None``: the last epoch.
- ``export(unwrapped) -> state dict``: what ``model.safetensors`` holds (MAE: the encoder alone).
- ``batch_ids(batch)``: image ids for the non-finite-loss error (default: the dataset's ``image_ids``).

What the loop writes in ``out_dir``: ``model.safetensors`` (atomically, whenever the selection metric improves),
``metrics.jsonl`` (one JSON object per ``log_every`` steps, ``{"kind": "train", ...}``, and per evaluation,
``{"kind": "epoch", ...}``), and ``state/`` (``accelerator.save_state`` plus ``progress.json``) every
``save_every`` optimiser steps and at every epoch end. A checkpoint is written to ``state.next/`` and swapped in
by renames, so a kill at any moment leaves the previous one intact. ``resume=True`` loads ``state/``, truncates
``metrics.jsonl`` to the checkpoint's step and continues mid-epoch with ``accelerator.skip_first_batches``; with
the seeded per-epoch sampler and per-sample augmentation seeds (``fairscan.data.dataset``) and Accelerate's
saved RNG states, the resumed run ends where an uninterrupted one does.

Schedule: the learning rate is set before every optimiser step, ``lr_at(step) * group["lr_scale"]`` (linear
warm-up over ``warmup_epochs``, cosine to ``min_lr``). A non-finite loss on any process stops the run with a
:class:`~fairscan.errors.RunError` naming the step and the batch's image ids; nothing is saved after it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fairscan.errors import InputError, RunError
from fairscan.runs import METRICS, MODEL_WEIGHTS, RunFolder
from fairscan.train import timing
from fairscan.train.checkpoint import MetricsLog, Progress, load_state, save_model, save_state
from fairscan.train.optim import build_optimizer, lr_at, param_groups, set_lr
from fairscan.train.progress import Bar, epoch_line

NON_FINITE = (
    "non-finite loss ({value}) at step {step} (epoch {epoch}, process {rank}); batch image ids: {ids}"
)


@dataclass
class TrainConfig:
    """Everything the loop needs; the caller resolves recipes and presets into it."""

    epochs: int
    batch_size: int  # effective batch: per-process batch x processes x accumulation steps
    lr: float  # peak learning rate (already scaled by batch / 256)
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    layer_decay: float | None = None
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    accum: int = 1
    clip_grad: float | None = None
    seed: int = 0
    workers: int = 0
    eval_every: int = 1
    eval_batch_size: int | None = None
    save_every: int = 500  # optimiser steps between mid-epoch checkpoints; 0: at epoch ends only
    log_every: int = 10
    select_after_epoch: int = 0


@dataclass
class TrainResult:
    steps: int
    epochs: int
    best_metric: float | None
    best_epoch: int | None
    last_metrics: dict[str, Any]
    train_seconds: float
    images_per_second: float
    resumed_from_step: int | None = None
    history: list[dict] = field(default_factory=list)


class Objective:
    """Base objective; subclass and override :meth:`loss` (and whatever else differs)."""

    select_metric: str | None = None
    select_mode: str = "max"

    def __init__(self, model: nn.Module):
        self.model = model

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        raise TypeError(f"{type(self).__name__} must define loss(model, batch)")

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return param_groups(self.model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)

    def at_step(self, step: int, total_steps: int) -> None:
        """Called before every micro-batch's loss with the optimiser steps done and the run's total."""

    def train_mode(self, unwrapped: nn.Module) -> None:
        """Called after ``model.train()`` at the start of every epoch."""

    def evaluate(self, model: nn.Module, loader, accelerator) -> dict[str, Any]:
        return {}

    def on_epoch_end(self, unwrapped: nn.Module, epoch: int, accelerator) -> dict[str, Any]:
        return {}

    def export(self, unwrapped: nn.Module) -> dict[str, torch.Tensor]:
        return unwrapped.state_dict()

    def batch_ids(self, batch: Any, dataset: Any) -> list[str]:
        ids = getattr(dataset, "image_ids", None)
        if ids is None or not isinstance(batch, dict) or "index" not in batch:
            return []
        return [ids[int(i)] for i in batch["index"].tolist()]


# ------------------------------------------------------------------------------------------------ set-up


def make_accelerator(
    *,
    cpu: bool = False,
    precision: str = "auto",
    accum: int = 1,
    seed: int = 0,
    compile: bool = False,
    trackers: list[str] | None = None,
    project_dir: str | os.PathLike | None = None,
):
    """An Accelerator for the loop, and every RNG seeded (per process, so DropPath masks differ).

    ``precision``: ``auto`` is bf16 autocast on a GPU and fp32 elsewhere; ``bf16`` or ``fp32`` force it.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    if precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"unknown precision {precision!r}", hint="use auto, bf16 or fp32")
    check_trackers(trackers or [])
    on_gpu = not cpu and torch.cuda.is_available()
    mixed = "bf16" if (precision == "bf16" or (precision == "auto" and on_gpu)) else "no"
    _release_precision(mixed)
    kwargs: dict[str, Any] = {}
    if compile:
        from accelerate.utils import TorchDynamoPlugin

        kwargs["dynamo_plugin"] = TorchDynamoPlugin(backend="inductor")
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=mixed,
        gradient_accumulation_steps=accum,
        log_with=trackers or None,
        project_dir=str(project_dir) if project_dir else None,
        step_scheduler_with_optimizer=False,
        # batches arrive pinned (build_loaders) and uint8: copy them while the previous step still runs
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
        **kwargs,
    )
    set_seed(seed, device_specific=True)
    return acc


def _release_precision(mixed: str) -> None:
    """Let one process run stages at different precisions one after another (a study, a benchmark, a test):
    Accelerate keeps the first Accelerator's mixed precision for the whole process and refuses another."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != mixed:
        AcceleratorState._reset_state()  # the process group (PartialState) stays


def check_trackers(names: list[str]) -> None:
    """Refuse a tracker Accelerate does not know, or one whose package is missing: Accelerate itself would
    drop a missing one with a log line, and the user who asked for ``--log-with wandb`` would get no logs."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    from accelerate.utils import imports

    for name in names:
        if name == "all":  # Accelerate's "every tracker that is installed"
            continue
        if name not in LOGGER_TYPE_TO_CLASS:
            raise InputError(
                f"--log-with {name}: not a tracker Accelerate knows",
                hint=f"use one or more of {', '.join(sorted(LOGGER_TYPE_TO_CLASS))} (or all)",
            )
        if not getattr(imports, f"is_{name}_available")():
            raise InputError(
                f"--log-with {name}: the {name} package is not installed",
                hint=f"install it in this environment (pip install {name.replace('_', '-')}), or drop --log-with",
            )


def build_loaders(train_set, val_set, *, cfg: TrainConfig, per_process_batch: int, collate_fn=None, sampler=None):
    """The training loader (seeded per-epoch sampler, whole batches) and the evaluation loader. ``sampler``
    replaces the shuffled epochs (it must yield the same ``(epoch, row)`` keys from its seed on every process)."""
    from torch.utils.data import DataLoader

    from fairscan.data.dataset import EpochSampler

    common: dict[str, Any] = dict(
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.workers > 0,
        collate_fn=collate_fn,
    )
    sampler = sampler or EpochSampler(len(train_set), seed=cfg.seed)
    # Own generators: creating an iterator must not draw from the global RNG that Accelerate checkpoints.
    train_loader = DataLoader(
        train_set, batch_size=per_process_batch, sampler=sampler, drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed), **common,
    )  # fmt: skip
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(
            val_set, batch_size=cfg.eval_batch_size or per_process_batch * 2, shuffle=False, drop_last=False,
            generator=torch.Generator().manual_seed(cfg.seed), **common,
        )  # fmt: skip
    return train_loader, val_loader, sampler


def split_batch(batch_size: int, *, processes: int, accum: int) -> int:
    """The per-process micro-batch of an effective ``batch_size``; it must divide evenly."""
    if batch_size % (processes * accum):
        raise InputError(
            f"the batch size {batch_size} does not split over {processes} process(es) x {accum} accumulation "
            "step(s)",
            hint="choose --batch-size a multiple of processes x --accum",
        )
    return batch_size // (processes * accum)


# ------------------------------------------------------------------------------------------- bookkeeping


def _improved(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return best is None
    if best is None:
        return True
    return value > best if mode == "max" else value < best


# ---------------------------------------------------------------------------------------------- the loop


def train(
    objective: Objective,
    *,
    accelerator,
    train_set,
    val_set=None,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    collate_fn: Callable | None = None,
    console=None,
    tracker_config: dict | None = None,
    sampler=None,
) -> TrainResult:
    """Train ``objective.model``; see the module docstring for what is written and how resume works.
    ``sampler``: the training sampler, in place of the shuffled epochs (see :func:`build_loaders`)."""
    loop = _Loop(objective, accelerator, train_set, val_set, cfg, Path(out_dir), collate_fn, console, sampler)
    loop.start(resume)
    if accelerator.log_with:
        accelerator.init_trackers(loop.out.name or "fairscan", config=tracker_config or {})
    try:
        while loop.progress.epoch < cfg.epochs:
            loop.train_epoch()
            loop.end_epoch()
        if not (loop.out / MODEL_WEIGHTS).exists():  # the selection metric never came: keep the last
            save_model(accelerator, objective, loop.model, loop.out)
    finally:
        loop.bar.stop()
        if accelerator.log_with:
            accelerator.end_training()
    return loop.result()


class _Loop:
    """One run of the loop: what :func:`train` sets up once, then each epoch's training and its end."""

    def __init__(
        self, objective, accelerator, train_set, val_set, cfg: TrainConfig, out: Path, collate_fn, console,
        sampler=None,
    ):
        self.objective, self.acc, self.train_set, self.cfg, self.out = (
            objective,
            accelerator,
            train_set,
            cfg,
            out,
        )
        self.console = console if accelerator.is_main_process else None
        out.mkdir(parents=True, exist_ok=True)
        world = accelerator.num_processes
        self.per_proc = split_batch(cfg.batch_size, processes=world, accum=cfg.accum)
        if len(train_set) < cfg.batch_size // cfg.accum:
            raise InputError(
                f"the training split has {len(train_set)} images, fewer than one batch of {cfg.batch_size // cfg.accum}",
                hint="lower --batch-size (or raise --accum)",
            )
        loaders = build_loaders(
            train_set, val_set, cfg=cfg, per_process_batch=self.per_proc, collate_fn=collate_fn, sampler=sampler
        )
        train_loader, val_loader, self.sampler = loaders
        optimizer = build_optimizer(cfg.optimizer, objective.param_groups(cfg), lr=cfg.lr, betas=cfg.betas)
        if val_loader is not None:
            self.model, self.optimizer, self.train_loader, self.val_loader = accelerator.prepare(
                objective.model, optimizer, train_loader, val_loader
            )
        else:
            self.model, self.optimizer, self.train_loader = accelerator.prepare(
                objective.model, optimizer, train_loader
            )
            self.val_loader = None
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.progress = Progress(world_size=world, steps_per_epoch=self.steps_per_epoch)
        self.metrics = MetricsLog(out / METRICS, accelerator.is_main_process)
        self.resumed_from: int | None = None
        self.history: list[dict] = []
        self.last: dict[str, Any] = {}
        self.train_seconds, self.images = 0.0, 0
        terminal = self.console is not None and self.console.is_terminal
        self.bar = Bar(self.console if terminal else None, self.steps_per_epoch)

    def start(self, resume: bool) -> None:
        """Continue from the checkpoint in ``state/`` (metrics.jsonl cut back to it), or start afresh."""
        if resume:
            state = RunFolder(self.out).checkpoint()
            if state is None:
                raise InputError(
                    f"{self.out}: no checkpoint to resume from", hint="start the run without --resume"
                )
            saved = load_state(self.acc, state)
            here = (self.acc.num_processes, self.steps_per_epoch)
            if (saved.world_size, saved.steps_per_epoch) != here:
                raise InputError(
                    f"{self.out}: the checkpoint was made with {saved.world_size} process(es) and "
                    f"{saved.steps_per_epoch} steps per epoch; this run has {here[0]} and {here[1]}",
                    hint="resume with the same number of processes and batch size",
                )
            self.progress, self.resumed_from = saved, saved.step
            self.metrics.truncate(saved.step)
        elif self.acc.is_main_process and (self.out / METRICS).exists():
            (self.out / METRICS).unlink()
        self.acc.wait_for_everyone()

    def train_epoch(self) -> None:
        """The optimiser steps of one epoch (from where a resumed epoch stopped)."""
        acc, cfg, progress, model, optimizer = self.acc, self.cfg, self.progress, self.model, self.optimizer
        epoch, world = progress.epoch, acc.num_processes
        self.train_loader.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        loader = (
            acc.skip_first_batches(self.train_loader, progress.batch) if progress.batch else self.train_loader
        )
        model.train()
        self.objective.train_mode(acc.unwrap_model(model, keep_torch_compile=False))
        self.bar.start(epoch, done=progress.batch // cfg.accum)
        n_batches = len(self.train_loader)
        t0 = time.perf_counter()
        for batch in timing.timed(loader):  # as it was, unless a benchmark is recording steps
            if progress.batch % cfg.accum == 0:
                lr = lr_at(
                    progress.step,
                    total=self.total_steps,
                    warmup=self.warmup_steps,
                    lr=cfg.lr,
                    min_lr=cfg.min_lr,
                )
                set_lr(optimizer, lr)
            with acc.accumulate(model):
                self.objective.at_step(progress.step, self.total_steps)
                out = self.objective.loss(model, batch)
                loss, extra = out if isinstance(out, tuple) else (out, {})
                losses = acc.gather(loss.detach().float().reshape(1))
                if not torch.isfinite(losses).all():
                    _raise_non_finite(self.objective, batch, self.train_set, losses, progress, acc)
                acc.backward(loss)
                if cfg.clip_grad and acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            value = float(losses.mean())
            progress.batch += 1
            progress.log_loss += value
            progress.log_n += 1
            progress.epoch_loss += value
            progress.epoch_n += 1
            self.images += self.per_proc * world
            if not acc.sync_gradients:
                continue
            progress.step += 1
            timing.step_done()
            self.bar.advance(value)
            if progress.step % cfg.log_every == 0:
                self._log_step(epoch, extra)
            if cfg.save_every and progress.step % cfg.save_every == 0 and progress.batch < n_batches:
                self.train_seconds += time.perf_counter() - t0
                save_state(acc, self.out, progress)
                t0 = time.perf_counter()
        self.train_seconds += time.perf_counter() - t0
        self.bar.stop()

    def _log_step(self, epoch: int, extra: dict) -> None:
        progress, group = self.progress, self.optimizer.param_groups[0]
        rec = {
            "kind": "train", "step": progress.step, "epoch": epoch, "lr": group["lr"] / group.get("lr_scale", 1.0),
            "loss": progress.log_loss / max(1, progress.log_n), **{k: float(v) for k, v in extra.items()},
        }  # fmt: skip
        progress.log_loss, progress.log_n = 0.0, 0
        self.metrics.write(rec)
        if self.acc.log_with:
            self.acc.log({"train/loss": rec["loss"], "train/lr": rec["lr"]}, step=progress.step)

    def end_epoch(self) -> None:
        """Evaluate, keep the model if it is the best so far, log, and checkpoint."""
        acc, cfg, progress, objective = self.acc, self.cfg, self.progress, self.objective
        epoch = progress.epoch
        metrics: dict[str, Any] = {"train_loss": progress.epoch_loss / max(1, progress.epoch_n)}
        if self.val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            self.model.eval()
            with torch.no_grad():
                metrics.update(objective.evaluate(self.model, self.val_loader, acc))
        unwrapped = acc.unwrap_model(self.model, keep_torch_compile=False)
        metrics.update(objective.on_epoch_end(unwrapped, epoch, acc) or {})
        progress.epoch, progress.batch = epoch + 1, 0
        progress.epoch_loss, progress.epoch_n = 0.0, 0
        select = objective.select_metric
        value = metrics.get(select) if select else None
        eligible = select in metrics and epoch >= cfg.select_after_epoch
        if select is None or (eligible and _improved(value, progress.best, objective.select_mode)):
            progress.best, progress.best_epoch = (value, epoch) if select else (None, epoch)
            save_model(acc, objective, self.model, self.out)
        rec = {"kind": "epoch", "step": progress.step, "epoch": epoch, **metrics,
               "best": progress.best, "best_epoch": progress.best_epoch}  # fmt: skip
        self.metrics.write(rec)
        self.history.append(rec)
        self.last = metrics
        if acc.log_with:
            acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=progress.step)
        if self.console is not None:
            self.console.print(epoch_line(rec, cfg.epochs, select), highlight=False, soft_wrap=True)
        save_state(acc, self.out, progress)

    def result(self) -> TrainResult:
        p = self.progress
        return TrainResult(
            steps=p.step, epochs=p.epoch, best_metric=p.best, best_epoch=p.best_epoch, last_metrics=self.last,
            train_seconds=self.train_seconds,
            images_per_second=self.images / self.train_seconds if self.train_seconds > 0 else 0.0,
            resumed_from_step=self.resumed_from, history=self.history,
        )  # fmt: skip


def _raise_non_finite(objective, batch, dataset, losses, progress: Progress, accelerator) -> None:
    rank = accelerator.process_index
    value = float(losses[rank])
    if math.isfinite(value):
        bad = [i for i, v in enumerate(losses.tolist()) if not math.isfinite(v)]
        raise RunError(
            f"stopping: process {bad[0]} had a non-finite loss at step {progress.step + 1}",
            hint="its own message names the batch",
        )
    ids = objective.batch_ids(batch, dataset)
    shown = ", ".join(ids[:16]) + (f" (+{len(ids) - 16} more)" if len(ids) > 16 else "")
    raise RunError(
        NON_FINITE.format(
            value=value, step=progress.step + 1, epoch=progress.epoch, rank=rank, ids=shown or "?"
        ),
        hint="lower the learning rate (--lr) or check these images; the last checkpoint in state/ is intact",
    )
