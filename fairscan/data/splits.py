"""Patient-level splits: fairscan's seeded split, and the published CheXpert split file.

Every split here assigns whole patients, so no patient is ever in two splits. The published split of Glocker
et al. / Gichoya et al. (``chexpert_split_2021_08_20.csv``: columns ``<unnamed>, index, split``, ``index`` the
0-based row number in CheXpert's ``train.csv``) selects 127,118 rows of ``train.csv`` as they are.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.errors import InputError
from fairscan.schema import SPLITS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PAPER_FRACTIONS = (0.6, 0.1, 0.3)  # train / validate / test, by patient (METHOD.md §1)
PUBLISHED_NAME = "chexpert_split_2021_08_20.csv"
PUBLISHED_URL = (
    "https://raw.githubusercontent.com/biomedia-mira/chexploration/main/datafiles/chexpert/" + PUBLISHED_NAME
)
PUBLISHED_COUNTS = {"train": 76205, "validate": 12673, "test": 38240}  # images per split in that file


def split_patients(patients: pd.Series, fractions=PAPER_FRACTIONS, seed: int = 0, names=SPLITS) -> pd.Series:
    """A split name per row, drawn per patient: the sorted unique patients are shuffled with ``seed`` and cut
    at the cumulative ``fractions`` (rounded to whole patients)."""
    import numpy as np
    import pandas as pd

    unique = np.sort(patients.astype(str).unique())
    order = np.random.default_rng(seed).permutation(len(unique))
    cuts = np.round(np.cumsum(fractions)[:-1] * len(unique)).astype(int)
    assigned = np.empty(len(unique), dtype=object)
    for name, chunk in zip(names, np.split(order, cuts), strict=True):
        assigned[chunk] = name
    lookup = dict(zip(unique, assigned, strict=True))
    return pd.Series(patients.astype(str).map(lookup).to_numpy(), index=patients.index, dtype="string")


def train_validate(patients: pd.Series, validate: float = 0.1, seed: int = 0) -> pd.Series:
    """``train`` / ``validate`` per row, by patient."""
    return split_patients(patients, (1 - validate, validate), seed, names=("train", "validate"))


def check_fractions(fractions) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(
            f"split fractions {fractions} must be three non-negative numbers summing to 1",
            hint="e.g. --fractions 0.6,0.1,0.3 (train, validate, test)",
        )
    return fractions


# ------------------------------------------------------------------------------------ the published split


def find_published(near: Path, *, offline: bool | None = None) -> Path:
    """The published split file: beside ``near`` (``.csv`` or ``.csv.gz``), else in fairscan's download cache,
    else downloaded from its public URL and checked against its known counts per split."""
    for folder in (near, _cache_dir()):
        for name in (PUBLISHED_NAME, PUBLISHED_NAME + ".gz"):
            if (folder / name).is_file():
                return folder / name
    offline = _offline() if offline is None else offline
    hint = (
        f"download it from {PUBLISHED_URL} and pass --split PATH "
        f"(or put it beside train.csv as {PUBLISHED_NAME})"
    )
    if offline:
        raise InputError(f"the published split file is not in {near} and fairscan is offline", hint=hint)
    target = _cache_dir() / PUBLISHED_NAME
    try:
        with urllib.request.urlopen(PUBLISHED_URL, timeout=30) as resp:
            data = resp.read()
    except OSError as exc:
        raise InputError(f"cannot download the published split file ({exc})", hint=hint) from exc
    lines = data.decode("utf-8", errors="replace").splitlines()
    found = {name: sum(line.endswith("," + name) for line in lines) for name in PUBLISHED_COUNTS}
    if found != PUBLISHED_COUNTS:
        raise InputError(f"{PUBLISHED_URL}: the download is not the published split ({found})", hint=hint)
    from fairscan.io import atomic_path

    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("FAIRSCAN_OFFLINE", "HF_HUB_OFFLINE"))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fairscan"


def read_split_file(path: str | os.PathLike, n_rows: int, rows_source) -> pd.DataFrame:
    """The split file's ``index`` and ``split`` columns, checked to fit a table of ``n_rows`` rows."""
    import pandas as pd

    from fairscan.data.manifest import read_csv_checked

    df = read_csv_checked(path, ("index", "split"), what="the published split file")
    index = pd.to_numeric(df["index"], errors="coerce")
    fix = f"the split file must list 0-based row numbers of {rows_source} (its {n_rows} rows), each once"
    bad = index.isna() | (index % 1 != 0) | (index < 0) | (index >= n_rows)
    if bad.any():
        first = df["index"][bad].iloc[0]
        raise InputError(
            f"{path}: column 'index' has {int(bad.sum())} value(s) that are not row numbers of {rows_source} "
            f"(0..{n_rows - 1}), e.g. {str(first)!r}",
            hint=f"{fix}; was it made for another version of train.csv?",
        )
    index = index.astype("int64")
    if index.duplicated().any():
        raise InputError(
            f"{path}: column 'index' repeats row {int(index[index.duplicated()].iloc[0])}",
            hint=fix,
        )
    split = df["split"].astype("string").str.strip()
    unknown = sorted(set(split.dropna()) - set(SPLITS)) + (["<blank>"] if split.isna().any() else [])
    if unknown:
        raise InputError(
            f"{path}: column 'split' has values outside {'/'.join(SPLITS)}: {unknown}",
            hint="rename them to train, validate or test",
        )
    return pd.DataFrame({"index": index.to_numpy(), "split": split.to_numpy()})


def patients_disjoint(patients: pd.Series, splits: pd.Series | np.ndarray) -> list[str]:
    """Patients found in more than one split (empty when the split is patient-disjoint)."""
    import pandas as pd

    per = pd.DataFrame({"p": patients.to_numpy(), "s": pd.Series(splits).to_numpy()}).drop_duplicates()
    shared = per["p"][per["p"].duplicated()]
    return sorted(shared.astype(str).unique())
