"""Shared pieces of the CLI: consoles (results on stdout, everything else on stderr), state, options."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

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
