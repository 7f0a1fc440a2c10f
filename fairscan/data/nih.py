"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or its 2020 revision ``Data_Entry_2017_v2020.csv``) with the
official ``train_val_list.txt`` / ``test_list.txt``.

Labels are NIH's own 14 findings (``|``-separated in ``Finding Labels``, ``No Finding`` for none), always 1 or
0; there is no uncertainty and no race. Sex (M/F) and age come from the CSV; an age above 120 (a known typo in
the 2017 file) is left missing. Split ``official``: the test list is test, the train/val list is split by patient
into train / validate (``validate_fraction``, seeded); ``random``: fairscan's 60/10/30 split by patient.

Images: ``images/<Image Index>`` under the folder holding the CSV (the official archives all unpack there); the
Kaggle layout ``images_001/images/...`` is found too. Paths are stored relative to that folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.data.manifest import DropLog, Prepared, read_csv_checked, require_unique
from fairscan.data.splits import PAPER_FRACTIONS, check_fractions, split_patients, train_validate
from fairscan.errors import InputError
from fairscan.schema import NIH_LABELS

if TYPE_CHECKING:
    import pandas as pd

CSV_NAMES = (
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv.gz",
    "Data_Entry_2017_v2020.csv.gz",
)
CSV_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)
CSV_WHAT = "NIH's Data_Entry_2017.csv"
LIST_NAMES = ("train_val_list.txt", "test_list.txt")
NO_FINDING = "No Finding"
MAX_AGE = 120


def find_csv(root: str | os.PathLike) -> Path:
    root = Path(root)
    if root.is_file():
        return root
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"{root}: no Data_Entry_2017.csv here",
        hint="pass the ChestX-ray14 folder that holds it, or the CSV itself",
    )


def read_nih_csv(path: Path) -> pd.DataFrame:
    """Data_Entry_2017 as manifest columns (no split)."""
    import numpy as np
    import pandas as pd

    raw = read_csv_checked(path, CSV_COLUMNS, what=CSV_WHAT, dtype={"Image Index": str})
    require_unique(raw, "Image Index", path, hint="each row is one image: remove the repeated rows")
    findings = raw["Finding Labels"].astype("string").str.strip().fillna("")
    tokens = findings.str.split("|").explode().str.strip()
    known = {*NIH_LABELS.values(), NO_FINDING}
    unknown = tokens[~tokens.isin(known)]
    if len(unknown):
        pos = unknown.index[0]
        raise InputError(
            f"{path}: column 'Finding Labels' has the unknown finding {unknown.iloc[0]!r} at line {pos + 2}",
            hint=f"findings are |-separated from: {', '.join(sorted(known))}",
        )
    labels = {
        f"label_{lab}": (tokens == name).groupby(level=0).any().reindex(raw.index).to_numpy(dtype=np.float64)
        for lab, name in NIH_LABELS.items()
    }
    patient = pd.to_numeric(raw["Patient ID"], errors="coerce")
    if patient.isna().any():
        raise InputError(f"{path}: column 'Patient ID' has non-numeric values", hint="use the file NIH ships")
    patient = patient.astype("int64").astype("string").str.zfill(8)
    follow = (
        pd.to_numeric(raw["Follow-up #"], errors="coerce")
        .fillna(0)
        .astype("int64")
        .astype("string")
        .str.zfill(3)
    )
    age = pd.to_numeric(raw["Patient Age"].astype("string").str.rstrip("Y"), errors="coerce")
    sex = raw["Patient Gender"].astype("string").str.strip().map({"M": "Male", "F": "Female"})
    df = pd.DataFrame(
        {
            "image_id": raw["Image Index"].astype("string").str.strip(),
            "path": "images/" + raw["Image Index"].astype("string").str.strip(),
            "patient_id": patient,
            "study_id": patient + "_" + follow,
            "view": raw["View Position"].astype("string").str.strip(),
            "sex": sex.astype("string"),
            "age": age.where(age <= MAX_AGE),
            "race": pd.Series(pd.NA, index=raw.index, dtype="string"),
            **labels,
        },
        index=raw.index,
    )
    return df


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(
            f"{path}: no such file",
            hint="split 'official' needs train_val_list.txt and test_list.txt (pass their folder with --lists), "
            "or use --split random",
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def official_split(df: pd.DataFrame, lists_dir: Path, log: DropLog, validate_fraction: float, seed: int):
    """train / validate from train_val_list.txt (by patient), test from test_list.txt."""
    import pandas as pd

    train_val, test = (read_list(lists_dir / name) for name in LIST_NAMES)
    both = set(train_val) & set(test)
    if both:
        raise InputError(
            f"{lists_dir}: {len(both)} image(s) are in both lists, e.g. {sorted(both)[0]}",
            hint="the official lists are disjoint: use the files NIH ships",
        )
    for name, items in zip(LIST_NAMES, (train_val, test), strict=True):
        strangers = set(items) - set(df["image_id"])
        if strangers:
            raise InputError(
                f"{lists_dir / name}: {len(strangers)} image(s) are not in the CSV, e.g. {sorted(strangers)[0]}",
                hint="the lists and Data_Entry_2017.csv must come from the same release",
            )
    in_test, in_train_val = df["image_id"].isin(test), df["image_id"].isin(train_val)
    df = log.keep(df, in_test | in_train_val, "images in neither official list")
    split = pd.Series("test", index=df.index, dtype="string")
    tv = in_train_val.loc[df.index]
    split[tv] = train_validate(df.loc[tv, "patient_id"], validate_fraction, seed)
    return df.assign(split=split)


def prepare_nih(
    root: str | os.PathLike,
    *,
    split: str = "official",
    lists: str | os.PathLike | None = None,
    seed: int = 0,
    fractions=PAPER_FRACTIONS,
    validate_fraction: float = 0.1,
) -> Prepared:
    """The ChestX-ray14 manifest (see the module docstring)."""
    csv = find_csv(root)
    df = read_nih_csv(csv)
    log = DropLog(str(csv))
    options = {"split": split, "seed": seed}
    inputs = {"data_entry": csv}
    if split == "official":
        lists_dir = Path(lists) if lists else csv.parent
        options["validate_fraction"] = validate_fraction
        inputs.update({name: lists_dir / name for name in LIST_NAMES})
        df = official_split(df, lists_dir, log, validate_fraction, seed)
    elif split == "random":
        fractions = check_fractions(fractions)
        options["fractions"] = list(fractions)
        df = df.assign(split=split_patients(df["patient_id"], fractions, seed))
    else:
        raise InputError(f"unknown NIH split {split!r}", hint="use official or random")
    df["path"] = _image_paths(csv.parent, df["path"])
    warnings = []
    n_age = int(df["age"].isna().sum())
    if n_age:
        warnings.append(
            f"{n_age} image(s) have a missing or impossible age (over {MAX_AGE}); age left missing"
        )
    return Prepared(
        manifest=df,
        dataset="nih",
        image_root=csv.parent.resolve(),
        options=options,
        inputs=inputs,
        dropped=log.entries,
        warnings=warnings,
    )


def _image_paths(root: Path, paths: pd.Series) -> pd.Series:
    """``images/NAME`` as given, unless the images sit in the Kaggle layout ``images_NNN/images/NAME``."""
    if (root / "images").is_dir() or not any(root.glob("images_*/images")):
        return paths
    where = {p.name: str(p.relative_to(root)) for p in root.glob("images_*/images/*")}
    return paths.map(lambda p: where.get(p.rsplit("/", 1)[-1], p))
