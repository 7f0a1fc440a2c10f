"""The features table, in one place: `fairscan embed` writes it through :func:`write_features`; `probe` and
`inspect` read it through :func:`read_features`.

One row per image: ``image_id`` (unique), ``patient_id``, the attribute columns (``sex``, ``age``, ``race``,
...), ``label_<id>`` per label (1, 0, empty = masked) and the features ``feat_0 .. feat_<d-1>``. Parquet files
carry their provenance (model, weights, pooling, manifest) in the key-value metadata, as predictions do.

Outside tables are read as they are: the columns to analyse can be named by a pattern with ``{i}`` (Glocker et
al.'s ``PCA Mode {i}``), and a table without ``image_id`` is identified by its row numbers (and says so).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.errors import InputError
from fairscan.schema import LABEL_PREFIX, LOGIT_PREFIX, PROB_PREFIX

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from fairscan.schema import Predictions

FEATURES_SCHEMA = "fairscan.features/1"
FEATURE_PREFIX = "feat_"
FEATURE_PATTERN = FEATURE_PREFIX + "{i}"
SCORE_PREFIX = "score_"  # --from-scores: a predictions file's outputs (as logits) used as features
_ID_COLUMNS = ("image_id", "patient_id", "path", "study_id", "split")


@dataclass
class Features:
    """A validated features table: ``frame`` holds every column, ``columns`` names the features, in order."""

    frame: pd.DataFrame
    columns: list[str]
    source: str = "features"
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def matrix(self) -> np.ndarray:
        import numpy as np

        return self.frame[self.columns].to_numpy(dtype=np.float64)

    @property
    def has_patients(self) -> bool:
        return "patient_id" in self.frame.columns and self.frame["patient_id"].notna().all()

    def patients(self, why: str) -> np.ndarray:
        """Patient codes (0..P-1) per row; ``why`` says in the error what needs them."""
        import numpy as np
        import pandas as pd

        if not self.has_patients:
            raise InputError(
                f"{self.source}: no patient_id column (or it has blanks), which {why} needs",
                hint="add patient_id (one id per patient; images of one patient share it)",
            )
        return pd.factorize(self.frame["patient_id"])[0].astype(np.int64)

    @property
    def attribute_columns(self) -> list[str]:
        """The columns that are neither features, ids nor labels: what a hint lists as attributes."""
        skip = set(self.columns) | set(_ID_COLUMNS)
        return [c for c in self.frame.columns if c not in skip and not str(c).startswith(FEATURE_PREFIX)]

    def rows(self, keep) -> Features:
        """The same table restricted to the rows ``keep`` (a boolean mask or positions)."""
        import numpy as np

        keep = np.asarray(keep)
        frame = self.frame[keep] if keep.dtype == bool else self.frame.iloc[keep]
        return replace(self, frame=frame.reset_index(drop=True), notes=list(self.notes))


def _pattern_regex(pattern: str, flag: str) -> re.Pattern:
    if pattern.count("{i}") != 1:
        raise InputError(
            f"{flag} {pattern!r} must hold {{i}} once, where the columns' numbers go",
            hint='e.g. --components "PCA Mode {i}" for columns PCA Mode 1, PCA Mode 2, ...',
        )
    head, tail = pattern.split("{i}")
    return re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$")


def feature_columns(
    df: pd.DataFrame,
    pattern: str | None = None,
    count: int | None = None,
    *,
    source: str = "features",
    flag: str = "--features",
) -> list[str]:
    """The columns a pattern names (``feat_{i}`` by default), ordered by their number; the first ``count``."""
    regex = _pattern_regex(pattern or FEATURE_PATTERN, flag)
    found = sorted(
        ((int(m.group(1)), str(c)) for c in df.columns if (m := regex.match(str(c)))), key=lambda t: t[0]
    )
    if not found:
        others = [str(c) for c in df.columns][:12]
        raise InputError(
            f"{source}: no column matches {flag} {pattern!r}"
            if pattern
            else f"{source}: no feature columns (feat_0, feat_1, ...)",
            hint="features files are written by `fairscan embed`; name other columns with a pattern, e.g. "
            f'{flag} "PCA Mode {{i}}". Columns here: {", ".join(others)}'
            + (" ..." if len(df.columns) > 12 else ""),
        )
    if count is not None and len(found) < count:
        raise InputError(
            f"{source}: {flag} {pattern or FEATURE_PATTERN!r} matches {len(found)} column(s), {count} asked for",
            hint=f"ask for at most {len(found)}",
        )
    return [c for _, c in found[:count]]


def validate_features(
    df: pd.DataFrame,
    source: str | os.PathLike = "features",
    *,
    pattern: str | None = None,
    count: int | None = None,
    flag: str = "--features",
) -> Features:
    """Check a features table; return it with ``image_id`` and ``patient_id`` as strings."""
    import numpy as np
    import pandas as pd

    source = str(source)
    if df.empty:
        raise InputError(f"{source}: the table has no rows")
    columns = feature_columns(df, pattern, count, source=source, flag=flag)
    out = df.copy()
    notes = []
    if "image_id" in out.columns:
        dup = out["image_id"][out["image_id"].duplicated()]
        if len(dup):
            raise InputError(
                f"{source}: column image_id must be unique; {dup.nunique()} value(s) repeat, e.g. {dup.iloc[0]!r}",
                hint="each row is one image: drop or rename the duplicates",
            )
        out["image_id"] = out["image_id"].astype(str)
    else:
        out.insert(0, "image_id", np.arange(len(out)).astype(str))
        notes.append("no image_id column: rows are identified by their row numbers")
    if "patient_id" in out.columns:
        out["patient_id"] = out["patient_id"].astype("string")
    for col in columns:
        values = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{source}: feature column {col!r} has a missing, infinite or non-numeric value at row {i} "
                f"({out[col].iloc[i]!r})",
                hint="every feature of every row must be a finite number: drop or recompute those rows",
            )
        out[col] = values
    for col in [c for c in out.columns if str(c).startswith(LABEL_PREFIX)]:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    return Features(frame=out, columns=columns, source=source, notes=notes)


def read_features(
    path: str | os.PathLike, *, pattern: str | None = None, count: int | None = None, flag: str = "--features"
) -> Features:
    """Read and validate a features table (parquet or CSV)."""
    from fairscan.io import parquet_metadata, read_table

    df = read_table(path, dtype={"image_id": str, "patient_id": str})
    features = validate_features(df, path, pattern=pattern, count=count, flag=flag)
    features.provenance = parquet_metadata(path)
    return features


def write_features(df: pd.DataFrame, path: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write a features table (validated first) atomically; parquet files carry ``provenance``."""
    from fairscan.io import write_table

    validate_features(df, path)
    return write_table(df, path, metadata={"schema": FEATURES_SCHEMA, **(provenance or {})})


def from_predictions(preds: Predictions) -> Features:
    """A predictions table's disease outputs as features (``score_<id>``, as logits: probabilities squash the
    tails that a linear probe reads), beside its ids, attributes and labels."""
    import numpy as np

    frame = preds.frame.copy()
    columns = []
    for lab in preds.labels:
        p = np.clip(preds.p(lab), 1e-7, 1 - 1e-7)  # logit of 0 or 1 would be infinite
        frame[SCORE_PREFIX + lab] = np.log(p) - np.log1p(-p)
        columns.append(SCORE_PREFIX + lab)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith((PROB_PREFIX, LOGIT_PREFIX))])
    return Features(frame=frame, columns=columns, source=preds.source, provenance=preds.provenance)


def subgroups(features: Features, name: str, age_bins: list[float]) -> tuple[np.ndarray, list[str]]:
    """Group codes per row (-1 = missing) and group names of attribute ``name``, as the audit forms them
    (numeric columns such as age in bins, canonical orders for sex and race, ``sex+race`` intersections)."""
    from fairscan.fairness.groups import INTERSECT, build_attributes

    for part in name.split(INTERSECT):
        if part.strip() not in features.frame.columns:
            raise InputError(
                f"{features.source}: no column {part.strip()!r} to read subgroups from",
                hint=f"columns that could be attributes: {', '.join(map(str, features.attribute_columns)) or '(none)'}",
            )
    (attr,) = build_attributes(features.frame, [name], age_bins, features.source)
    return attr.codes, list(attr.groups)


def first_per_patient(features: Features) -> Features:
    """Each patient's first row (in file order): tests that assume independent rows need one per patient."""
    patients = features.patients("--per-patient first")
    import numpy as np

    _, first = np.unique(patients, return_index=True)
    kept = features.rows(np.sort(first))
    kept.notes.append(f"kept each patient's first row: {len(features.frame):,} rows -> {len(kept.frame):,}")
    return kept


def dedupe_features(features: Features, by: str) -> Features:
    """One row per image by column ``by`` (the predictions layer's :func:`~fairscan.schema.dedupe`)."""
    from fairscan.schema import dedupe, repeated_images

    kept = dedupe(features.frame, by, source=features.source)
    repeats = repeated_images(features.frame, by)
    notes = [*features.notes, *([repeats.deduped_note()] if repeats else [])]
    return replace(features, frame=kept, notes=notes)


def resolve_settings(cls, settings, names_key: str, names, overrides: dict, what: str):
    """``settings`` (or ``cls``'s defaults) under the keyword overrides of a library call, ``names`` (a
    string or a list: the targets or attributes) under ``names_key``; validation errors as one InputError."""
    from pydantic import ValidationError

    base = (settings or cls()).model_dump()
    if names is not None:
        base[names_key] = [names] if isinstance(names, str) else list(names)
    base.update(overrides)
    try:
        return cls(**base)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{what} setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
