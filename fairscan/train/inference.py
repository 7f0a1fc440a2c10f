"""One model over one split of a manifest, every image exactly once: what ``predict`` and ``embed`` share.

:func:`over_split` builds the Accelerator, the evaluation dataset and loader (resize to ``image_size /
crop_pct``, centre crop, the model's normalisation), prepares the module, runs it with a progress bar on the main
process, gathers the outputs (``gather_for_metrics`` drops the samples Accelerate repeats to even out the last
batch), checks that they cover the split once, puts them in manifest order and hands them to ``write`` on the
main process. The caller decides what the module computes (a model's logits, or the input of its head) and what
is written; both commands therefore load, batch and gather images by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fairscan.errors import RunError

GPU_BATCH, CPU_BATCH = 256, 64  # inference holds no activations for backward: a GPU takes large batches

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch.nn as nn

    from fairscan.models import ModelInfo
    from fairscan.settings import ExecutionOptions


def over_split(
    module: nn.Module,
    info: ModelInfo,
    frame: pd.DataFrame,
    cfg: ExecutionOptions,
    *,
    manifest: str,
    labels: list[str],
    batch_size: int | None,
    doing: str,
    write: Callable[[np.ndarray, dict[str, Any]], Any],
    console=None,
) -> Any:
    """``write(outputs in manifest order, {"processes": .., "precision": ..})`` on the main process (its value
    returned there; None on the others). ``batch_size`` None: 256 per process on a GPU, 64 on the CPU. ``doing``
    starts the console line, e.g. ``"predicting 20 test images with runs/mae"``."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from fairscan.data.dataset import ImageDataset, build_transform, load_size, open_cache
    from fairscan.data.device_input import DeviceInput
    from fairscan.data.manifest import manifest_dir_of
    from fairscan.train.loop import make_accelerator
    from fairscan.train.supervised import gather_outputs

    acc = make_accelerator(cpu=cfg.cpu, precision=cfg.precision, seed=0)
    channels_last = info.family == "resnet" and acc.device.type == "cuda"
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    manifest_dir = manifest_dir_of(manifest)
    dataset = ImageDataset(
        frame, labels=labels, manifest_dir=manifest_dir, decode_size=load_size(info.image_size, info.crop_pct),
        cache=open_cache(manifest_dir, cfg.cache, enabled=cfg.use_cache),
        transform=build_transform(info.image_size, train=False, mean=tuple(info.mean),
                                  interpolation=info.interpolation, crop_pct=info.crop_pct),
    )  # fmt: skip
    batch_size = batch_size or (GPU_BATCH if acc.device.type == "cuda" else CPU_BATCH)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.resolved_workers(),
        pin_memory=acc.device.type == "cuda",
    )  # fmt: skip
    module, loader = acc.prepare(module, loader)
    module.eval()
    precision = "fp32" if acc.mixed_precision == "no" else acc.mixed_precision
    shown = console if acc.is_main_process else None
    if shown is not None:
        shown.print(
            f"{doing} ({info.arch}, {acc.num_processes} process(es), {acc.device.type}, {precision}, batch "
            f"{batch_size})",
            highlight=False,
            soft_wrap=True,
        )
    with _bar(shown, len(loader)) as advance:
        to_input = DeviceInput(info.mean, info.std, channels_last=channels_last)
        idx, outputs, _ = gather_outputs(module, loader, acc, to_input, on_batch=advance)  # bf16 when acc is mixed
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return None
    if len(idx) != len(dataset) or not np.array_equal(np.sort(idx), np.arange(len(dataset))):
        raise RunError(f"the outputs cover {len(np.unique(idx))} of {len(dataset)} images ({len(idx)} rows)")
    ordered = np.empty_like(outputs)
    ordered[idx] = outputs
    result = write(ordered, {"processes": acc.num_processes, "precision": precision})
    acc.wait_for_everyone()
    return result


class _bar:
    """A transient progress bar over the main process's batches on ``console`` (stderr); silent without one."""

    def __init__(self, console, total: int):
        self.console, self.total, self.progress = console, total, None

    def __enter__(self) -> Callable[[], None]:
        if self.console is None:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=self.console, transient=True,
        )  # fmt: skip
        self.progress.start()
        task = self.progress.add_task("batches", total=self.total)
        return lambda: self.progress.update(task, advance=1)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
