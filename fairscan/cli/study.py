"""`fairscan study`: run a group of presets end to end (resumable) and report the paper's table beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, err_console, progress_bar, state

STUDY_HELP = """Run a paper table or figure end to end (resumable) and report the paper's numbers beside ours.

The report holds the paper's numbers, ours (mean ± sd over seeds, with bootstrap intervals), the difference,
and paired intervals for the comparisons the paper draws.

NAME is a study preset (`fairscan presets list --stage study`: table2, table3, figure1, ...) or any finetune,
ensemble or pretrain preset. NAME:quick runs its quick variant (synthetic data, tiny models, CPU). Finished steps
are skipped, interrupted runs resume: run the same command again after a failure.

Examples:

  fairscan study table2:quick

  fairscan study figure1 --seeds 3 --gpus 1

  fairscan study table4 --plan

  fairscan study mae-cx14 --set paths.data=/mnt/data --set paths.raw=/mnt/raw
"""


def _study(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A study (or finetune/ensemble/pretrain) preset; NAME:quick.")],
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Fine-tuning seeds per row (the paper ran 1).")
    ] = 1,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a key of every preset the study runs, e.g. --set finetune.epochs=3."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: ${studies}/NAME).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The quick variant (same as NAME:quick).")] = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="List the steps and whether each is done; run nothing.")
    ] = False,
    gpus: int | None = None,
    **execution,
) -> None:
    from fairscan.cli._options import processes, typed
    from fairscan.studies import plan_study, run_study

    run_options = typed(ctx, _EXECUTION, execution)  # handed to every run the study makes
    n = processes(gpus, run_options.get("procs"), run_options.get("cpu"))
    if n:
        run_options["procs"] = n
    if plan:
        p = plan_study(
            name, seeds=seeds, quick=quick or None, overrides=sets, out=out, run_options=run_options
        )
        for i, step in enumerate(p.steps, 1):
            status = step.state()
            style = {"done": "green", "resume": "yellow"}.get(status, "")
            console.print(
                f"{i:>3}. [{style or 'default'}]{status:<6}[/] {step.kind:<9} {step.command}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(f"report: {p.out}", highlight=False)
        return
    progress = progress_bar()
    paths = run_study(
        name, seeds=seeds, quick=quick or None, overrides=sets, out=out, run_options=run_options,
        console=err_console, debug=state.debug, progress=progress,
    )  # fmt: skip
    if not paths:
        console.print("pre-training done (a pretrain preset has nothing to audit)", highlight=False)
        return
    render_summary(paths["json"])
    err_console.print(f"full audit: {paths['audit_html']}", highlight=False)
    console.print(f"report: {paths['html']}", highlight=False)


def render_summary(study_json) -> None:
    """The report's main tables on the console (stdout)."""
    from rich.table import Table

    from fairscan.studies import load_study
    from fairscan.studies.report import sections

    d = load_study(study_json)
    shown = sections(d)  # the first four, and where the bias lives when the study looks there
    for s in [s for i, s in enumerate(shown) if i < 4 or s.key.startswith("representations")]:
        table = Table(title=s.title, title_justify="left", caption=None)
        numeric = s.numeric or [False] * len(s.columns)
        for col, num in zip(s.columns, numeric):
            table.add_column(col, justify="right" if num else "left", overflow="fold")
        for row in s.rows:
            table.add_row(*row)
        console.print(table)


def _study_command():
    """`fairscan study`'s options, with the execution options (``fairscan.settings.ExecutionOptions``) derived."""
    import inspect

    from fairscan.cli import _options as opt

    own = [p for p in inspect.signature(_study, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    own = [p for p in own if p.name not in ("ctx", "gpus")]
    params = [*own, *(opt.field_parameter(k, f) for k, f in _EXECUTION.items()), opt.GPUS]

    def body(ctx: typer.Context, **values) -> None:
        _study(ctx, **values)

    return opt.command(body, params, STUDY_HELP)


def _execution_fields():
    from fairscan.settings import ExecutionOptions

    # every run's own image cache is found beside its manifest: one --cache cannot serve them all
    return {k: f for k, f in ExecutionOptions.model_fields.items() if k != "cache"}


_EXECUTION = _execution_fields()
study = _study_command()
