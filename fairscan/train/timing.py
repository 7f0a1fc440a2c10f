"""Step timing of the training loop, for benchmarks: when each optimiser step ended and how long the loop was
blocked in ``next(loader)`` before it.

Off unless a benchmark asks (``with recording() as clock: finetune(...)``): then the loop's batches come through
:meth:`StepClock.batches` and each optimiser step reports to :meth:`StepClock.step_done` (as does each inference
batch of validation and ``predict``, as ``kind="inference"``). With ``sync`` the CUDA
stream is synchronised around every ``next(loader)`` and at every step end, so the wait measured is time the
device had nothing to do, not time the host spent queueing work ahead of it. Nothing is timed, and nothing is
synchronised, when no clock is recording.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_CLOCK: StepClock | None = None


@dataclass
class StepClock:
    sync: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "seconds", "data_wait"} per step
    _mark: float = 0.0
    _wait: float = 0.0

    def _now(self) -> float:
        if self.sync:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        return time.perf_counter()

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """``loader``'s batches, timing each ``next``; a step's time starts when its epoch's iteration does."""
        it = iter(loader)
        self._mark, self._wait = self._now(), 0.0
        while True:
            t0 = self._now()
            try:
                batch = next(it)
            except StopIteration:
                return
            self._wait += self._now() - t0
            yield batch

    def step_done(self, kind: str) -> None:
        now = self._now()
        self.steps.append({"kind": kind, "seconds": now - self._mark, "data_wait": self._wait})
        self._mark, self._wait = now, 0.0


@contextlib.contextmanager
def recording(*, sync: bool = True) -> Iterator[StepClock]:
    """Time every loop step run inside this block (in this process)."""
    global _CLOCK
    _CLOCK = StepClock(sync=sync)
    try:
        yield _CLOCK
    finally:
        _CLOCK = None


def timed(loader: Iterable) -> Iterable:
    return loader if _CLOCK is None else _CLOCK.batches(loader)


def step_done(kind: str = "train") -> None:
    """An optimiser step (``train``) or an inference batch (``inference``: validation, predict) ended."""
    if _CLOCK is not None:
        _CLOCK.step_done(kind)
