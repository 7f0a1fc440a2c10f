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


def not_built(command: str, issue: str) -> None:
    """Reserved commands say so in one line and exit 1 rather than pretending to work."""
    from fairscan.errors import NotBuiltError

    raise NotBuiltError(f"`fairscan {command}` is not built yet (planned: {issue})")


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
