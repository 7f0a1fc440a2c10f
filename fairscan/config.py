"""Presets: one validated YAML file per experiment of the paper, with ``extends:``, ``--set`` and quick variants.

A preset names an experiment (``mae``, ``mae-cx14``, ``ensemble-medical``, ...) and holds everything it runs:
the datasets it needs and how they are prepared, the stage settings (the same pydantic models the commands
use: :class:`~fairscan.train.finetune.FinetuneConfig`, :class:`~fairscan.fairness.audit.AuditConfig`, the
pre-training config), the paper's result (``expected:``, in the paper's AUC points) and the assumptions it
makes where the paper is silent (METHOD section 5b). The files live in ``presets/`` (shipped in the wheel as
``fairscan/presets``); a header comment in each gives the command, the expected runtime on the paper's hardware
and the paper's result.

Resolution, in order (later wins):

1. the files named by ``extends:`` (a name or a list of names), recursively, merged left to right;
2. the preset's own keys; mappings merge key by key, anything else replaces. A mapping whose ``kind`` differs
   from the one it overrides replaces it whole (a synthetic dataset replaces a real one);
3. with ``quick`` (``NAME:quick``): the ``quick:`` blocks of the chain (tiny model, synthetic data of the
   right layout, a few steps, ``init: random`` wherever the weights would have to be downloaded);
4. ``--set a.b=value`` overrides, each value read as YAML (``3``, ``0.5``, ``[sex, race]``, ``null``);
5. ``${data}``, ``${runs}``, ``${studies}``, ``${raw}``, ``${weights}`` (the ``paths:`` block) and ``${name}``
   (the preset's name) in every string.

Unknown keys and wrong types are :class:`~fairscan.errors.InputError` (exit 2) naming the key and the file (or
``--set``) it came from.

>>> from fairscan.config import load_preset                               # doctest: +SKIP
>>> p = load_preset("mae-cx14", ["finetune.epochs=3"])                     # doctest: +SKIP
>>> p.finetune.epochs, p.expected.mean_auc                                # doctest: +SKIP
(3, 79.97)
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairscan.data.kinds import (  # noqa: F401 - the dataset kinds, as presets name them
    KINDS,
    BalanceData,
    ChexpertData,
    DatasetSpec,
    MimicData,
    NihData,
    PoolData,
    SyntheticData,
)
from fairscan.errors import InputError

if TYPE_CHECKING:
    from fairscan.fairness.audit import AuditConfig
    from fairscan.train.finetune import FinetuneConfig

QUICK_TAG = "quick"
STAGES = ("pretrain", "finetune", "ensemble", "audit", "study")
PATH_VARS = ("data", "runs", "studies", "raw", "weights")
SET_ORIGIN = "--set"

ERR_UNKNOWN_PRESET = "unknown preset {name!r}"
ERR_NOT_MAPPING = "{file}: a preset is a YAML mapping (key: value lines), not {kind}"
ERR_YAML = "{file}: not valid YAML: {error}"
ERR_CYCLE = "{file}: `extends` makes a cycle: {chain}"
ERR_BAD_SET = "--set {text!r} is not KEY=VALUE"
ERR_UNKNOWN_KEY = "{origin}: unknown key {key}"
ERR_BAD_VALUE = "{origin}: {key}: {msg}"
ERR_UNKNOWN_VAR = "{origin}: {key}: unknown variable ${{{var}}}"
ERR_WRONG_STAGE = "preset {name!r} is a {stage} preset; `fairscan {want}` takes a {want} preset"
ERR_NO_SECTION = "preset {name!r} has no {section} settings"
HINT_PRESETS = "see `fairscan presets list`"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- sections


class Paths(_Strict):
    """Where things are: every ``${var}`` in a preset's strings comes from here."""

    data: str = "data"
    runs: str = "runs"
    studies: str = "studies"
    raw: str = "raw"
    weights: str = "weights"


class Expected(_Strict):
    """The paper's result for this experiment, in the paper's unit (AUC points: fraction x 100)."""

    unit: Literal["AUC points"] = "AUC points"
    source: str
    mean_auc: float | None = Field(None, ge=0, le=100)
    gap_sex: float | None = Field(None, ge=0, le=100)
    gap_race: float | None = Field(None, ge=0, le=100)
    claims: list[str] = Field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        return {"mean_auc": self.mean_auc, "gap_sex": self.gap_sex, "gap_race": self.gap_race}


class PredictSection(_Strict):
    """Which splits of the fine-tuning manifest to score (test for the audit; validate for its thresholds)."""

    splits: list[Literal["train", "validate", "test"]] = Field(default_factory=lambda: ["test"])
    batch_size: int = Field(64, ge=1)


class EnsembleSection(_Strict):
    """Paper Table 3: the members' predictions averaged (members are finetune presets)."""

    members: list[str] = Field(min_length=2)
    method: Literal["mean-prob", "mean-logit", "mean-rank"] = "mean-prob"
    weights: list[float] | None = None
    out: str


Direction = Literal["higher", "lower"]


class Comparison(_Strict):
    """A comparison the paper draws: ``model`` minus ``reference`` (each a row or the mean of several rows)."""

    name: str
    model: list[str] = Field(min_length=1)
    reference: list[str] = Field(min_length=1)
    paper: str | None = None  # the paper's words
    expect: dict[Literal["mean_auc", "gap_sex", "gap_race"], Direction] = Field(default_factory=dict)

    @field_validator("model", "reference", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class StudyRow(_Strict):
    preset: str
    label: str | None = None  # as the paper's table writes it
    expected: Expected | None = None  # overrides the preset's own


class Check(_Strict):
    """A subgroup claim of the paper (Figs. 3, 5, 6), checked row by row: is the group's delta above or below 0?

    Without ``label``: the group's mean AUC over labels minus the mean over subgroups (Fig. 3). With ``label``:
    the group's AUC for that label minus the whole population's (Figs. 5 and 6).
    """

    attr: str
    group: str
    expect: Direction
    label: str | None = None
    rows: list[str] | None = None  # default: every row
    paper: str | None = None


class StudySection(_Strict):
    """A group of presets run end to end, reported as the paper's table beside ours."""

    table: str
    rows: list[StudyRow] = Field(min_length=1)
    comparisons: list[Comparison] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    show: list[Literal["groups", "labels"]] = Field(default_factory=lambda: ["groups"])

    @field_validator("rows", mode="before")
    @classmethod
    def _rows(cls, v: Any) -> Any:
        return [{"preset": r} if isinstance(r, str) else r for r in v] if isinstance(v, list) else v


def _stage_model(stage: str, values: dict[str, Any] | None = None):
    """The pydantic model of a stage's settings (imported on first use); pre-training's depends on its method."""
    if stage == "finetune":
        from fairscan.train.finetune import FinetuneConfig

        return FinetuneConfig
    if stage == "audit":
        from fairscan.fairness.audit import AuditConfig

        return AuditConfig
    if stage == "pretrain":
        from fairscan.train.objectives import METHODS
        from fairscan.train.pretrain import PretrainConfig, settings_model

        method = (values or {}).get("method")
        return settings_model(values) if method in METHODS else PretrainConfig
    raise KeyError(stage)


class Preset(_Strict):
    """A resolved preset. ``name`` is the file's stem; ``quick`` says whether the quick variant was applied."""

    name: str
    quick: bool = False
    file: str
    stage: Literal["pretrain", "finetune", "ensemble", "audit", "study"]
    title: str
    reproduces: str
    header: str = ""
    assumptions: list[str] = Field(default_factory=list)
    paths: Paths = Field(default_factory=Paths)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    pretrained_from: str | None = None
    pretrain: Any = None
    finetune: Any = None
    predict: PredictSection = Field(default_factory=PredictSection)
    ensemble: EnsembleSection | None = None
    study: StudySection | None = None
    audit: Any = None
    expected: Expected | None = None

    @model_validator(mode="after")
    def _required_sections(self) -> Preset:
        need = {
            "pretrain": ("pretrain",),
            "finetune": ("finetune",),
            "ensemble": ("ensemble",),
            "study": ("study",),
            "audit": ("audit",),
        }[self.stage]
        for section in need:
            if getattr(self, section) is None:
                raise ValueError(f"a {self.stage} preset needs a {section}: block")
        return self

    # -- convenience ---------------------------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        return f"{self.name}:{QUICK_TAG}" if self.quick else self.name

    def audit_config(self) -> AuditConfig:
        from fairscan.fairness.audit import AuditConfig

        return self.audit if self.audit is not None else AuditConfig()

    def finetune_config(self) -> FinetuneConfig:
        if self.finetune is None:
            raise InputError(ERR_NO_SECTION.format(name=self.name, section="finetune"), hint=HINT_PRESETS)
        return self.finetune

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved preset as plain data (what ``fairscan presets show`` prints)."""
        d = self.model_dump(mode="json", exclude={"header", "file"}, exclude_none=True)
        for section in ("pretrain", "finetune", "audit"):
            model = getattr(self, section)
            if model is not None:
                d[section] = model.model_dump(mode="json")
        return d


# ---------------------------------------------------------------------------------------------- finding


def preset_dirs() -> list[Path]:
    """Where presets live: the installed package's ``fairscan/presets``, else the source checkout's ``presets/``."""
    dirs: list[Path] = []
    extra = os.environ.get("FAIRSCAN_PRESETS")
    if extra:
        dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    try:
        from importlib.resources import files

        packaged = Path(str(files("fairscan") / "presets"))
        if packaged.is_dir():
            dirs.append(packaged)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - a zipped install
        pass
    source = Path(__file__).resolve().parents[1] / "presets"
    if source.is_dir() and source not in dirs:
        dirs.append(source)
    return dirs


def _all_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for path in sorted(d.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def preset_names(*, include_bases: bool = False) -> list[str]:
    """Every preset's name; bases (``_*.yaml``, only ever extended) only when asked."""
    return [n for n in _all_files() if include_bases or not n.startswith("_")]


def split_name(name: str) -> tuple[str, bool]:
    """``mae:quick`` -> (``mae``, True)."""
    base, sep, tag = name.partition(":")
    if sep and tag != QUICK_TAG:
        raise InputError(
            f"preset {name!r}: unknown variant {tag!r}", hint=f"the one variant is NAME:{QUICK_TAG}"
        )
    return base, bool(sep)


def find_preset(name: str, *, near: Path | None = None) -> Path:
    """A preset's file: a path to a ``.yaml`` file, a file beside ``near`` (for ``extends``), or a name."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if near is not None and not path.is_absolute() and (near / path).is_file():
            return near / path
        if path.is_file():
            return path
        raise InputError(f"preset file {name} not found", hint=HINT_PRESETS)
    if near is not None and (near / f"{name}.yaml").is_file():
        return near / f"{name}.yaml"
    files = _all_files()
    if name in files:
        return files[name]
    import difflib

    close = difflib.get_close_matches(name, list(files), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(ERR_UNKNOWN_PRESET.format(name=name), hint=hint + HINT_PRESETS)


# --------------------------------------------------------------------------------------------- reading


def _rel(path: Path) -> str:
    """A file's name as errors show it: relative to the presets folder or the working directory."""
    for d in preset_dirs():
        try:
            return f"presets/{path.resolve().relative_to(d.resolve())}"
        except ValueError:
            continue
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_header(path: Path) -> str:
    """The comment lines at the top of a preset file, without the ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            lines.append(line[1:].removeprefix(" "))
        elif line.strip():
            break
        else:
            lines.append("")
    return "\n".join(lines).strip()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputError(
            ERR_YAML.format(file=_rel(path), error=where + str(getattr(exc, "problem", exc)))
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(ERR_NOT_MAPPING.format(file=_rel(path), kind=type(data).__name__))
    return data


# origins: the file (or "--set") each key path came from, for error messages
Origins = dict[tuple[str, ...], str]
_REPLACE = {("expected",)}  # a result belongs to its experiment: never merged into a parent's
_CONCAT = {("assumptions",)}  # assumptions accumulate along the extends chain


def _merge(
    base: Any,
    over: Any,
    origins: Origins,
    source: str | Origins,
    path: tuple[str, ...] = (),
    *,
    extends: bool = True,
) -> Any:
    """``over`` merged onto ``base``: mappings key by key, a mapping whose ``kind`` changes is replaced, anything
    else replaces; along the extends chain (``extends``) ``expected`` is replaced whole and ``assumptions``
    accumulate. ``origins`` is updated with where each key now comes from: ``source`` is a file name, or the
    origins of ``over`` itself (a parent's merged data)."""
    if extends and path in _CONCAT and isinstance(base, list) and isinstance(over, list):
        _mark(over, origins, source, path)
        return [*base, *(x for x in over if x not in base)]
    if (
        not (extends and path in _REPLACE)
        and isinstance(base, dict)
        and isinstance(over, dict)
        and base.get("kind", over.get("kind")) == over.get("kind", base.get("kind"))
    ):
        out = dict(base)
        for key, value in over.items():
            key = str(key)
            out[key] = _merge(base.get(key), value, origins, source, (*path, key), extends=extends)
        if path not in origins:
            origins[path] = _source(source, path)
        return out
    for known in [k for k in origins if k[: len(path)] == path and len(k) > len(path)]:
        del origins[known]  # the replaced subtree is gone
    _mark(over, origins, source, path)
    return copy.deepcopy(over)


def _source(source: str | Origins, path: tuple[str, ...]) -> str:
    return source if isinstance(source, str) else _origin_of(source, path)


def _mark(value: Any, origins: Origins, source: str | Origins, path: tuple[str, ...]) -> None:
    origins[path] = _source(source, path)
    if isinstance(value, dict):
        for key, sub in value.items():
            _mark(sub, origins, source, (*path, str(key)))


def _chain(
    path: Path, seen: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any], Origins, Origins]:
    """The file's data merged over its ``extends`` chain: (data, quick block, origins, quick origins)."""
    if path.resolve() in seen:
        chain = " -> ".join(p.stem for p in (*seen, path.resolve()))
        raise InputError(ERR_CYCLE.format(file=_rel(path), chain=chain))
    raw = _read_yaml(path)
    origin = _rel(path)
    parents = raw.pop("extends", None)
    quick = raw.pop(QUICK_TAG, None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    elif not (isinstance(parents, list) and all(isinstance(p, str) for p in parents)):
        raise InputError(
            ERR_BAD_VALUE.format(origin=origin, key="extends", msg="give a preset name or a list of names")
        )
    if quick is not None and not isinstance(quick, dict):
        raise InputError(
            ERR_BAD_VALUE.format(origin=origin, key=QUICK_TAG, msg="give a mapping of overrides")
        )
    data: dict[str, Any] = {}
    quick_data: dict[str, Any] = {}
    origins: Origins = {}
    quick_origins: Origins = {}
    for parent in parents:
        p_data, p_quick, p_origins, p_quick_origins = _chain(
            find_preset(parent, near=path.parent), (*seen, path.resolve())
        )
        data = _merge(data, p_data, origins, p_origins)
        quick_data = _merge(quick_data, p_quick, quick_origins, p_quick_origins)
    data = _merge(data, raw, origins, origin)
    if quick:
        quick_data = _merge(quick_data, quick, quick_origins, f"{origin} (quick)")
    return data, quick_data, origins, quick_origins


# ------------------------------------------------------------------------------------------- overrides


def parse_overrides(items: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``["a.b=3", "c=[x, y]"]`` -> ``[("a.b", 3), ("c", ["x", "y"])]``; values are read as YAML."""
    import yaml

    if not items:
        return []
    if isinstance(items, dict):
        return list(items.items())
    out = []
    for text in items:
        if isinstance(text, tuple):  # already parsed
            out.append(text)
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(
                ERR_BAD_SET.format(text=text), hint="e.g. --set finetune.epochs=3 --set audit.attrs=[sex]"
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out.append((key, parsed))
    return out


def _apply_overrides(
    data: dict[str, Any], overrides: list[tuple[str, Any]], origins: Origins
) -> dict[str, Any]:
    for key, value in overrides:
        parts = tuple(key.split("."))
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        data = _merge(data, nested, origins, SET_ORIGIN, extends=False)
    return data


# ------------------------------------------------------------------------------------------ interpolation

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value: Any, variables: dict[str, str], origins: Origins, path: tuple[str, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, variables, origins, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables, origins, (*path, str(i))) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match) -> str:
            var = m.group(1)
            if var not in variables:
                raise InputError(
                    ERR_UNKNOWN_VAR.format(origin=_origin_of(origins, path), key=".".join(path), var=var),
                    hint=f"variables: {', '.join('${' + v + '}' for v in variables)}",
                )
            return variables[var]

        return _VAR.sub(sub, value)
    return value


def _origin_of(origins: Origins, loc: tuple[str, ...]) -> str:
    for n in range(len(loc), -1, -1):
        origin = origins.get(tuple(loc[:n]))
        if origin:
            return origin
    return "preset"


# ----------------------------------------------------------------------------------------------- loading


def load_preset(
    name: str,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    quick: bool | None = None,
    paths: dict[str, str] | None = None,
    foreign_overrides: bool = False,
) -> Preset:
    """Load, merge, override, interpolate and validate one preset (see the module docstring).

    ``name`` may carry the quick tag (``mae:quick``) or be a path to a YAML file. ``paths`` sets ``paths:``
    entries before interpolation (a study uses it so that presets it refers to share its folders). With
    ``foreign_overrides``, overrides of a stage section this preset does not read (``finetune.*`` on a study)
    are skipped rather than refused: a study hands its ``--set`` to every preset it runs.
    """
    base_name, tagged = split_name(name)
    quick = tagged if quick is None else (quick or tagged)
    file = find_preset(base_name)
    if file.stem.startswith("_"):
        raise InputError(f"{file.stem} is a base preset, only ever extended", hint=HINT_PRESETS)
    data, quick_data, origins, quick_origins = _chain(file)
    if quick and quick_data:
        data = _merge(data, quick_data, origins, quick_origins)
    if paths:
        data = _merge(data, {"paths": dict(paths)}, origins, SET_ORIGIN, extends=False)
    parsed = parse_overrides(overrides)
    if foreign_overrides:
        reads = _STAGE_SECTIONS.get(data.get("stage"), set())
        parsed = [(k, v) for k, v in parsed if k.split(".")[0] not in _FOREIGN or k.split(".")[0] in reads]
    data = _apply_overrides(data, parsed, origins)
    for reserved in ("name", "quick", "file", "header"):
        if reserved in data:
            raise InputError(
                ERR_UNKNOWN_KEY.format(origin=_origin_of(origins, (reserved,)), key=reserved),
                hint=f"{reserved!r} is set by fairscan (the preset's name is its file name)",
            )
    _check_sections(data, origins)
    raw_paths = data.get("paths") or {}
    if not isinstance(raw_paths, dict):
        raise InputError(
            ERR_BAD_VALUE.format(origin=_origin_of(origins, ("paths",)), key="paths", msg="give a mapping")
        )
    try:
        resolved_paths = Paths(**raw_paths)
    except ValidationError as exc:
        raise _validation_error(exc, origins, prefix=("paths",)) from None
    variables = {**_expand_paths(resolved_paths.model_dump()), "name": file.stem}
    data = _interpolate(data, variables, origins)
    data.update(name=file.stem, quick=bool(quick), file=str(file), header=read_header(file))
    for section in ("pretrain", "finetune", "audit"):
        if isinstance(data.get(section), dict):
            data[section] = _validate_section(section, data[section], origins)
    try:
        preset = Preset.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, origins) from None
    return _link(preset, parsed)


# The sections each stage reads; any other stage section in a preset is a mistake worth an error.
_STAGE_SECTIONS = {
    "pretrain": {"pretrain"},
    "finetune": {"finetune", "pretrained_from"},
    "ensemble": {"ensemble"},
    "audit": set(),
    "study": {"study"},
}


_FOREIGN = ("pretrain", "finetune", "pretrained_from", "ensemble", "study")


def _check_sections(data: dict[str, Any], origins: Origins) -> None:
    stage = data.get("stage")
    if stage not in _STAGE_SECTIONS:
        return  # validation names the bad or missing stage
    for section in _FOREIGN:
        if data.get(section) is not None and section not in _STAGE_SECTIONS[stage]:
            raise InputError(
                f"{_origin_of(origins, (section,))}: {section}: a {stage} preset has no {section} settings",
                hint=f"a {stage} preset reads {', '.join(sorted(_STAGE_SECTIONS[stage] | {'audit', 'datasets'}))}",
            )


def _expand_paths(paths: dict[str, str]) -> dict[str, str]:
    """Paths may refer to each other once (``studies: ${runs}/studies``)."""
    out = dict(paths)
    for key, value in paths.items():
        out[key] = _VAR.sub(lambda m: paths.get(m.group(1), m.group(0)), value)
    return out


def _validate_section(section: str, values: dict[str, Any], origins: Origins):
    """A stage section as its settings model: old keys renamed (a deprecation warning naming the file that has
    them), then validated (an error naming the key and its file)."""
    from fairscan.errors import FairscanError

    if section == "pretrain" and values.get("method") is not None:
        try:
            _stage_model(section, values)
        except FairscanError as exc:  # an unknown method
            where = _origin_of(origins, (section, "method"))
            raise InputError(f"{where}: {section}.method: {exc.message}", hint=exc.hint) from None
    model = _stage_model(section, values)
    if hasattr(model, "upgrade"):
        values = model.upgrade(values, where=lambda key: f"{_origin_of(origins, (section, key))}: {section}")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _validation_error(exc, origins, prefix=(section,), model=model) from None


def _validation_error(
    exc: ValidationError, origins: Origins, prefix: tuple[str, ...] = (), model: Any = None
) -> InputError:
    """The first pydantic error as one line naming the key and the file it came from."""
    from fairscan.settings import settings_error

    def where(loc: tuple[str, ...]) -> tuple[str, str]:
        full = _data_loc((*prefix, *loc), origins)
        return _origin_of(origins, full), ".".join(full) or "(top level)"

    def valid_keys(loc: tuple[str, ...]) -> str | None:
        return _valid_keys_hint(_data_loc((*prefix, *loc), origins), model)

    return settings_error(exc, where=where, valid_keys=valid_keys)


def _data_loc(loc: tuple[str, ...], origins: Origins) -> tuple[str, ...]:
    """Drop the parts of a pydantic location that are not keys of the data (union tags, model names)."""
    out: list[str] = []
    known = {k for k in origins}
    for part in loc:
        candidate = (*out, part)
        if candidate in known or any(k[: len(candidate)] == candidate for k in known) or part.isdigit():
            out.append(part)
        elif part in KINDS or part in _methods():
            continue
        else:
            out.append(part)
    return tuple(out)


def _methods() -> tuple[str, ...]:
    from fairscan.train.objectives import METHODS

    return tuple(METHODS)


def _valid_keys_hint(loc: tuple[str, ...], section_model: Any = None) -> str | None:
    """The keys the section of ``loc`` accepts."""
    model: Any = Preset
    for part in loc[:-1]:
        if part in ("pretrain", "finetune", "audit") and model is Preset:
            try:
                model = section_model or _stage_model(part)
            except (KeyError, ImportError):
                return None
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif inner:
            model = inner[0]
        else:
            return None
    fields = [f for f in getattr(model, "model_fields", {}) if f not in ("name", "quick", "file", "header")]
    return f"valid keys here: {', '.join(fields)}" if fields else None


# --------------------------------------------------------------------------------------------- linking


def _link(preset: Preset, overrides: list[tuple[str, Any]]) -> Preset:
    """Fill what comes from other presets: the weights a ``pretrained_from`` pre-training run writes."""
    if preset.pretrained_from and preset.finetune is not None and preset.finetune.weights is None:
        source = load_preset(
            preset.pretrained_from,
            overrides,
            quick=preset.quick,
            paths=preset.paths.model_dump(),
            foreign_overrides=True,
        )
        if source.stage != "pretrain":
            raise InputError(
                f"{_rel(Path(preset.file))}: pretrained_from {preset.pretrained_from!r} is a {source.stage} preset",
                hint="name a pretrain preset (`fairscan presets list`)",
            )
        preset.finetune = preset.finetune.model_copy(update={"weights": source.pretrain.out})
    return preset


def preset_settings(name: str, stage: str, overrides: list[str] | dict[str, Any] | None = None) -> BaseModel:
    """A preset's settings for one command: ``fairscan finetune|pretrain|audit --preset NAME [--set k=v]``.

    Returns the stage's own pydantic model (FinetuneConfig, PretrainConfig, AuditConfig), holding only what
    the preset sets as "set" fields (``model_dump(exclude_unset=True)``), so a command can lay the options
    given on its command line over it: ``Config(**{**settings.model_dump(exclude_unset=True), **given})``.
    """
    preset = load_preset(name, overrides)
    section = getattr(preset, stage, None)
    if stage == "audit" and preset.stage in ("finetune", "ensemble", "study", "audit"):
        return preset.audit_config()
    if preset.stage != stage or section is None:
        raise InputError(
            ERR_WRONG_STAGE.format(name=preset.display_name, stage=preset.stage, want=stage),
            hint=HINT_PRESETS,
        )
    return section


def stage_values(
    name: str, stage: str, overrides: list[str] | dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings a preset gives one command, as a dict to merge the command line's options over."""
    return preset_settings(name, stage, overrides).model_dump(exclude_unset=True)


def resolved_dict(preset: Preset) -> dict[str, Any]:
    """The preset as plain data with the stage settings' recipe defaults filled in (``Config.resolve()``):
    what ``fairscan presets show`` prints, the settings a run will record."""
    d = preset.to_yaml_dict()
    for section in ("pretrain", "finetune"):
        model = getattr(preset, section)
        if model is not None:
            d[section] = model.resolve().model_dump(mode="json")
    return d


def list_presets() -> list[Preset]:
    """Every (non-base) preset, resolved, in name order."""
    return [load_preset(n) for n in sorted(preset_names())]
