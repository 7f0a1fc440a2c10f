"""Each setting declared once: the base of every stage's settings, the execution options they share, and the one
translation of a validation error into the user's message.

A stage's settings are a pydantic model (:class:`Settings`: unknown keys are errors). The model is the only
declaration of a setting: presets validate against it (``fairscan.config``), the command line derives its options
from it (``fairscan.cli._options``), a run folder records it (``fairscan.runs``). A field's ``description`` is its
help text; a :class:`Cli` marker in its annotation says how the command line spells it where the rule does not fit
(the rule: ``--field-name``; ``--flag`` for a boolean that is off by default, ``--no-flag`` for one that is on;
lists and tuples as comma-separated values).

Renaming a setting keeps old presets, ``--set`` paths and run folders working: list it in the model's
``renamed`` (``{"old": "new"}``) and :meth:`Settings.upgrade` maps it, with a :class:`FairscanDeprecation` warning.
"""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fairscan.errors import InputError


class FairscanWarning(UserWarning):
    """A warning for fairscan's user (the command line prints it as ``warning: ...`` on stderr)."""


class FairscanDeprecation(FairscanWarning, FutureWarning):
    """An old spelling that still works, for now."""


def deprecated(message: str) -> None:
    warnings.warn(message, FairscanDeprecation, stacklevel=3)


@dataclass(frozen=True)
class Cli:
    """How the command line spells a field, where the rule (``--field-name``) does not fit."""

    flags: tuple[str, ...] = ()  # e.g. ("--log-with",) or ("--out", "-o")
    argument: bool = False  # a positional argument (a list field: several)
    repeat: bool = False  # a list given by repeating the flag (``--manifest a --manifest b``), not by commas
    metavar: str | None = None


Where = str | Callable[[str], str] | None  # what gave a key: "presets/x.yaml: finetune", or a function of the key


def origin(where: Where, key: str) -> str:
    return where(key) if callable(where) else str(where)


def cli_of(field) -> Cli:
    return next((m for m in field.metadata if isinstance(m, Cli)), Cli())


def bare_type(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None`` and validators, whether ``None`` was allowed)."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation, optional


def option_names(name: str, field) -> tuple[str, ...]:
    """A field's option names (``--no-x`` for a boolean that is on by default)."""
    marker = cli_of(field)
    if marker.flags:
        return marker.flags
    dashed = "--" + name.replace("_", "-")
    bare, optional = bare_type(field.annotation)
    if bare is bool and not optional and field.default is True:
        return ("--no-" + dashed[2:],)
    if bare is bool and optional:
        return (f"{dashed}/--no-{dashed[2:]}",)
    return (dashed,)


def option_of(fields: dict[str, Any], key: str) -> str:
    """How a setting is spelled on the command line (its first option name), for messages."""
    field = fields.get(key)
    return option_names(key, field)[0].split("/")[0] if field is not None else key


class Settings(BaseModel):
    """The base of every settings model: unknown keys are errors; old keys are renamed by :meth:`upgrade`."""

    model_config = ConfigDict(extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @classmethod
    def renames(cls) -> dict[str, str]:
        out: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("renamed", {}))
        return out

    @classmethod
    def upgrade(cls, values: dict[str, Any], *, where: Where = None) -> dict[str, Any]:
        """``values`` with renamed keys under their new names; with ``where`` (what gave them: a preset file and
        section, ``--set``; or a function of the key), each old key is a deprecation warning naming it."""
        values = dict(values)
        for old, new in cls.renames().items():
            if old in values:
                value = values.pop(old)
                values.setdefault(new, value)
                if where is not None:
                    deprecated(f"{origin(where, old)}.{old} is now called {new}; the old name still works, for now")
        return values


def _one_or_two(value: Any) -> Any:
    """A crop scale of one number is its lower end: ``0.2`` is ``(0.2, 1.0)``."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)) or (isinstance(value, (list, tuple)) and len(value) == 1):
        return (float(value if isinstance(value, (int, float)) else value[0]), 1.0)
    return value


def _a_range(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop scale {lo}-{hi} is not a range within (0, 1]; e.g. 0.2 (for 0.2-1)")
    return value


CropScale = Annotated[tuple[float, float], BeforeValidator(_one_or_two), AfterValidator(_a_range)]


# ----------------------------------------------------------------------------------------- execution options

Precision = Literal["auto", "bf16", "fp32"]


class ExecutionOptions(Settings):
    """How a stage runs: where, on how many processes, and how images are read. Shared by ``finetune``,
    ``pretrain`` and ``predict`` (and by ``study``, which hands them to every run)."""

    cpu: bool = Field(False, description="Run on the CPU even where a GPU is present.")
    procs: int = Field(1, ge=1, description="Processes on this machine (with --cpu: gloo; --gpus N on GPUs).")
    precision: Precision = Field("auto", description="auto (bf16 on a GPU, else fp32), bf16 or fp32.")
    workers: int | None = Field(
        None,
        ge=0,
        description="Data-loading processes per process (default: the CPUs / processes, at most 8).",
    )
    cache: str | None = Field(None, description="An image cache to read (default: the manifest's, if built).")
    use_cache: Annotated[bool, Cli(("--no-cache",))] = Field(
        True, description="Decode image files even where a cache exists."
    )

    def execution(self) -> dict[str, Any]:
        """These options as keyword arguments for another stage's settings (a run's, for its predictions)."""
        return self.model_dump(include=set(ExecutionOptions.model_fields))

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        from fairscan.data.images import default_workers

        return max(0, min(8, default_workers() // self.procs))


class TrainingOptions(ExecutionOptions):
    """Execution options of the training stages: compilation, checkpoints, logs and trackers."""

    renamed: ClassVar[dict[str, str]] = {"trackers": "log_with"}

    compile: bool = Field(False, description="torch.compile the model.")
    save_every: int = Field(
        500, ge=0, description="Optimiser steps between mid-epoch checkpoints (0: epoch ends)."
    )
    log_every: int = Field(10, ge=1, description="Optimiser steps between metrics.jsonl lines.")
    log_with: list[str] = Field(
        default_factory=list, description="Accelerate trackers: tensorboard, wandb, mlflow (comma list)."
    )

    # fields that decide how a run executes, not what it computes: a finished run is the same run without them
    execution_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def how_it_runs(cls) -> frozenset[str]:
        return frozenset(TrainingOptions.model_fields) | cls.execution_fields


# ------------------------------------------------------------------------------------------ validation errors


def settings_error(
    exc: ValidationError,
    *,
    where: Callable[[tuple[str, ...]], tuple[str, str]],
    valid_keys: Callable[[tuple[str, ...]], str | None] = lambda loc: None,
    hint: str | None = None,
) -> InputError:
    """The first validation error as one line naming the setting and where it came from.

    ``where(loc)`` turns pydantic's location into ``(origin, name)``: ``("--set", "finetune.epochs")`` for a
    preset, ``("", "--epochs")`` for an option; ``valid_keys(loc)`` is the hint for an unknown or missing key.
    """
    first = exc.errors()[0]
    loc = tuple(str(x) for x in first["loc"])
    source, name = where(loc)
    prefix = f"{source}: " if source else ""
    if first["type"] == "extra_forbidden":
        return InputError(f"{prefix}unknown key {name}", hint=valid_keys(loc))
    if first["type"] == "missing":
        if not source and name.startswith("-"):  # an option
            return InputError(f"{name} is required", hint=valid_keys(loc))
        return InputError(f"{prefix}{name}: required but missing", hint=valid_keys(loc))
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    if got is not None and not isinstance(got, (dict, list)):
        msg += f" (got {got!r})"
    return InputError(f"{prefix}{name}: {msg}", hint=hint)


def validate(model, values: dict[str, Any], *, flags: Callable[[str], str] | None = None):
    """``model(**values)``, its validation error as the user's message (``flags`` names an option by field)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        name_of = flags or (lambda key: key)
        raise settings_error(
            exc,
            where=lambda loc: ("", name_of(loc[0]) if loc else "(settings)"),
            hint="see --help for the accepted values" if flags else None,
        ) from None
