"""The one schema for fairscan's two tables: manifests (one row per image to train on) and predictions
(one row per image a model scored). Every stage reads and writes them through this module.

Manifest columns: ``image_id`` (unique), ``path``, ``patient_id``, ``study_id``, ``view``, ``sex``
(``Male``/``Female``), ``age`` (years), ``race`` (``White``/``Asian``/``Black`` in the paper's cohort),
``split`` (``train``/``validate``/``test``), and ``label_<id>`` per label (1.0, 0.0, NaN = masked).

Predictions columns: ``image_id`` (unique), ``patient_id``, attribute columns, and per label
``label_<id>`` (1, 0, or empty = masked) plus ``prob_<id>`` in [0, 1] (``logit_<id>`` accepted instead).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

# CheXpert's 14 observations, in train.csv order: id -> the column name in CheXpert's CSVs.
CHEXPERT_LABELS: dict[str, str] = {
    "no_finding": "No Finding",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "lung_opacity": "Lung Opacity",
    "lung_lesion": "Lung Lesion",
    "edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural_effusion": "Pleural Effusion",
    "pleural_other": "Pleural Other",
    "fracture": "Fracture",
    "support_devices": "Support Devices",
}

# NIH ChestX-ray14's own 14 findings: id -> the spelling in Data_Entry_2017.csv's Finding Labels.
NIH_LABELS: dict[str, str] = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "effusion": "Effusion",
    "infiltration": "Infiltration",
    "mass": "Mass",
    "nodule": "Nodule",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis",
    "pleural_thickening": "Pleural_Thickening",
    "hernia": "Hernia",
}

SPLITS = ("train", "validate", "test")
SEXES = ("Male", "Female")
RACES = ("White", "Asian", "Black")
MANIFEST_COLUMNS = ("image_id", "path", "patient_id", "study_id", "view", "sex", "age", "race", "split")
SCHEMA_VERSION = "fairscan.predictions/1"
AUDIT_SCHEMA = "fairscan.audit/2"  # audit.json (docs/audit-json.md)
COMPARISON_SCHEMA = "fairscan.comparison/2"  # several models' audits side by side
OLD_AUDIT_SCHEMAS = ("fairscan.audit/1",)  # still rendered: /2 only added fields (and changed p_value's test)
LABEL_PREFIX, PROB_PREFIX, LOGIT_PREFIX = "label_", "prob_", "logit_"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def shown(value) -> str:
    """A cell's value as an error message shows it: ``-0.2`` or ``'yes'``, never ``np.float64(-0.2)``."""
    if hasattr(value, "item"):
        value = value.item()
    return repr(value)


def label_id(name: str) -> str:
    """A dataset's label spelling as a snake_case id: 'Pleural Effusion' -> 'pleural_effusion'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def label_ids(df: pd.DataFrame, prefix: str = LABEL_PREFIX) -> list[str]:
    """Label ids in column order, from the ``label_<id>`` columns."""
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


# ----------------------------------------------------------------------------------------------- manifests


def validate_manifest(df: pd.DataFrame, source: str | os.PathLike = "manifest") -> pd.DataFrame:
    """Check a manifest against the schema; return it with canonical dtypes."""
    import numpy as np
    import pandas as pd

    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{source}: manifest lacks column(s) {', '.join(missing)}",
            hint="manifests are written by `fairscan prepare`; re-run it, or add the columns",
        )
    labels = label_ids(df)
    if not labels:
        raise InputError(f"{source}: manifest has no label_<id> columns")
    _check_unique(df, "image_id", source)
    bad_split = sorted(set(df["split"].dropna().astype(str)) - set(SPLITS))
    if bad_split or df["split"].isna().any():
        raise InputError(
            f"{source}: column split has values outside {'/'.join(SPLITS)}: {bad_split or ['<empty>']}"
        )
    out = df.copy()
    for col in ("image_id", "path", "patient_id", "study_id", "split"):
        out[col] = out[col].astype(str)
    for col in ("view", "sex", "race"):
        out[col] = out[col].astype("string")
    out["age"] = pd.to_numeric(out["age"], errors="coerce").astype("float64")
    for lab in labels:
        values = pd.to_numeric(out[LABEL_PREFIX + lab], errors="coerce")
        bad = ~(values.isna() | values.isin([0.0, 1.0]))
        if bad.any():
            raise InputError(
                f"{source}: column label_{lab} has values outside 1 / 0 / empty "
                f"(first at image_id {out['image_id'][bad.idxmax()]}: {shown(out[LABEL_PREFIX + lab][bad.idxmax()])})",
                hint="apply a label policy when preparing (see `fairscan prepare --help`)",
            )
        out[LABEL_PREFIX + lab] = values.astype(np.float64)
    return out


def read_manifest(path: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """Read ``manifest.parquet`` (or a folder holding one), optionally only one split."""
    from fairscan.io import read_table

    path = Path(path)
    if path.is_dir():
        path = path / "manifest.parquet"
    df = validate_manifest(read_table(path), path)
    if split is not None:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
        df = df[df["split"] == split].reset_index(drop=True)
        if df.empty:
            raise InputError(f"{path}: the {split} split is empty", hint="check how the manifest was split")
    return df


def _check_unique(df: pd.DataFrame, col: str, source) -> None:
    dup = df[col][df[col].duplicated()]
    if len(dup):
        raise InputError(
            f"{source}: column {col} must be unique; {dup.nunique()} value(s) repeat, e.g. {shown(dup.iloc[0])}",
            hint="each row is one image: drop or rename the duplicates",
        )


# --------------------------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """A validated predictions table: one row per image, probabilities and labels per label id.

    ``frame`` keeps ``image_id``, ``patient_id`` (if present), attribute columns, ``label_<id>`` (float,
    NaN = masked) and ``prob_<id>`` (float in [0, 1]) for every id in ``labels``.
    """

    frame: pd.DataFrame
    labels: list[str]
    source: str = "predictions"
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what reading the file noticed (columns not read, ...)

    @property
    def has_patients(self) -> bool:
        return "patient_id" in self.frame.columns and self.frame["patient_id"].notna().all()

    def y(self, lab: str):
        return self.frame[LABEL_PREFIX + lab].to_numpy(dtype="float64")

    def p(self, lab: str):
        return self.frame[PROB_PREFIX + lab].to_numpy(dtype="float64")

    def has_logits(self, lab: str) -> bool:
        return LOGIT_PREFIX + lab in self.frame.columns

    def logit(self, lab: str):
        """Logits as given, or the logits of the probabilities (+-inf at 0 and 1)."""
        import numpy as np

        if self.has_logits(lab):
            return self.frame[LOGIT_PREFIX + lab].to_numpy(dtype="float64")
        p = self.p(lab)
        with np.errstate(divide="ignore"):
            return np.log(p) - np.log1p(-p)

    def score(self, lab: str):
        """What ranks the images for AUCs: logits when the file has them (probabilities of large logits round
        to exactly 1.0 and would tie), otherwise the probabilities."""
        return self.logit(lab) if self.has_logits(lab) else self.p(lab)

    @property
    def attribute_columns(self) -> list[str]:
        skip = {"image_id", "patient_id", "path", "study_id", "split"}
        return [
            c
            for c in self.frame.columns
            if c not in skip and not c.startswith((LABEL_PREFIX, PROB_PREFIX, LOGIT_PREFIX))
        ]


def validate_predictions(df: pd.DataFrame, source: str | os.PathLike = "predictions") -> Predictions:
    """Check a predictions table against the schema, converting ``logit_<id>`` to ``prob_<id>``."""
    import numpy as np
    import pandas as pd

    source = str(source)
    if df.empty:
        raise InputError(f"{source}: the predictions table has no rows")
    if "image_id" not in df.columns:
        raise InputError(
            f"{source}: missing column image_id",
            hint="a predictions file needs image_id, label_<id> and prob_<id> columns; "
            "map other formats with --mapping (see README, 'The predictions format')",
        )
    _check_unique(df, "image_id", source)
    out = df.copy()
    out["image_id"] = out["image_id"].astype(str)
    if "patient_id" in out.columns:
        out["patient_id"] = out["patient_id"].astype("string")
    labels = label_ids(out)
    score_ids = set(label_ids(out, PROB_PREFIX)) | set(label_ids(out, LOGIT_PREFIX))
    if not labels:
        looks = _unread_columns(out, [])
        raise InputError(
            f"{source}: no label_<id> columns" + (f"; {looks[0]}" if looks else ""),
            hint="each label needs label_<id> (1, 0 or empty) and prob_<id> or logit_<id>",
        )
    for lab in labels:
        if not _ID_RE.match(lab):
            raise InputError(f"{source}: label id {lab!r} is not snake_case (column label_{lab})")
    without_scores = [lab for lab in labels if lab not in score_ids]
    if without_scores:
        looks = _unread_columns(out, without_scores)
        raise InputError(
            f"{source}: label(s) {', '.join(without_scores)} have no prob_<id> or logit_<id> column"
            + (f"; {looks[0]}" if looks else ""),
            hint="add prob_<id> (a probability in [0, 1]) or logit_<id> for each label_<id>",
        )
    for lab in labels:
        ycol = LABEL_PREFIX + lab
        y = pd.to_numeric(out[ycol], errors="coerce")
        non_numeric = out[ycol].notna() & y.isna()
        bad = non_numeric | ~(y.isna() | y.isin([0.0, 1.0]))
        if bad.any():
            i = bad.idxmax()
            raise InputError(
                f"{source}: column {ycol} must hold 1, 0 or empty; row {i} (image_id "
                f"{out['image_id'][i]}) has {shown(out[ycol][i])}",
                hint="recode uncertain labels before auditing (e.g. -1 to empty to mask them)",
            )
        out[ycol] = y.astype(np.float64)
        pcol, lcol = PROB_PREFIX + lab, LOGIT_PREFIX + lab
        if pcol in out.columns:
            p = pd.to_numeric(out[pcol], errors="coerce")
            bad = p.isna() | (p < 0) | (p > 1)
            if bad.any():
                i = bad.idxmax()
                raise InputError(
                    f"{source}: column {pcol} must hold probabilities in [0, 1]; row {i} (image_id "
                    f"{out['image_id'][i]}) has {shown(out[pcol][i])}",
                    hint="give logits as logit_<id> instead, and fill or drop missing predictions",
                )
            out[pcol] = p.astype(np.float64)
        else:
            z = pd.to_numeric(out[lcol], errors="coerce")
            if (~np.isfinite(z)).any():
                i = (~np.isfinite(z)).idxmax()
                raise InputError(
                    f"{source}: column {lcol} has a missing or infinite value at row {i} (image_id "
                    f"{out['image_id'][i]})",
                    hint="fill or drop the rows without a prediction",
                )
            out[lcol] = z.astype(np.float64)
            out[pcol] = 1.0 / (1.0 + np.exp(-out[lcol]))
    return Predictions(frame=out, labels=labels, source=source, notes=_unread_columns(out, labels))


# Prefixes that other tools give label and score columns; fairscan reads label_/prob_/logit_ only.
_LOOKALIKE = re.compile(
    r"^(target|targets|truth|gt|y|true|probability|probabilities|proba|pred|preds|prediction|score|scores|"
    r"p|output|logits?)[_\-. ]",
    re.IGNORECASE,
)


def _unread_columns(frame: pd.DataFrame, labels: list[str]) -> list[str]:
    """A note for columns that look like labels or scores but are not read (``target_edema``)."""
    prefixes = (LABEL_PREFIX, PROB_PREFIX, LOGIT_PREFIX)
    odd = [
        c
        for c in frame.columns
        if isinstance(c, str)
        and not c.startswith(prefixes)
        and (_LOOKALIKE.match(c) or any(c.lower().endswith(("_" + lab, "-" + lab)) for lab in labels))
    ]
    if not odd:
        return []
    return [
        f"column(s) {', '.join(odd)} look like labels or scores but are not read: fairscan reads label_<id>, "
        f"prob_<id> and logit_<id> (rename them, or map the file with --mapping)"
    ]


def read_predictions(path: str | os.PathLike, mapping: dict | None = None) -> Predictions:
    """Read and validate a predictions file; an explicit ``mapping`` converts outside formats first."""
    from fairscan.io import read_table

    if mapping:
        from fairscan.fairness.mapping import apply_mapping

        df = apply_mapping(path, mapping)
    else:
        df = read_table(path, dtype={"image_id": str, "patient_id": str})
    preds = validate_predictions(df, path)
    preds.provenance = _read_provenance(path)
    return preds


def _read_provenance(path) -> dict:
    """Provenance that `predict` and `ensemble` store in the parquet's key-value metadata."""
    from fairscan.io import parquet_metadata

    return parquet_metadata(path)


@dataclass(frozen=True)
class RepeatedImages:
    """Rows that show the same image (the same value of ``column``, e.g. ``path``): a sample drawn with
    replacement, or a file concatenated twice. Copies are not independent images: they narrow intervals and
    weigh some images more than others."""

    column: str
    rows: int
    images: int  # distinct values of the column
    repeated: int  # images with more than one row
    conflicting: int  # repeated images whose copies differ in a label or an attribute

    @property
    def extra_rows(self) -> int:
        return self.rows - self.images

    def note(self) -> str:
        """What to tell a user about a table that still holds the copies."""
        text = (
            f"{self.extra_rows:,} of {self.rows:,} rows repeat {self.repeated:,} images (same {self.column}): "
            f"{self.images:,} distinct images; copies count as independent images unless "
            f"--dedupe {self.column} keeps one row per image"
        )
        return text + self._conflicts()

    def deduped_note(self) -> str:
        """What to tell a user once :func:`dedupe` has kept one row per image."""
        text = (
            f"kept one row per {self.column}: {self.extra_rows:,} repeated rows dropped "
            f"({self.rows:,} rows -> {self.images:,} images)"
        )
        return text + self._conflicts()

    def _conflicts(self) -> str:
        if not self.conflicting:
            return ""
        return (
            f"; {self.conflicting:,} of these images have copies that disagree in a label or an attribute "
            "(the first row is the one kept by --dedupe)"
        )


def _frame(table: Predictions | pd.DataFrame) -> pd.DataFrame:
    return table.frame if isinstance(table, Predictions) else table


def repeated_images(table: Predictions | pd.DataFrame, by: str = "path") -> RepeatedImages | None:
    """The repeated images of a table by column ``by``; None when it has no such column or none repeats."""
    frame = _frame(table)
    if by not in frame.columns:
        return None
    key = frame[by].astype("string")
    if key.isna().any():
        return None  # rows without a path cannot be matched; nothing to say about them
    images = int(key.nunique())
    if images == len(frame):
        return None
    dup = key.duplicated(keep=False)
    repeated = int(key[dup].nunique())
    compare = [c for c in frame.columns if c.startswith(LABEL_PREFIX)]
    if isinstance(table, Predictions):
        compare += [c for c in table.attribute_columns if c != by]
    copies = frame.loc[dup, compare].astype("string").fillna("<NA>").assign(_key=key[dup])
    conflicting = int((copies.groupby("_key").nunique() > 1).any(axis=1).sum()) if compare else 0
    return RepeatedImages(by, len(frame), images, repeated, conflicting)


def dedupe(table: Predictions | pd.DataFrame, by: str = "path", *, source: str | None = None):
    """One row per image: the first row of each value of column ``by``; returns the same kind of table."""
    import dataclasses

    frame = _frame(table)
    source = source or (table.source if isinstance(table, Predictions) else "table")
    if by not in frame.columns:
        raise InputError(
            f"{source}: --dedupe {by}: no column {by!r}",
            hint="name the column that identifies an image (e.g. path); with a --mapping, map it with `path:`",
        )
    key = frame[by].astype("string")
    if key.isna().any():
        raise InputError(
            f"{source}: --dedupe {by}: {int(key.isna().sum())} row(s) have no {by}",
            hint=f"fill {by} for every row, or dedupe by another column",
        )
    kept = frame[~key.duplicated()].reset_index(drop=True)
    if isinstance(table, Predictions):
        return dataclasses.replace(table, frame=kept)
    return kept


def write_predictions(df: pd.DataFrame, path: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write a predictions table (validated first) atomically; parquet files carry ``provenance``."""
    from fairscan.io import write_table

    validate_predictions(df, path)
    return write_table(df, path, metadata={"schema": SCHEMA_VERSION, **(provenance or {})})
