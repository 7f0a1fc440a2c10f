"""The loop's checkpoints and logs: checkpoints written by renames (a kill never leaves a half checkpoint), checked before a resume,
and the exported weights (``model.safetensors``, written atomically).

``state/`` holds ``accelerator.save_state`` (the model, ``optimizer.bin``, one ``random_states_<rank>.pkl`` per
process) and ``progress.json`` (where the loop stands), written last. A new checkpoint goes to ``state.next/`` and
is swapped in by two renames; :meth:`fairscan.runs.RunFolder.tidy` finishes a swap that a kill interrupted.

Before a resume, :func:`check_checkpoint` reads every file the resume needs: a damaged model or optimizer state
is an error naming the file; a damaged random-number state would make the resumed run differ from an
uninterrupted one, so it is refused unless the user allows an inexact resume.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fairscan.errors import InputError
from fairscan.io import atomic_path, write_json
from fairscan.runs import MODEL_WEIGHTS, PROGRESS, STATE, STATE_NEXT, STATE_PREV

RNG_FILE = "random_states_{rank}.pkl"
DAMAGED = "{file}: the checkpoint is damaged ({why})"
HINT_DAMAGED = "restore {state} from a copy, or delete it to start the run again from the beginning"
INEXACT = "{file}: the random-number state cannot be read ({why}); a resume without it would not end where an uninterrupted run does"
HINT_INEXACT = (
    "restore the file from a copy, or add --allow-inexact-resume to continue with fresh random draws"
)


@dataclass
class Progress:
    """Where the loop stands; saved as ``progress.json`` with every checkpoint."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # micro-batches of this epoch already consumed (per process)
    step: int = 0  # optimiser steps done
    best: float | None = None
    best_epoch: int | None = None
    log_loss: float = 0.0  # running sums since the last log line
    log_n: int = 0
    epoch_loss: float = 0.0
    epoch_n: int = 0
    world_size: int = 1
    steps_per_epoch: int = 0


def read_progress(state: Path) -> Progress:
    path = state / PROGRESS
    try:
        raw = json.loads(path.read_text())
        return Progress(**{f.name: raw[f.name] for f in fields(Progress) if f.name in raw})
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(DAMAGED.format(file=path, why=exc), hint=HINT_DAMAGED.format(state=state)) from None


def save_state(accelerator, out_dir: Path, progress: Progress) -> None:
    nxt, cur, prev = out_dir / STATE_NEXT, out_dir / STATE, out_dir / STATE_PREV
    if accelerator.is_main_process and nxt.exists():
        shutil.rmtree(nxt)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(nxt))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(nxt / PROGRESS, asdict(progress))
        if cur.exists():
            if prev.exists():
                shutil.rmtree(prev)
            os.replace(cur, prev)
        os.replace(nxt, cur)
        if prev.exists():
            shutil.rmtree(prev)
    accelerator.wait_for_everyone()


def check_checkpoint(state: Path, *, allow_inexact: bool = False) -> list[str]:
    """Read every file a resume from ``state`` needs; returns why the resume will be inexact (empty: exact).

    A damaged progress, model or optimizer file is an InputError naming it; so is a damaged random-number state,
    unless ``allow_inexact``.
    """
    from accelerate.utils import load

    progress = read_progress(state)
    hint = HINT_DAMAGED.format(state=state)
    for weights in sorted(state.glob("model*.safetensors")):
        _check_safetensors(weights, hint)
    for blob in sorted(state.glob("optimizer*.bin")):
        _check_zip(blob, hint)
    inexact = []
    for rank in range(progress.world_size):
        path = state / RNG_FILE.format(rank=rank)
        try:
            states = load(path)
            missing = [
                k for k in ("random_state", "numpy_random_seed", "torch_manual_seed") if k not in states
            ]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
        except Exception as exc:  # torch.load raises many types; any means the draws cannot be restored
            why = (
                f"{type(exc).__name__}: {str(exc)[:120]}"
                if not isinstance(exc, FileNotFoundError)
                else "missing"
            )
            if not allow_inexact:
                raise InputError(INEXACT.format(file=path, why=why), hint=HINT_INEXACT) from None
            inexact.append(f"{path.name}: {why}")
    return inexact


def _check_safetensors(path: Path, hint: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(DAMAGED.format(file=path, why=exc), hint=hint) from None


def _check_zip(path: Path, hint: str) -> None:
    """torch.save writes a zip archive with a CRC per record: reading them all finds truncation and damage."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"record {bad} fails its checksum")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(DAMAGED.format(file=path, why=exc), hint=hint) from None


def load_state(accelerator, state: Path) -> Progress:
    progress = read_progress(state)
    accelerator.load_state(str(state))
    return progress


def write_weights(path: Path, state: dict) -> None:
    """A state dict as safetensors (CPU, contiguous copies), written atomically: a reader never sees half."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


class MetricsLog:
    """``metrics.jsonl``: appended by the main process, truncated to a checkpoint's step on resume."""

    def __init__(self, path: Path, main: bool):
        self.path, self.main = path, main

    def truncate(self, step: int) -> None:
        if not self.main or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict) -> None:
        if self.main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    """Tensors and numpy scalars in a metrics line: numbers (or lists of them); anything else as text."""
    if hasattr(x, "numel") and x.numel() != 1:
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def save_model(accelerator, objective, model, out_dir: Path) -> None:
    """``model.safetensors``: what the objective exports of the model, written by the main process."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_weights(
            out_dir / MODEL_WEIGHTS,
            objective.export(accelerator.unwrap_model(model, keep_torch_compile=False)),
        )
    accelerator.wait_for_everyone()
