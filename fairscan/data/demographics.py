"""Race and ethnicity rules, and reading the files that carry them.

CheXpert (Glocker et al. / Gichoya et al., METHOD.md §1): ``CHEXPERT DEMO.xlsx`` (columns ``PATIENT, GENDER,
AGE_AT_CXR, PRIMARY_RACE, ETHNICITY``; CSV accepted too). Race comes from case-sensitive substring matches on
``PRIMARY_RACE`` applied in the order Black, White, Asian, a later match overwriting an earlier one ("White,
Black" is White); a string matching none (Other, Unknown, Patient Refused, Native American, ...) has no race.
The cohort keeps only ``ETHNICITY`` in ``Non-Hispanic/Non-Latino`` and ``Not Hispanic``.

MIMIC-CXR (the reference preprocessing of Glocker et al.): race from MIMIC-IV ``admissions.csv``, column
``ethnicity`` (MIMIC-IV v1.0) or ``race`` (v2.0 and later). A patient whose admissions carry more than one
distinct (non-blank) string is inconsistent and has no race; otherwise exactly ``WHITE``,
``BLACK/AFRICAN AMERICAN`` and ``ASIAN`` map to White, Black and Asian and every other string has no race.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

CHEXPERT_RACE_ORDER = ("Black", "White", "Asian")  # later matches overwrite earlier ones
CHEXPERT_ETHNICITIES = ("Non-Hispanic/Non-Latino", "Not Hispanic")
DEMO_REQUIRED = ("PATIENT", "PRIMARY_RACE", "ETHNICITY")  # sex and age come from train.csv
MIMIC_RACES = {"WHITE": "White", "BLACK/AFRICAN AMERICAN": "Black", "ASIAN": "Asian"}
MIMIC_RACE_COLUMNS = ("race", "ethnicity")  # MIMIC-IV v2+ spelling, then v1.0's


def chexpert_race(primary_race: pd.Series) -> pd.Series:
    """White / Asian / Black, or <NA>, from ``PRIMARY_RACE`` by the substring rule."""
    import pandas as pd

    text = primary_race.astype("string")
    race = pd.Series(pd.NA, index=primary_race.index, dtype="string")
    for name in CHEXPERT_RACE_ORDER:
        race[text.str.contains(name, regex=False).fillna(False).astype(bool)] = name
    return race


def chexpert_ethnicity_ok(ethnicity: pd.Series) -> pd.Series:
    return ethnicity.astype("string").isin(CHEXPERT_ETHNICITIES).fillna(False).astype(bool)


def read_chexpert_demographics(path: str | os.PathLike) -> pd.DataFrame:
    """The demographics table (xlsx or CSV), checked: PATIENT, PRIMARY_RACE and ETHNICITY present, PATIENT unique."""
    import pandas as pd

    from fairscan.data.manifest import require_columns, require_unique

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: no such demographics file",
            hint="pass --demographics 'CHEXPERT DEMO.xlsx' (from Stanford AIMI), or a CSV with its columns",
        )
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        try:
            df = pd.read_excel(path, engine="openpyxl", dtype={"PATIENT": str})
        except Exception as exc:  # openpyxl raises many types for a damaged or mislabelled file
            raise InputError(
                f"{path}: cannot be read as an Excel workbook ({type(exc).__name__}: {exc})",
                hint="save it again as .xlsx, or export it to CSV",
            ) from exc
    else:
        from fairscan.io import read_table

        df = read_table(path, dtype={"PATIENT": str})
    require_columns(df, DEMO_REQUIRED, path, what="CHEXPERT DEMO.xlsx")
    df = df.copy()
    df["PATIENT"] = df["PATIENT"].astype("string").str.strip()
    require_unique(
        df, "PATIENT", path, hint="the demographics file has one row per patient; remove the repeats"
    )
    return df


def mimic_race(admissions: pd.DataFrame, source) -> tuple[pd.DataFrame, str]:
    """One row per subject_id: ``race_raw`` (its one string, or the inconsistent ones joined by ' | '),
    ``consistent`` and ``race``; and the column it came from (``race`` or ``ethnicity``)."""
    import pandas as pd

    from fairscan.data.manifest import require_columns

    column = next((c for c in MIMIC_RACE_COLUMNS if c in admissions.columns), None)
    if column is None:
        require_columns(
            admissions, ("subject_id", "race"), source, what="MIMIC-IV admissions.csv (ethnicity in v1.0)"
        )
    require_columns(admissions, ("subject_id",), source, what="MIMIC-IV admissions.csv")
    pairs = admissions[["subject_id", column]].dropna().drop_duplicates()
    pairs[column] = pairs[column].astype("string").str.strip()
    grouped = pairs.groupby("subject_id")[column]
    out = pd.DataFrame({"race_raw": grouped.agg(lambda s: " | ".join(sorted(s))), "n": grouped.nunique()})
    out["consistent"] = out["n"] == 1
    out["race"] = out["race_raw"].map(MIMIC_RACES).astype("string").where(out["consistent"])
    return out.drop(columns="n").reset_index(), column
