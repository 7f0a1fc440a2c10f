"""`fairscan models`: reserved; a later release builds it."""

from __future__ import annotations

import typer

from fairscan.cli._common import not_built

app = typer.Typer(help="Not built yet.", no_args_is_help=False, invoke_without_command=True)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context) -> None:
    not_built("models", "the finetune issue")
