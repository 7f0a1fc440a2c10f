"""MIMIC-CXR-JPG 2.0.0 with demographics from MIMIC-IV.

Inputs, in the folder ``root`` (``physionet.org/files/mimic-cxr-jpg/2.0.0``; ``.csv`` or ``.csv.gz``):
``mimic-cxr-2.0.0-metadata.csv`` (one row per image: ``dicom_id, subject_id, study_id, ViewPosition, StudyDate``,
...), ``mimic-cxr-2.0.0-chexpert.csv`` (one row per study: ``subject_id, study_id`` and the 14 CheXpert
observations, coded as in CheXpert) and ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, study_id, subject_id,
split``). Images: ``files/p{first 2 digits of subject_id}/p{subject_id}/s{study_id}/{dicom_id}.jpg``.

``mimic_iv``: a MIMIC-IV folder holding ``admissions.csv`` and ``patients.csv`` (also in its ``hosp/`` (v2+)
or ``core/`` (v1.0) subfolder). Race from admissions (``race``, or ``ethnicity`` in v1.0; see
:mod:`fairscan.data.demographics` for the rule, which drops patients with inconsistent race); sex from
``patients.gender``; age at the study = ``anchor_age + (year of StudyDate - anchor_year)`` (MIMIC shifts both
dates by the same amount), or ``anchor_age`` when the metadata has no StudyDate.

The cohort (as the reference preprocessing): AP/PA views of studies that have a CheXpert label row, patients
with a consistent race mapping to White/Black/Asian. ``all_races`` keeps every AP/PA image with race left missing
where it does not map (for pre-training pools; MIMIC-IV is then optional). Split ``official`` (the split file)
or ``random`` (fairscan's 60/10/30 by patient).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.data.demographics import mimic_race
from fairscan.data.labels import apply_label_policy, check_policy, coded_labels
from fairscan.data.manifest import DropLog, Prepared, read_csv_checked, require_unique
from fairscan.data.splits import PAPER_FRACTIONS, check_fractions, patients_disjoint, split_patients
from fairscan.errors import InputError
from fairscan.schema import CHEXPERT_LABELS, SPLITS

if TYPE_CHECKING:
    import pandas as pd

PREFIX = "mimic-cxr-2.0.0-"
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_LABELS.values())
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")


def find_file(folder: Path, name: str, *, subfolders=("",), what: str) -> Path:
    for sub in subfolders:
        for suffix in ("", ".gz"):
            path = folder / sub / (name + suffix)
            if path.is_file():
                return path
    raise InputError(f"{folder}: no {name} (or {name}.gz) here", hint=f"pass the folder that holds {what}")


def read_tables(root: Path, policy: str, blank: str) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Metadata joined with the study labels; images whose study has no label row are marked ``has_labels``."""

    what = "MIMIC-CXR-JPG 2.0.0 (physionet.org/files/mimic-cxr-jpg/2.0.0)"
    files = {key: find_file(root, f"{PREFIX}{key}.csv", what=what) for key in ("metadata", "chexpert")}
    meta = read_csv_checked(
        files["metadata"], METADATA_COLUMNS, what=f"{PREFIX}metadata.csv", dtype={"dicom_id": str}
    )
    require_unique(
        meta, "dicom_id", files["metadata"], hint="each row is one image: remove the repeated rows"
    )
    raw = read_csv_checked(files["chexpert"], LABEL_COLUMNS, what=f"{PREFIX}chexpert.csv")
    dup = raw.duplicated(["subject_id", "study_id"])
    if dup.any():
        raise InputError(
            f"{files['chexpert']}: study {raw['study_id'][dup].iloc[0]} has more than one row",
            hint="the labels file has one row per (subject_id, study_id): remove the repeats",
        )
    labels = apply_label_policy(coded_labels(raw, dict(CHEXPERT_LABELS), files["chexpert"]), policy, blank)
    labels[["subject_id", "study_id"]] = raw[["subject_id", "study_id"]]
    df = meta.merge(labels, on=["subject_id", "study_id"], how="left", indicator=True)
    df["has_labels"] = df.pop("_merge") == "both"
    return df, files


def read_mimic_iv(folder: Path, log_inputs: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(patients, race per subject, the admissions column race came from) from a MIMIC-IV folder."""
    what = "MIMIC-IV's admissions.csv and patients.csv (its hosp/ or core/ folder)"
    subs = ("", "hosp", "core")
    adm_path = find_file(folder, "admissions.csv", subfolders=subs, what=what)
    pat_path = find_file(folder, "patients.csv", subfolders=subs, what=what)
    log_inputs.update(admissions=adm_path, patients=pat_path)
    admissions = read_csv_checked(adm_path, ("subject_id",), what="MIMIC-IV admissions.csv")
    race, column = mimic_race(admissions, adm_path)
    patients = read_csv_checked(pat_path, PATIENT_COLUMNS, what="MIMIC-IV patients.csv")
    require_unique(patients, "subject_id", pat_path, hint="patients.csv has one row per subject_id")
    return patients, race, column


def prepare_mimic(
    root: str | os.PathLike,
    *,
    mimic_iv: str | os.PathLike | None = None,
    split: str = "official",
    seed: int = 0,
    fractions=PAPER_FRACTIONS,
    label_policy: str = "u-zeros",
    blank: str = "zero",
    all_races: bool = False,
) -> Prepared:
    """The MIMIC-CXR-JPG manifest (see the module docstring)."""
    import pandas as pd

    check_policy(label_policy, blank)
    root = Path(root)
    if root.is_file():
        root = root.parent
    df, inputs = read_tables(root, label_policy, blank)
    log = DropLog(str(inputs["metadata"]))
    options = {
        "split": split,
        "seed": seed,
        "label_policy": label_policy,
        "blank": blank,
        "all_races": all_races,
    }
    warnings: list[str] = []
    df["patient_id"] = df["subject_id"].astype("int64").astype("string")

    df = log.keep(df, df["has_labels"], f"studies without a row in {PREFIX}chexpert.csv")
    df = log.keep(
        df, df["ViewPosition"].isin(("AP", "PA")), "views other than AP/PA", values=df["ViewPosition"]
    )

    if mimic_iv is None:
        if not all_races:
            raise InputError(
                "the MIMIC-CXR cohort needs race, sex and age from MIMIC-IV",
                hint="pass --mimic-iv DIR (the folder with admissions.csv and patients.csv), or --all-races "
                "for a pre-training pool without demographics",
            )
        warnings.append(
            "no MIMIC-IV folder: sex, age and race are missing (fine for pre-training, not for audits)"
        )
        df["sex"], df["age"], df["race"] = pd.NA, float("nan"), pd.NA
    else:
        patients, race, options["race_column"] = read_mimic_iv(Path(mimic_iv), inputs)
        df = _demographics(df, patients, race, log, all_races)

    if split == "official":
        split_path = find_file(root, f"{PREFIX}split.csv", what="MIMIC-CXR-JPG 2.0.0")
        inputs["split"] = split_path
        df = _official_split(df, split_path, log)
        shared = patients_disjoint(df["patient_id"], df["split"])
        if shared:
            warnings.append(
                f"{len(shared)} patient(s) are in more than one split of the split file, e.g. {shared[0]}"
            )
    elif split == "random":
        options["fractions"] = list(check_fractions(fractions))
        df["split"] = split_patients(df["patient_id"], options["fractions"], seed)
    else:
        raise InputError(f"unknown MIMIC split {split!r}", hint="use official or random")

    sid, study = df["patient_id"], df["study_id"].astype("int64").astype("string")
    df["path"] = "files/p" + sid.str.slice(0, 2) + "/p" + sid + "/s" + study + "/" + df["dicom_id"] + ".jpg"
    df["image_id"], df["study_id"], df["view"] = df["dicom_id"], study, df["ViewPosition"]
    return Prepared(
        manifest=df,
        dataset="mimic",
        image_root=root.resolve(),
        options=options,
        inputs=inputs,
        dropped=log.entries,
        warnings=warnings,
    )


def _demographics(df, patients, race, log: DropLog, all_races: bool) -> pd.DataFrame:
    import pandas as pd

    df = df.merge(race, on="subject_id", how="left").merge(
        patients[list(PATIENT_COLUMNS)], on="subject_id", how="left"
    )
    df["sex"] = df["gender"].astype("string").str.strip().map({"M": "Male", "F": "Female"}).astype("string")
    age = pd.to_numeric(df["anchor_age"], errors="coerce")
    if "StudyDate" in df.columns:
        year = pd.to_numeric(df["StudyDate"], errors="coerce") // 10000
        age = (age + year - pd.to_numeric(df["anchor_year"], errors="coerce")).fillna(age)
    df["age"] = age.astype("float64")
    if all_races:
        return df
    hint = "check that admissions.csv belongs to the MIMIC-IV release matching MIMIC-CXR"
    df = log.keep(df, df["race_raw"].notna(), "patients without a race in admissions.csv", hint=hint)
    df = log.keep(
        df,
        df["consistent"].astype(bool),
        "patients with inconsistent race across admissions",
        values=df["race_raw"],
        hint=hint,
    )
    return log.keep(
        df,
        df["race"].notna(),
        "race not WHITE / BLACK/AFRICAN AMERICAN / ASIAN",
        values=df["race_raw"],
        hint=hint,
    )


def _official_split(df: pd.DataFrame, path: Path, log: DropLog) -> pd.DataFrame:
    splits = read_csv_checked(path, SPLIT_COLUMNS, what=f"{PREFIX}split.csv", dtype={"dicom_id": str})
    require_unique(splits, "dicom_id", path, hint="the split file has one row per dicom_id")
    values = splits["split"].astype("string").str.strip()
    unknown = sorted(set(values.dropna()) - set(SPLITS))
    if unknown:
        raise InputError(f"{path}: column 'split' has values outside {'/'.join(SPLITS)}: {unknown}")
    lookup = dict(zip(splits["dicom_id"], values, strict=True))
    df = df.assign(split=df["dicom_id"].map(lookup).astype("string"))
    return log.keep(df, df["split"].notna(), f"images not in {PREFIX}split.csv")
