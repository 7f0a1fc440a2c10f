"""CheXpert: ``train.csv`` / ``valid.csv`` of the small or full release plus the demographics file.

Split modes (``split``):

- ``random`` (the paper's cohort, fairscan's own split): Frontal views with AP/PA in {AP, PA}, race mapped by
  the substring rule (see :mod:`fairscan.data.demographics`), ethnicity Non-Hispanic; then a seeded 60/10/30
  split by patient. ``all_races`` keeps every frontal AP/PA image, race left missing where it does not map (for
  pre-training pools).
- ``published`` or a file path: the published split file selects rows of ``train.csv`` by index, as they are,
  with no re-filtering; race is annotated from the demographics and rows whose race does not map are kept with a
  missing race (and counted in a warning).
- ``official``: every row of ``train.csv`` split by patient into train/validate (``validate_fraction``), and
  ``valid.csv`` (the radiologist-labelled 234 images) as test; race annotated as for ``published``.

Sex and age come from ``train.csv`` (``Unknown`` sex is missing); race from ``PRIMARY_RACE`` of the
demographics file. Paths are stored relative to the folder holding ``train.csv`` (the CSV's own leading
``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` segment is dropped), so a renamed folder still works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.data import demographics as demo
from fairscan.data.labels import apply_label_policy, check_policy, coded_labels
from fairscan.data.manifest import DropLog, Prepared, read_csv_checked, require_unique
from fairscan.data.splits import (
    PAPER_FRACTIONS,
    check_fractions,
    find_published,
    read_split_file,
    split_patients,
    train_validate,
)
from fairscan.errors import InputError
from fairscan.schema import CHEXPERT_LABELS

if TYPE_CHECKING:
    import pandas as pd

CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS.values())
CSV_WHAT = "CheXpert's train.csv"
SPLIT_MODES = ("random", "published", "official")
_PREFIX_RE = r"^CheXpert-v1\.0[^/]*/"  # the release folder the CSV's paths start with
_REL_RE = r"(train|valid|test)/patient\d+/study\d+/[^/]+"


def find_train_csv(root: str | os.PathLike) -> Path:
    """``root`` itself when it is a file, else ``train.csv`` (or ``train.csv.gz``) inside it."""
    root = Path(root)
    if root.is_file():
        return root
    for name in ("train.csv", "train.csv.gz"):
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"{root}: no train.csv here",
        hint="pass the CheXpert folder that holds train.csv (e.g. CheXpert-v1.0-small), or the CSV itself",
    )


def read_chexpert_csv(path: Path, policy: str, blank: str) -> pd.DataFrame:
    """One CheXpert CSV as manifest columns (no split, no race yet) plus the raw Frontal/Lateral and AP/PA."""
    import pandas as pd

    raw = read_csv_checked(path, CSV_COLUMNS, what=CSV_WHAT, dtype={"Path": str, "Sex": str})
    require_unique(raw, "Path", path, hint="each row is one image: remove the repeated rows")
    rel = raw["Path"].astype("string").str.strip().str.replace(_PREFIX_RE, "", regex=True)
    bad = ~rel.str.fullmatch(_REL_RE).fillna(False).astype(bool)
    if bad.any():
        raise InputError(
            f"{path}: column 'Path' has {int(bad.sum())} value(s) not shaped like "
            f"CheXpert-v1.0-small/train/patientNNNNN/studyN/viewN_frontal.jpg, e.g. {raw['Path'][bad].iloc[0]!r}",
            hint="the Path column must be the one CheXpert ships; do not edit it",
        )
    study = rel.str.replace(
        r"^[^/]+/(patient\d+/study\d+)/.*$", r"\1", regex=True
    )  # vectorised, unlike split
    sex = raw["Sex"].astype("string").str.strip()
    ap_pa, frontal = (
        raw["AP/PA"].astype("string").str.strip(),
        raw["Frontal/Lateral"].astype("string").str.strip(),
    )
    labels = apply_label_policy(coded_labels(raw, CHEXPERT_LABELS, path), policy, blank)
    df = pd.DataFrame(
        {
            "image_id": rel,
            "path": rel,
            "patient_id": study.str.replace(r"/.*$", "", regex=True),
            "study_id": study,
            "view": ap_pa.fillna(frontal),
            "sex": sex.where(sex.isin(("Male", "Female"))),
            "age": pd.to_numeric(raw["Age"], errors="coerce"),
            "frontal_lateral": frontal,
            "ap_pa": ap_pa,
        },
        index=raw.index,
    )
    return pd.concat([df, labels], axis=1)


def annotate_race(df: pd.DataFrame, demographics: pd.DataFrame) -> pd.DataFrame:
    """Adds ``race`` (by the substring rule), the raw ``PRIMARY_RACE`` and ``ETHNICITY``, and ``has_demo``."""
    table = demographics.set_index("PATIENT")[["PRIMARY_RACE", "ETHNICITY"]]
    out = df.join(table, on="patient_id")
    out["has_demo"] = out["patient_id"].isin(table.index)
    out["race"] = demo.chexpert_race(out["PRIMARY_RACE"])
    return out


def prepare_chexpert(
    root: str | os.PathLike,
    *,
    demographics: str | os.PathLike,
    split: str = "random",
    seed: int = 0,
    fractions=PAPER_FRACTIONS,
    validate_fraction: float = 0.1,
    label_policy: str = "u-zeros",
    blank: str = "zero",
    all_races: bool = False,
) -> Prepared:
    """The CheXpert manifest (see the module docstring for the split modes)."""
    check_policy(label_policy, blank)
    train_csv = find_train_csv(root)
    demo_path = Path(demographics)
    people = demo.read_chexpert_demographics(demo_path)
    df = annotate_race(read_chexpert_csv(train_csv, label_policy, blank), people)
    inputs = {"train_csv": train_csv, "demographics": demo_path}
    options = {"split": split, "seed": seed, "label_policy": label_policy, "blank": blank}
    log = DropLog(str(train_csv))
    warnings: list[str] = []

    if split == "random":
        fractions = check_fractions(fractions)
        options.update(fractions=list(fractions), all_races=all_races)
        df = _cohort(df, log, demo_path, all_races)
        df["split"] = split_patients(df["patient_id"], fractions, seed)
    elif split == "official":
        valid_csv = train_csv.with_name("valid.csv" + (".gz" if train_csv.name.endswith(".gz") else ""))
        if not valid_csv.is_file():
            raise InputError(
                f"{valid_csv}: not found; split 'official' uses valid.csv as the test set",
                hint="put valid.csv beside train.csv, or use --split random / published",
            )
        inputs["valid_csv"] = valid_csv
        options["validate_fraction"] = validate_fraction
        df["split"] = train_validate(df["patient_id"], validate_fraction, seed)
        test = annotate_race(read_chexpert_csv(valid_csv, label_policy, blank), people)
        test["split"] = "test"
        df = _concat(df, test, valid_csv)
    else:  # published, or a split file
        if split != "published" and not Path(split).is_file():
            raise InputError(
                f"--split {split!r} is neither a split mode nor a file",
                hint=f"use {', '.join(SPLIT_MODES)}, or the path of a split file (columns index, split)",
            )
        split_file = find_published(train_csv.parent) if split == "published" else Path(split)
        inputs["split_file"] = split_file
        options["split"] = "published" if split == "published" else "file"
        chosen = read_split_file(split_file, len(df), train_csv)
        df = df.iloc[chosen["index"].to_numpy()].copy()
        df["split"] = chosen["split"].to_numpy()

    race_missing = _race_missing(df)
    if split != "random":  # the random split's cohort filters drop (or, with all_races, keep by choice) them
        warnings += _race_warning(race_missing)
    return Prepared(
        manifest=df,
        dataset="chexpert",
        image_root=train_csv.parent.resolve(),
        options=options,
        inputs=inputs,
        dropped=log.entries,
        warnings=warnings,
        extra={"race_missing": race_missing},
    )


def _cohort(df: pd.DataFrame, log: DropLog, demo_path: Path, all_races: bool) -> pd.DataFrame:
    """The paper's cohort filters, in order, each logged with what it dropped."""
    df = log.keep(df, df["frontal_lateral"] == "Frontal", "lateral views", values=df["frontal_lateral"])
    df = log.keep(df, df["ap_pa"].isin(("AP", "PA")), "frontal views other than AP/PA", values=df["ap_pa"])
    if all_races:
        return df
    fix = f"check that {demo_path} is CHEXPERT DEMO.xlsx for this release (PATIENT ids like patient00001)"
    df = log.keep(df, df["has_demo"], "patients missing from the demographics file", hint=fix)
    df = log.keep(
        df,
        df["race"].notna(),
        "race not White/Asian/Black (column PRIMARY_RACE)",
        values=df["PRIMARY_RACE"],
        hint=f"no PRIMARY_RACE in {demo_path} contains Black, White or Asian; {fix}",
    )
    return log.keep(
        df,
        demo.chexpert_ethnicity_ok(df["ETHNICITY"]),
        "ethnicity not Non-Hispanic (column ETHNICITY)",
        values=df["ETHNICITY"],
        hint=f"the cohort keeps ETHNICITY {' / '.join(demo.CHEXPERT_ETHNICITIES)}; check {demo_path}",
    )


def _concat(train: pd.DataFrame, test: pd.DataFrame, test_source: Path) -> pd.DataFrame:
    import pandas as pd

    shared = sorted(set(train["patient_id"]) & set(test["patient_id"]))
    if shared:
        raise InputError(
            f"{test_source}: patient(s) {', '.join(shared[:3])} are also in train.csv",
            hint="valid.csv and train.csv of one CheXpert release share no patients; are they from the same release?",
        )
    return pd.concat([train, test], ignore_index=True)


def _race_missing(df: pd.DataFrame) -> dict:
    missing = df[df["race"].isna()]
    values = missing["PRIMARY_RACE"].astype("string").fillna("<no demographics row>").value_counts()
    return {
        "images": len(missing),
        "patients": int(missing["patient_id"].nunique()),
        "values": {str(k): int(v) for k, v in values.items()},
    }


def _race_warning(info: dict) -> list[str]:
    if not info["images"]:
        return []
    return [
        f"{info['images']} image(s) of {info['patients']} patient(s) have no race (PRIMARY_RACE does not map, "
        "or no demographics row); they are kept with a missing race (see race_missing)"
    ]
