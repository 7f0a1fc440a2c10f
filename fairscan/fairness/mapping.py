"""Outside prediction formats, converted through an explicit mapping (never by guessing).

A mapping is a YAML or JSON file (``fairscan audit preds.csv --mapping map.yaml``) of one of two forms.

``format: wide`` -- one row per image with a column per label, e.g. the reference scripts'
``class_0..class_13`` (scores) and ``target_0..target_13`` (labels)::

    format: wide
    labels: [no_finding, enlarged_cardiomediastinum, ...]   # label ids in column-index order
    score: "class_{i}"            # column of label i's score; {id} (or {name}) may be used instead of {i}
    target: "target_{i}"          # column of label i's label
    score_kind: prob              # or logit
    image_id: path                # column that identifies the image (or "__row__": the row number)
    path: path                    # optional: the image's file, kept as column ``path`` (repeated images)
    patient_id: {column: path, regex: "(patient\\d+)"}   # optional: a column, or a regex over one
    metadata: test_split.csv      # optional table joined for attributes (relative to the mapping file)
    join: {left: __row__, right: __row__}                # join keys: column names, or "__row__" for position
    attrs: {sex: Sex, race: race}                        # fairscan name: column in the joined table

Files as published, e.g. Glocker et al.'s ``chexpert-model.embeddings.csv`` (columns ``Logit - No Finding``, CheXpert's
1 / 0 / -1 / blank labels): ``labels`` may be a table of label id to the name the file spells, read by ``{name}``,
and ``target_values`` / ``target_blank`` recode the labels (a value outside ``target_values`` is an error)::

    format: wide
    labels: {no_finding: "No Finding", pleural_effusion: "Pleural Effusion"}
    score: "Logit - {name}"
    target: "{name}"
    score_kind: logit
    target_values: {1: 1, 0: 0, -1: 0}   # file value -> 1, 0, or null (masked)
    target_blank: 0                      # a blank label reads as 0 (or "mask", the default: left out)
    image_id: __row__
    patient_id: patient_id
    path: Path
    attrs: {sex: sex, race: race}

``format: long`` -- one row per image and label::

    format: long
    columns: {image_id: image, label: finding, target: y_true, score: y_score}
    score_kind: prob
    labels: {Cardiomegaly: cardiomegaly}   # optional renaming of the label column's values
    patient_id: patient                    # optional, a column (or {column:, regex:})
    attrs: {sex: sex}                      # optional attribute columns, constant per image
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fairscan.errors import InputError
from fairscan.io import read_table
from fairscan.schema import LABEL_PREFIX, LOGIT_PREFIX, PROB_PREFIX, label_id

ROW = "__row__"


class _Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str
    regex: str | None = None


class _Join(BaseModel):
    model_config = ConfigDict(extra="forbid")
    left: str = ROW
    right: str = ROW


class WideMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "wide"
    labels: list[str] | dict[str, str]  # ids (or spellings) in column-index order, or id -> spelling
    score: str
    target: str
    score_kind: str = "prob"
    target_values: dict[float, float | Literal["mask"] | None] | None = None  # file value -> 1, 0 or mask
    target_blank: Literal[0, 1, "mask"] = "mask"
    image_id: str = ROW
    path: str | None = None
    patient_id: str | _Pattern | None = None
    metadata: str | None = None
    join: _Join = _Join()
    attrs: dict[str, str] = {}


class LongMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "long"
    columns: dict[str, str]
    score_kind: str = "prob"
    labels: dict[str, str] = {}
    patient_id: str | _Pattern | None = None
    attrs: dict[str, str] = {}


def load_mapping(path: str | os.PathLike) -> dict[str, Any]:
    import json

    import yaml

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such mapping file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except Exception as exc:
        raise InputError(f"{path}: cannot be parsed ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a mapping must be a YAML/JSON object")
    data["_base"] = str(path.parent)
    return data


def _column(df, name: str, source) -> Any:
    if name == ROW:
        return df.index.astype(str).to_series(index=df.index)
    if name not in df.columns:
        raise InputError(
            f"{source}: the mapping names column {name!r}, which is missing",
            hint=f"columns: {', '.join(map(str, df.columns))}",
        )
    return df[name]


def _patient(df, spec, source):
    if spec is None:
        return None
    if isinstance(spec, str):
        return _column(df, spec, source).astype(str)
    col = _column(df, spec.column, source).astype(str)
    if spec.regex is None:
        return col
    found = col.str.extract(spec.regex, expand=False)
    if found.isna().any():
        raise InputError(
            f"{source}: patient_id regex {spec.regex!r} does not match {col[found.isna()].iloc[0]!r}"
        )
    return found


def apply_mapping(path: str | os.PathLike, mapping: dict[str, Any]):
    """Read an outside predictions file and return it in fairscan's predictions format (a DataFrame)."""
    mapping = dict(mapping)
    base = Path(mapping.pop("_base", "."))
    kind = mapping.get("format")
    try:
        spec = (
            WideMapping(**mapping) if kind == "wide" else LongMapping(**mapping) if kind == "long" else None
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"mapping: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    if spec is None:
        raise InputError(f"mapping: format must be 'wide' or 'long', not {kind!r}")
    if spec.score_kind not in ("prob", "logit"):
        raise InputError(f"mapping: score_kind must be prob or logit, not {spec.score_kind!r}")
    score_prefix = PROB_PREFIX if spec.score_kind == "prob" else LOGIT_PREFIX
    df = read_table(path)
    if isinstance(spec, WideMapping):
        return _wide(df, spec, path, base, score_prefix)
    return _long(df, spec, path, score_prefix)


def _label_names(spec: WideMapping) -> list[tuple[str, str]]:
    """(label id, the file's spelling) per label, in column-index order."""
    if isinstance(spec.labels, dict):
        return [(label_id(k), v) for k, v in spec.labels.items()]
    return [(label_id(lab), lab) for lab in spec.labels]


def _pattern_column(df, pattern: str, fmt: dict, key: str, source):
    """The column a ``score``/``target`` pattern names for one label."""
    try:
        name = pattern.format(**fmt)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"mapping: {key} pattern {pattern!r} cannot be filled ({type(exc).__name__}: {exc})",
            hint="the placeholders are {i} (the label's position), {id} (its id) and {name} (its spelling)",
        ) from None
    if name not in df.columns:
        near = [c for c in map(str, df.columns) if fmt["name"].lower() in c.lower()]
        raise InputError(
            f"{source}: the mapping's {key} pattern {pattern!r} names column {name!r} for label "
            f"{fmt['id']}, which is missing",
            hint=f"columns naming {fmt['name']!r}: {', '.join(near)}"
            if near
            else f"check the pattern and the labels; columns: {', '.join(map(str, df.columns))}",
        )
    return df[name]


def _recode_target(col, spec: WideMapping, source):
    """A label column recoded with ``target_values`` and ``target_blank`` (NaN = masked); without them the
    values pass as they are, for the predictions schema to check."""
    import numpy as np
    import pandas as pd

    blank = col.isna() | (col.astype(str).str.strip() == "")
    out = col.astype(object)
    if spec.target_values is not None:
        table = {
            float(k): (np.nan if v in (None, "mask") else float(v)) for k, v in spec.target_values.items()
        }
        values = pd.to_numeric(col, errors="coerce")
        unknown = ~blank & ~values.isin(list(table))
        if unknown.any():
            i = unknown.idxmax()
            raise InputError(
                f"{source}: column {col.name} has {col[i]} (row {i}), which target_values does not list",
                hint=f"add it to target_values (values seen: {', '.join(sorted(set(col[~blank].astype(str))))})",
            )
        out = values.map(table).astype(object)
    if spec.target_blank != "mask":
        out = out.where(~blank, float(spec.target_blank))
    return out.to_numpy()


def _wide(df, spec: WideMapping, path, base: Path, score_prefix: str):
    import pandas as pd

    out = pd.DataFrame({"image_id": _column(df, spec.image_id, path).astype(str).to_numpy()})
    pid = _patient(df, spec.patient_id, path)
    if pid is not None:
        out["patient_id"] = pid.to_numpy()
    if spec.path is not None:
        out["path"] = _column(df, spec.path, path).astype(str).to_numpy()
    for i, (lab_id, name) in enumerate(_label_names(spec)):
        fmt = {"i": i, "id": lab_id, "name": name}
        target = _pattern_column(df, spec.target, fmt, "target", path)
        out[LABEL_PREFIX + lab_id] = _recode_target(target, spec, path)
        out[score_prefix + lab_id] = _pattern_column(df, spec.score, fmt, "score", path).to_numpy()
    if spec.metadata:
        meta_path = base / spec.metadata if not Path(spec.metadata).is_absolute() else Path(spec.metadata)
        meta = read_table(meta_path)
        left = _column(df, spec.join.left, path).astype(str).to_numpy()
        right = _column(meta, spec.join.right, meta_path).astype(str)
        if right.duplicated().any():
            raise InputError(
                f"{meta_path}: join key {spec.join.right} repeats ({right[right.duplicated()].iloc[0]!r})"
            )
        meta = meta.set_axis(right.to_numpy())
        missing = [k for k in left if k not in meta.index]
        if missing:
            raise InputError(f"{meta_path}: {len(missing)} key(s) of {path} are missing, e.g. {missing[0]!r}")
        for name, col in spec.attrs.items():
            out[name] = _column(meta, col, meta_path).loc[left].to_numpy()
    else:
        for name, col in spec.attrs.items():
            out[name] = _column(df, col, path).to_numpy()
    return out


def _long(df, spec: LongMapping, path, score_prefix: str):
    import pandas as pd

    # long
    cols = spec.columns
    for key in ("image_id", "label", "target", "score"):
        if key not in cols:
            raise InputError(f"mapping: columns.{key} is required for the long format")
    for key in cols.values():
        _column(df, key, path)
    labels = df[cols["label"]].astype(str).map(lambda v: spec.labels.get(v, label_id(v)))
    long = pd.DataFrame(
        {
            "image_id": df[cols["image_id"]].astype(str),
            "label": labels,
            "target": df[cols["target"]],
            "score": df[cols["score"]],
        }
    )
    dup = long.duplicated(["image_id", "label"])
    if dup.any():
        raise InputError(
            f"{path}: image {long['image_id'][dup].iloc[0]!r} has label {long['label'][dup].iloc[0]!r} twice"
        )
    wide_y = long.pivot(index="image_id", columns="label", values="target")
    wide_p = long.pivot(index="image_id", columns="label", values="score")
    if wide_p.isna().any().any():
        raise InputError(
            f"{path}: some images lack a score for some labels", hint="every image needs every label's score"
        )
    out = pd.DataFrame({"image_id": wide_y.index.astype(str)})
    per_image = df.drop_duplicates(cols["image_id"]).set_index(
        df[cols["image_id"]].astype(str).drop_duplicates().to_numpy()
    )
    pid = _patient(per_image, spec.patient_id, path)
    if pid is not None:
        out["patient_id"] = pid.loc[out["image_id"]].to_numpy()
    for name, col in spec.attrs.items():
        out[name] = _column(per_image, col, path).loc[out["image_id"]].to_numpy()
    for lab in wide_y.columns:
        out[LABEL_PREFIX + lab] = wide_y[lab].to_numpy()
        out[score_prefix + lab] = wide_p[lab].to_numpy()
    return out
