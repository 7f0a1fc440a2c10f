"""`fairscan demo`: reserved; a later release builds it."""

from __future__ import annotations

import typer

from fairscan.cli._common import not_built


def demo(args: list[str] = typer.Argument(None, hidden=True)) -> None:
    """Not built yet: says so and exits 1."""
    not_built("demo", "the presets/demo issue")
