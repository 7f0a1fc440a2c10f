"""`fairscan demo`: the README's first command -- the whole pipeline on synthetic data, no downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, err_console, progress_bar, state

DEMO_HELP = """The whole pipeline on synthetic data, no downloads: the README's first command.

Makes a synthetic CheXpert with a planted race gap, prepares it, pre-trains a tiny MAE, fine-tunes two tiny
models (one from the MAE, one from scratch), predicts, ensembles, audits them together, probes both models'
features for race and tests their PCA modes by race and sex (KS), and writes the HTML report. A few minutes on 2 CPU cores; run it again and finished steps are skipped.

Examples:

  fairscan demo

  fairscan demo --out /tmp/demo --quick
"""


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the data, runs and report.")] = Path(
        "fairscan-demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller data and one epoch: seconds, not minutes.")
    ] = False,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key of the demo's presets, e.g. finetune.epochs=2."),
    ] = None,
) -> None:
    from fairscan.cli.study import render_summary
    from fairscan.demo import run_demo
    from fairscan.io import check_output_folder

    check_output_folder(out, "--out")
    progress = progress_bar()
    paths = run_demo(
        out, quick=quick, overrides=sets, console=err_console, progress=progress, debug=state.debug
    )
    render_summary(paths["json"])
    err_console.print(f"full audit of the three models: {paths['audit_html']}", highlight=False)
    console.print(f"report: {paths['html']}", highlight=False)


demo.__doc__ = DEMO_HELP
