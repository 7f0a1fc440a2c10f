"""Command-line options derived from the settings models, so that each setting is declared once.

:func:`command` builds a Typer command whose options are the fields of one or more settings models (their
descriptions are the help text, their defaults shown beside it), plus the few options that are not settings
(:data:`GPUS`, :data:`RESUME`, ...). The command's body gets the settings typed on the command line as a dict
(:func:`typed`), ready to be laid over a preset's. The rule for a field's spelling: ``--field-name``; a boolean
that is off by default is a flag ``--field-name``, one that is on by default is ``--no-field-name``; a list or
tuple is comma-separated (``--labels edema,effusion``); a :class:`~fairscan.settings.Cli` marker on the field
says otherwise where it must (``--log-with``, ``-o``, a repeated ``--manifest``, a positional argument).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from fairscan.settings import Cli, bare_type, cli_of, option_names, option_of


def _param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


GPUS = _param(
    "gpus", Annotated[int | None, typer.Option("--gpus", min=1, help="GPU processes on this machine (Accelerate).")]
)
RESUME = _param(
    "resume",
    Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")],
    False,
)
BREAK_LOCK = _param(
    "break_lock",
    Annotated[bool, typer.Option("--break-lock", help="Take over a run folder whose lock another run holds.")],
    False,
)
ALLOW_INEXACT = _param(
    "allow_inexact_resume",
    Annotated[
        bool,
        typer.Option("--allow-inexact-resume", help="Resume even where the checkpoint's random state is lost."),
    ],
    False,
)
SETS = _param(
    "sets",
    Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a preset key, e.g. --set finetune.epochs=3 (YAML values; repeatable)."),
    ],
)


def preset_option(stage: str) -> inspect.Parameter:
    return _param(
        "preset",
        Annotated[
            str | None,
            typer.Option("--preset", help=f"A {stage} preset (`fairscan presets list --stage {stage}`)."),
        ],
    )


# ------------------------------------------------------------------------------------------ fields -> options


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(bare_type(annotation)[0]) in (list, tuple)


def _help(field) -> str:
    text = field.description or ""
    default = field.get_default(call_default_factory=True) if not field.is_required() else None
    shown = default not in (None, True, False, "", [], ())
    if shown and str(default) not in text:
        value = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text += f" \\[default: {value}]"
    return text


def field_parameter(name: str, field) -> inspect.Parameter:
    """The Typer parameter of one settings field (its value is None when the option is not given)."""
    marker = cli_of(field)
    bare, _ = bare_type(field.annotation)
    if marker.repeat:
        kind: Any = list[str] | None
    elif _is_sequence(field.annotation) or typing.get_origin(bare) is typing.Literal:
        kind = str | None
    elif bare in (bool, int, float):
        kind = bare | None
    else:
        kind = str | None
    if marker.argument:
        multiple = _is_sequence(field.annotation)
        kind = list[str] | None if multiple else str | None
        info = typer.Argument(help=field.description, metavar=marker.metavar, show_default=False)
        return _param(name, Annotated[kind, info], inspect.Parameter.empty if field.is_required() else None)
    if bare is bool:
        info = typer.Option(*option_names(name, field), help=_help(field))
        return _param(name, Annotated[bool | None, info])
    info = typer.Option(*option_names(name, field), help=_help(field), metavar=marker.metavar, show_default=False)
    return _param(name, Annotated[kind, info])


def fields_of(models: Iterable[type]) -> dict[str, Any]:
    """Every field of the models, each once (the first model that has it wins): the stage's own first, in
    declaration order, then the execution options they share."""
    from fairscan.settings import TrainingOptions

    out: dict[str, Any] = {}
    for model in models:
        for name, field in model.model_fields.items():
            out.setdefault(name, field)
    shared = [n for n in out if n in TrainingOptions.model_fields]
    return {n: out[n] for n in [*(n for n in out if n not in shared), *shared]}


def typed(ctx: typer.Context, fields: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The settings typed on the command line (options not given are left out), as settings values."""
    out: dict[str, Any] = {}
    for name, field in fields.items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = values[name]
        bare, optional = bare_type(field.annotation)
        if bare is bool and not optional and field.default is True:
            value = not value  # --no-x
        elif isinstance(value, str) and _is_sequence(field.annotation) and not cli_of(field).repeat:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and not _is_sequence(field.annotation):
            value = value[0] if value else None
        out[name] = value
    return out


def command(body: Callable[..., None], parameters: list[inspect.Parameter], doc: str) -> Callable[..., None]:
    """A Typer command calling ``body(ctx, **values)`` with ``parameters`` as its options."""

    def run(ctx: typer.Context, **values: Any) -> None:
        body(ctx, **values)

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    arguments = [p for p in parameters if isinstance((*typing.get_args(p.annotation), None, None)[1], typer.models.ArgumentInfo)]
    options = [p for p in parameters if p not in arguments]
    run.__signature__ = inspect.Signature([ctx_param, *arguments, *options])  # type: ignore[attr-defined]
    run.__doc__ = doc
    return run


def flag_namer(fields: dict[str, Any]) -> Callable[[str], str]:
    """Names a setting the way its option is spelled (for error messages)."""
    return lambda key: option_of(fields, key)


# ------------------------------------------------------------------------------------------------ helpers


def comma_list(text: str | None) -> list[str] | None:
    """`a, b,c` -> ["a", "b", "c"]; None stays None."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def with_preset(given: dict, preset: str | None, sets: list[str] | None, stage: str) -> dict:
    """The settings of a command: its preset's values (with --set) under the options typed on the command line."""
    from fairscan.errors import InputError

    if preset is not None:
        from fairscan.config import stage_values

        return {**stage_values(preset, stage, sets or []), **given}
    if sets:
        raise InputError("--set overrides a preset's keys", hint="add --preset NAME, or use the options directly")
    return given


def processes(gpus: int | None, procs: int | None, cpu: bool | None) -> int | None:
    """The process count --gpus/--procs ask for (None: one), refusing combinations that cannot run."""
    from fairscan.errors import InputError

    if gpus and procs:
        raise InputError("--gpus and --procs exclude each other", hint="--gpus N on GPUs; --cpu --procs N on CPUs")
    if gpus and cpu:
        raise InputError("--gpus and --cpu exclude each other", hint="use --cpu --procs N for CPU processes")
    if gpus:
        import torch

        if torch.cuda.device_count() < gpus:
            raise InputError(
                f"--gpus {gpus}, but this machine has {torch.cuda.device_count()} GPU(s)",
                hint="use fewer, or --cpu --procs N to run N CPU processes",
            )
    return gpus or procs


def out_path(values: dict[str, Any]) -> Path:
    from fairscan.errors import InputError

    if values.get("out") is None:
        raise InputError("--out is required", hint="name the run folder to write (or to --resume)")
    return Path(values["out"])


__all__ = ["Cli", "command", "field_parameter", "fields_of", "typed", "with_preset", "processes"]
