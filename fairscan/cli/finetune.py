"""`fairscan finetune` and `fairscan predict`: reserved; a later release builds them."""

from __future__ import annotations

import typer

from fairscan.cli._common import not_built


def finetune(args: list[str] = typer.Argument(None, hidden=True)) -> None:
    """Not built yet: says so and exits 1."""
    not_built("finetune", "the finetune issue")


def predict(args: list[str] = typer.Argument(None, hidden=True)) -> None:
    """Not built yet: says so and exits 1."""
    not_built("predict", "the finetune issue")
