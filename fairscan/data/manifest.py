"""What every adapter shares: column checks, the log of dropped rows, the summary statistics, and writing
``DIR/manifest.parquet`` + ``DIR/prepare.json``.

Paths in a manifest: adapters write ``path`` relative to the ``image_root`` recorded in ``prepare.json`` (the
folder the dataset's own CSV paths are relative to), so a moved dataset needs one edit; a pool of several
datasets writes absolute paths. :func:`fairscan.data.images.resolve_image_path` understands both.

``prepare.json`` holds: the dataset and options, ``image_root``, input fingerprints, counts per split x sex x
race, label prevalence per split x subgroup, what was dropped and why (with the offending values, e.g. unknown
race strings), warnings, and any images an image check found missing or unreadable.
"""

from __future__ import annotations

import difflib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.schema import LABEL_PREFIX, MANIFEST_COLUMNS, RACES, SEXES, SPLITS, label_ids

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_NAME, RECORD_NAME = "manifest.parquet", "prepare.json"
MISSING = "missing"  # the key for a missing sex or race in counts


def require_columns(df: pd.DataFrame, required, source, *, what: str = "the official layout") -> None:
    """InputError naming the file, each missing column and a likely renamed spelling of it."""
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    guesses = []
    for col in missing:
        near = difflib.get_close_matches(col, [str(c) for c in df.columns], n=1, cutoff=0.6)
        if near:
            guesses.append(f"{near[0]!r} looks like {col!r}")
    found = f"; {', '.join(guesses)}" if guesses else ""
    raise InputError(
        f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}{found}",
        hint=f"the file must have the columns of {what} ({', '.join(required)}); rename the columns back "
        "or point fairscan at the original file",
    )


def require_unique(df: pd.DataFrame, column: str, source, *, hint: str) -> None:
    dup = df[column][df[column].duplicated()]
    if len(dup):
        raise InputError(
            f"{source}: column {column!r} has {len(dup)} duplicate value(s), e.g. {str(dup.iloc[0])!r}",
            hint=hint,
        )


def read_csv_checked(path: str | os.PathLike, required, *, what: str, **kw) -> pd.DataFrame:
    """A CSV (or .csv.gz) read through fairscan.io, with its required columns checked."""
    from fairscan.io import read_table

    df = read_table(path, **kw)
    require_columns(df, required, path, what=what)
    return df


@dataclass
class DropLog:
    """Keeps the rows that pass each filter and records, per reason, how many images and patients went."""

    source: str
    entries: list[dict] = field(default_factory=list)

    def keep(
        self,
        df: pd.DataFrame,
        mask,
        reason: str,
        *,
        values: pd.Series | None = None,
        hint: str = "check the input files and the options",
    ) -> pd.DataFrame:
        """Rows of ``df`` where ``mask`` holds; ``values`` (e.g. the raw race strings) are counted for the rest."""
        import pandas as pd

        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        dropped = df[~mask]
        if len(dropped):
            entry: dict[str, Any] = {
                "reason": reason,
                "images": len(dropped),
                "patients": int(dropped["patient_id"].nunique()) if "patient_id" in dropped else None,
            }
            if values is not None:
                counts = values[~mask].astype("string").fillna("<blank>").value_counts()
                entry["values"] = {str(k): int(v) for k, v in counts.items()}
            self.entries.append(entry)
        kept = df[mask]
        if kept.empty:
            raise InputError(f"{self.source}: no images are left after dropping {reason}", hint=hint)
        return kept


@dataclass
class Prepared:
    """An adapter's result: the manifest and everything ``prepare.json`` says about how it was made."""

    manifest: pd.DataFrame
    dataset: str
    image_root: Path | None
    options: dict[str, Any]
    inputs: dict[str, Path]
    dropped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()  # manifest columns kept beyond the schema's (e.g. a pool's source)

    def record(self) -> dict[str, Any]:
        return {
            "stage": "prepare",
            "fairscan_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dataset": self.dataset,
            "options": self.options,
            "image_root": str(self.image_root) if self.image_root else None,
            "paths": "relative to image_root" if self.image_root else "absolute",
            "inputs": {role: _fingerprint(p) for role, p in self.inputs.items()},
            **summarize(self.manifest),
            "dropped": self.dropped,
            "warnings": self.warnings,
            **self.extra,
        }


def _fingerprint(path: Path) -> dict[str, Any]:
    from fairscan.io import fingerprint

    path = Path(path).absolute()
    return fingerprint(path) if path.is_file() else {"path": str(path)}


def finish_manifest(df: pd.DataFrame, extra_columns=()) -> pd.DataFrame:
    """The schema's column order (then labels, then ``extra_columns``), a fresh index, canonical dtypes."""
    from fairscan.schema import validate_manifest

    labels = [c for c in df.columns if c.startswith(LABEL_PREFIX)]
    out = df[[*MANIFEST_COLUMNS, *labels, *extra_columns]].reset_index(drop=True)
    return validate_manifest(out)


def write_prepared(prepared: Prepared, out_dir: str | os.PathLike) -> Path:
    """Write ``manifest.parquet`` and ``prepare.json`` (each atomically; everything is computed first)."""
    from fairscan.io import write_json, write_table

    out_dir = Path(out_dir)
    manifest = finish_manifest(prepared.manifest, prepared.extra_columns)
    prepared.manifest = manifest
    record = prepared.record()
    path = write_table(manifest, out_dir / MANIFEST_NAME)
    write_json(out_dir / RECORD_NAME, record)
    return path


def read_record(manifest_dir: str | os.PathLike) -> dict[str, Any]:
    """``prepare.json`` beside a manifest ({} when there is none)."""
    import json

    path = Path(manifest_dir) / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc})", hint="re-run `fairscan prepare` to rewrite it"
        ) from exc


def manifest_dir_of(path: str | os.PathLike) -> Path:
    """The folder of a manifest, given the folder or the manifest file itself."""
    path = Path(path)
    return path.parent if path.suffix == ".parquet" else path


# --------------------------------------------------------------------------------------------- statistics


def summarize(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts per split x sex x race and label prevalence per split x subgroup (the paper's §4.1.1 and §4.4)."""
    return {"counts": counts(manifest), "prevalence": prevalence(manifest)}


def _groups(df: pd.DataFrame, col: str, known) -> pd.Series:
    return df[col].astype("string").where(df[col].isin(known), other=MISSING).fillna(MISSING)


def counts(df: pd.DataFrame) -> dict[str, Any]:
    sex, race = _groups(df, "sex", SEXES), _groups(df, "race", RACES)
    out: dict[str, Any] = {"images": len(df), "patients": int(df["patient_id"].nunique()), "splits": {}}
    for split in SPLITS:
        m = (df["split"] == split).to_numpy()
        if not m.any():
            continue
        table: dict[str, dict[str, int]] = {}
        for (s, r), n in df[m].groupby([sex[m], race[m]]).size().items():
            table.setdefault(str(s), {})[str(r)] = int(n)
        out["splits"][split] = {
            "images": int(m.sum()),
            "patients": int(df.loc[m, "patient_id"].nunique()),
            "sex_race": table,
        }
    return out


def prevalence(df: pd.DataFrame) -> dict[str, Any]:
    """{split: {group: {label: {"positives", "known", "prevalence"}}}}; groups: all, sex=..., race=..."""
    import numpy as np

    labels = label_ids(df)
    y = df[[LABEL_PREFIX + lab for lab in labels]].to_numpy(dtype="float64")
    known, pos = ~np.isnan(y), y == 1.0
    subgroups = {"all": np.ones(len(df), bool)}
    for col, values in (("sex", SEXES), ("race", RACES)):
        for v in values:
            subgroups[f"{col}={v}"] = (df[col] == v).fillna(False).to_numpy(dtype=bool)
    out: dict[str, Any] = {}
    for split in SPLITS:
        in_split = (df["split"] == split).to_numpy()
        if not in_split.any():
            continue
        out[split] = {}
        for name, member in subgroups.items():
            m = in_split & member
            if not m.any():
                continue
            n_known, n_pos = known[m].sum(axis=0), pos[m].sum(axis=0)
            out[split][name] = {
                lab: {
                    "positives": int(n_pos[j]),
                    "known": int(n_known[j]),
                    "prevalence": round(float(n_pos[j] / n_known[j]), 4) if n_known[j] else None,
                }
                for j, lab in enumerate(labels)
            }
    return out


# ------------------------------------------------------------------------------------------- image checks


def drop_bad_images(prepared: Prepared, *, workers: int | None = None, progress=None) -> dict[str, str]:
    """Check every image of ``prepared`` (is it there, does it decode), drop the rows whose image is missing or
    unreadable, and list them in the record (``image_problems``). Returns {path: problem}."""
    import pandas as pd

    from fairscan.data.images import check_images

    df, root = prepared.manifest, prepared.image_root
    files = [str(p if root is None or Path(p).is_absolute() else root / p) for p in df["path"]]
    problems = check_images(files, decode=True, workers=workers, progress=progress)
    if not problems:
        return problems
    kind = pd.Series([problems.get(f, "ok").split(" ")[0] for f in files], index=df.index)
    log = DropLog(prepared.dataset)
    hint = "no image could be read: are the images where the CSV says (image_root in prepare.json)?"
    for what in ("missing", "unreadable"):
        df = log.keep(df, kind.loc[df.index] != what, f"{what} images", hint=hint)
    prepared.manifest = df
    prepared.dropped.extend(log.entries)
    prepared.extra["image_problems"] = [{"path": p, "problem": why} for p, why in sorted(problems.items())]
    prepared.warnings.append(
        f"{len(problems)} missing or unreadable image(s) were dropped (see image_problems)"
    )
    return problems
