"""What a run says on the console: messages, one line per epoch, and a progress bar while an epoch runs."""

from __future__ import annotations

from collections.abc import Callable


def printer(console) -> Callable[[str], None]:
    """``say(msg)`` on ``console`` (rich markup, no highlighting), or a no-op without one."""
    if console is None:
        return lambda msg: None
    return lambda msg: console.print(msg, highlight=False, soft_wrap=True)


def flat_settings(d: dict) -> dict:
    """Settings as trackers take them: numbers, strings and booleans as they are, anything else as text."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in d.items()}


def fmt_metric(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def epoch_line(rec: dict, epochs: int, select: str | None) -> str:
    parts = [
        f"epoch {rec['epoch'] + 1}/{epochs}",
        f"step {rec['step']}",
        f"train loss {rec['train_loss']:.4f}",
    ]
    for k, v in rec.items():
        if k.startswith("val_") and isinstance(v, float):
            parts.append(f"{k.replace('_', ' ').replace(' auc', ' AUC')} {v:.4f}")
    if select and rec.get("best") is not None:
        parts.append(f"(best {rec['best']:.4f} at epoch {rec['best_epoch'] + 1})")
    return "  ".join(parts)


class Bar:
    """A rich progress bar on the given (stderr) console, one task per epoch; silent without a console."""

    def __init__(self, console, total: int):
        self.console, self.total, self.progress, self.task = console, total, None, None

    def start(self, epoch: int, done: int = 0) -> None:
        if self.console is None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=self.console, transient=True,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task(f"epoch {epoch + 1}", total=self.total, completed=done)

    def advance(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=f"loss {loss:.4f}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
