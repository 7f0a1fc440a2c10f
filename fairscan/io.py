"""Atomic file writes and table I/O shared by every stage.

Every file fairscan writes goes to a temporary name in the same folder and is renamed into place, so a
killed run never leaves a truncated parquet, JSON or checkpoint behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fairscan.errors import InputError

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; shared datasets want the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def table_format(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    raise InputError(
        f"{path}: unsupported table type",
        hint="use a .parquet or .csv file (a .csv.gz works too)",
    )


def read_table(path: str | os.PathLike, **csv_kwargs: Any):
    """Read a parquet or CSV table, turning every low-level failure into an InputError naming the file."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file", hint="check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a table file")
    fmt = table_format(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", **csv_kwargs)
    except InputError:
        raise
    except Exception as exc:  # pyarrow, pandas and the csv engine raise many unrelated types
        raise InputError(
            f"{path}: cannot be read as {fmt} ({type(exc).__name__}: {exc})",
            hint=f"is it really a {fmt} file? fairscan picks the reader from the file's suffix",
        ) from exc


def write_table(df, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write a DataFrame atomically as parquet or CSV (by suffix). A parquet file carries ``metadata`` (JSON)
    under the key-value key ``fairscan``: the provenance that `predict`, `ensemble` and `embed` leave."""
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet" and metadata is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            meta = {**(table.schema.metadata or {}), b"fairscan": json.dumps(metadata, default=str).encode()}
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep="\t" if fmt == "tsv" else ",")
    return Path(path)


def parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``fairscan`` key-value metadata of a parquet file; {} for other files or when there is none."""
    if not str(path).endswith(".parquet"):
        return {}
    try:
        import pyarrow.parquet as pq

        raw = (pq.read_schema(path).metadata or {}).get(b"fairscan")
        return json.loads(raw) if raw else {}
    except Exception:  # a provenance that cannot be read is no reason to refuse the table
        return {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies an input file in a stage record: name, size and sha256."""
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}


# ------------------------------------------------------------------------------------------ output preflight
# Every output path is checked before any expensive work, so that an unwritable one costs the user nothing.


def _writable(folder: Path) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=effective)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_ancestors(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process can write in."""
    ancestor = _existing_ancestor(path.absolute().parent)
    if not ancestor.is_dir():
        raise InputError(
            f"{option} {path}: {ancestor} is a file, so nothing can be written under it",
            hint=f"give {option} a path whose parent folders are folders",
        )
    if not _writable(ancestor):
        raise InputError(
            f"{option} {path}: the folder {ancestor} is not writable", hint="choose a place you can write to"
        )


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, with exit 2, an output folder that cannot be made or written: a file, a file as a parent, a
    read-only folder. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{option} {path} is a file, not a folder", hint=f"give {option} a folder (made if need be)"
        )
    if path.is_dir():
        if not _writable(path):
            raise InputError(
                f"{option} {path}: the folder is not writable", hint="choose a place you can write to"
            )
    else:
        _check_ancestors(path, option)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse, with exit 2, an output file that cannot be written: a folder, a file as a parent, a read-only
    folder or file, an unsupported table type. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{option} {path} is a folder",
            hint=f"give the file to write, e.g. {path / 'predictions.parquet'}",
        )
    _check_ancestors(path, option)
    if path.exists() and not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
        raise InputError(f"{option} {path} exists and is read-only", hint="remove it, or choose another file")
    return path
