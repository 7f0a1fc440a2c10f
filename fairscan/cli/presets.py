"""`fairscan presets`: the paper's experiments by name -- list them, and show one fully resolved."""

from __future__ import annotations

from typing import Annotated

import typer

from fairscan.cli._common import console, err_console

app = typer.Typer(
    help="The paper's experiments as validated presets: list them, show one fully resolved.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a key: --set finetune.epochs=3 (values read as YAML; repeatable)."),
]
STAGE_ORDER = ("study", "pretrain", "finetune", "ensemble", "audit")


@app.command("list")
def list_presets(
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="Only this stage: study, pretrain, finetune, ensemble or audit."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every preset: its name, stage and what it reproduces. Add :quick to a name for its quick variant.

    [dim]fairscan presets list --stage study[/]
    """
    from fairscan.config import STAGES, list_presets
    from fairscan.errors import InputError

    if stage is not None and stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}", hint=f"use one of {', '.join(STAGES)}")
    presets = [p for p in list_presets() if stage is None or p.stage == stage]
    presets.sort(key=lambda p: (STAGE_ORDER.index(p.stage), p.name))
    if as_json:
        import json

        rows = [
            {"name": p.name, "stage": p.stage, "reproduces": p.reproduces, "title": p.title} for p in presets
        ]
        console.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(
        title="Presets (fairscan presets show NAME; NAME:quick for the quick variant)", title_justify="left"
    )
    table.add_column("name", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("reproduces", overflow="fold")
    table.add_column("command", overflow="fold", style="dim")
    for p in presets:
        table.add_row(p.name, p.stage, p.reproduces, _command(p))
    console.print(table)


def _command(p) -> str:
    if p.name == "demo":
        return "fairscan demo"
    if p.stage in ("study", "ensemble"):
        return f"fairscan study {p.name}"
    if p.stage == "audit":
        return f"fairscan audit --preset {p.name} FILES"
    return f"fairscan {p.stage} --preset {p.name}"


@app.command("show")
def show(
    name: Annotated[
        str, typer.Argument(help="A preset name (NAME:quick for its quick variant) or a YAML file.")
    ],
    sets: Sets = None,
    plan: Annotated[
        bool, typer.Option("--plan/--no-plan", help="Also list the steps `fairscan study NAME` would take.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved preset as JSON.")] = False,
) -> None:
    """A preset fully resolved: extends merged, quick and --set applied, paths filled in, recipe defaults
    resolved; then the steps it runs.

    [dim]fairscan presets show mae-cx14[/]
    [dim]fairscan presets show table2:quick --set paths.data=/tmp/data[/]
    """
    from fairscan.config import load_preset, resolved_dict

    preset = load_preset(name, sets or [], foreign_overrides=True)
    d = resolved_dict(preset)
    if as_json:
        import json

        console.print_json(json.dumps(d))
        return
    import yaml

    if preset.header:
        text = "\n".join(f"# {line}" if line else "#" for line in preset.header.splitlines())
        console.print(text, style="dim", highlight=False, markup=False, soft_wrap=True)
    body = yaml.safe_dump(d, sort_keys=False, width=110, allow_unicode=True)
    console.print(body, highlight=False, markup=False, soft_wrap=True)
    if plan and preset.stage != "audit":
        from fairscan.studies import plan_study

        steps = plan_study(name, overrides=sets or []).steps
        console.print(f"# `fairscan study {preset.display_name}` runs, in order (finished steps are skipped):",
                      style="bold", highlight=False, markup=False)  # fmt: skip
        for i, step in enumerate(steps, 1):
            console.print(f"#  {i:>2}. {step.command}", highlight=False, markup=False, soft_wrap=True)
    err_console.print(f"resolved from {preset.file}", style="dim", highlight=False)
