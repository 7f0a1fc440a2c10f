"""Shared pieces of the CLI: consoles (results on stdout, everything else on stderr), state, options."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from fairscan.io import TABLE_SUFFIXES

console = Console()  # results
err_console = Console(stderr=True)  # progress, warnings, logs, errors


@dataclass
class _State:
    debug: bool = False


state = _State()


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def numbers(text: str, flag: str) -> list[float]:
    """`0.01,0.1,1` -> [0.01, 0.1, 1.0], or an InputError naming the option."""
    from fairscan.errors import InputError

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: give numbers separated by commas, e.g. 40,60,80") from None
    if not values:
        raise InputError(f"{flag}: give at least one number")
    return values


def writable_folder(out) -> None:
    """Refuse an --out folder that cannot be written before any work is done (``fairscan.io``'s preflight)."""
    if out is not None:
        from fairscan.io import check_output_folder

        check_output_folder(out, "--out")


# Options that take several values after one flag (`--attrs sex race`). Click options take one value per
# flag, so the root group rewrites `--attrs sex race` into `--attrs sex --attrs race` before parsing.
# A value list ends at the next option, and where the flag says so (True) at a token naming a table file,
# which is then a positional argument again (`fairscan audit --attrs sex race preds.parquet`).
GREEDY_OPTIONS: dict[str, dict[str, bool]] = {
    "audit": {"--attrs": True, "--labels": True, "--names": True},
    "ensemble": {"--weights": True, "--labels": True},
    "pretrain": {"--manifest": False},
    "probe": {"--target": True},
    "inspect": {"--attrs": True},
}


def expand_greedy(args: list[str]) -> list[str]:
    command = next((a for a in args if not a.startswith("-")), None)
    greedy = GREEDY_OPTIONS.get(command or "", {})
    if not greedy:
        return args
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        out.append(tok)
        i += 1
        if tok in greedy:
            first = True
            while i < len(args) and not args[i].startswith("-"):
                if not first and greedy[tok] and (args[i].lower().endswith(TABLE_SUFFIXES) or "=" in args[i]):
                    break
                if not first:
                    out.append(tok)
                out.append(args[i])
                first = False
                i += 1
    return out


def progress_bar():
    """The bar long-running commands (audit, demo, study) show on stderr while they work; gone when done."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
