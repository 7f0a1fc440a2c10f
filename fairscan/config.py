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
``--set``) it came from; old keys still work with a deprecation warning naming them
(:meth:`fairscan.settings.Settings.upgrade`). Reading, merging, overrides and interpolation are in
``fairscan.preset_files``.

>>> from fairscan.config import load_preset                               # doctest: +SKIP
>>> p = load_preset("mae-cx14", ["finetune.epochs=3"])                     # doctest: +SKIP
>>> p.finetune.epochs, p.expected.mean_auc                                # doctest: +SKIP
(3, 79.97)
"""

from __future__ import annotations

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
from fairscan.preset_files import (  # noqa: F401 - offered here too
    ERR_BAD_SET,
    ERR_BAD_VALUE,
    ERR_UNKNOWN_PRESET,
    HINT_PRESETS,
    QUICK_TAG,
    SET_ORIGIN,
    Origins,
    _apply_overrides,
    _chain,
    _expand_paths,
    _interpolate,
    _merge,
    _origin_of,
    _rel,
    find_preset,
    parse_overrides,
    preset_dirs,
    preset_names,
    read_header,
    split_name,
)

if TYPE_CHECKING:
    from fairscan.fairness.audit import AuditConfig
    from fairscan.train.finetune import FinetuneConfig

STAGES = ("pretrain", "finetune", "ensemble", "audit", "study")
PATH_VARS = ("data", "runs", "studies", "raw", "weights")
ERR_UNKNOWN_KEY = "{origin}: unknown key {key}"
ERR_WRONG_STAGE = "preset {name!r} is a {stage} preset; `fairscan {want}` takes a {want} preset"
ERR_NO_SECTION = "preset {name!r} has no {section} settings"


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
    batch_size: int | None = Field(None, ge=1)  # None: predict's own (256 per process on a GPU, 64 on the CPU)


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


class RepresentationsSection(_Strict):
    """Where the bias lives (``fairscan study representations``): each fine-tuned row's test features (its
    head's input, ``fairscan embed``), probed for ``targets`` and inspected (PCA modes, KS tests) for ``attrs``."""

    targets: list[str] = Field(default_factory=lambda: ["race", "sex"], min_length=1)
    attrs: list[str] = Field(default_factory=lambda: ["race", "sex"], min_length=1)
    label: str | None = None  # with a label id, inspect also tests label 1 against 0 per mode
    folds: int = Field(5, ge=2)
    grid: list[float] | None = None  # the probe's C values (default: the probe's, chosen by inner CV)
    permutations: int = Field(100, ge=0)
    pca: int = Field(4, ge=1)
    batch_size: int | None = Field(None, ge=1)  # None: embed's own (256 per process on a GPU, 64 on the CPU)
    frozen: bool = False  # also each row's foundation model used frozen (its pre-trained weights, METHOD 5b pooling)


class StudySection(_Strict):
    """A group of presets run end to end, reported as the paper's table beside ours."""

    table: str
    rows: list[StudyRow] = Field(min_length=1)
    comparisons: list[Comparison] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    # groups: each subgroup's mean AUC (Fig. 3); labels: per label (Figs. 5, 6); worst: the worst subgroup's AUC;
    # ks: each model's KS table (with representations)
    show: list[Literal["groups", "labels", "worst", "ks"]] = Field(default_factory=lambda: ["groups"])
    representations: RepresentationsSection | None = None

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
