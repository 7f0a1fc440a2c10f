"""The rules behind every cohort: race and ethnicity mapping, label policies, patient-level splits."""

import math

import numpy as np
import pandas as pd
import pytest

from fairscan.data.demographics import chexpert_ethnicity_ok, chexpert_race, mimic_race
from fairscan.data.labels import apply_label_policy, coded_labels
from fairscan.data.splits import patients_disjoint, split_patients, train_validate
from fairscan.errors import InputError

# Every PRIMARY_RACE spelling of CHEXPERT DEMO.xlsx, with the race the substring rule gives (None = dropped).
CHEXPERT_SPELLINGS = {
    "White": "White",
    "White, non-Hispanic": "White",
    "White or Caucasian": "White",
    "White, Hispanic": "White",
    "Black or African American": "Black",
    "Black, non-Hispanic": "Black",
    "Black, Hispanic": "Black",
    "Asian": "Asian",
    "Asian, non-Hispanic": "Asian",
    "Asian, Hispanic": "Asian",
    "Asian - Historical Conv": "Asian",
    "Other": None,
    "Other, Hispanic": None,
    "Other, non-Hispanic": None,
    "Unknown": None,
    "Race and Ethnicity Unknown": None,
    "Patient Refused": None,
    "Native Hawaiian or Other Pacific Islander": None,
    "Native American, non-Hispanic": None,
    "Native American, Hispanic": None,
    "American Indian or Alaska Native": None,
    "Pacific Islander, non-Hispanic": None,
    "Pacific Islander, Hispanic": None,
    # the order Black, White, Asian: a later match overwrites an earlier one; matching is case-sensitive
    "White, Black": "White",
    "Black, Asian": "Asian",
    "White/Asian": "Asian",
    "black": None,
    "WHITE": None,
}


def test_chexpert_race_every_known_spelling():
    spellings = [*CHEXPERT_SPELLINGS, None]
    race = chexpert_race(pd.Series(spellings, dtype="object"))
    got = {s: (None if pd.isna(r) else r) for s, r in zip(spellings, race, strict=True)}
    assert got == {**CHEXPERT_SPELLINGS, None: None}


def test_chexpert_ethnicity_filter():
    values = [
        "Non-Hispanic/Non-Latino",
        "Not Hispanic",
        "Hispanic/Latino",
        "Hispanic",
        "Unknown",
        "Patient Refused",
        None,
    ]
    assert chexpert_ethnicity_ok(pd.Series(values)).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize("column", ["race", "ethnicity"])
def test_mimic_race_both_spellings_and_inconsistent_patients(column):
    admissions = pd.DataFrame(
        {
            "subject_id": [1, 1, 2, 3, 3, 4, 5, 6, 7, 7],
            column: ["WHITE", "WHITE", "BLACK/AFRICAN AMERICAN", "ASIAN", "UNKNOWN", "OTHER",
                     "WHITE - OTHER EUROPEAN", None, "ASIAN", None],
        }
    )  # fmt: skip
    out, used = mimic_race(admissions, "admissions.csv")
    assert used == column
    race = dict(zip(out["subject_id"], out["race"], strict=True))
    consistent = dict(zip(out["subject_id"], out["consistent"], strict=True))
    assert (
        race[1] == "White" and race[2] == "Black" and race[7] == "Asian"
    )  # blanks do not make it inconsistent
    assert not consistent[3] and pd.isna(race[3])  # ASIAN then UNKNOWN: dropped as inconsistent
    assert pd.isna(race[4]) and pd.isna(race[5])  # strings that do not map exactly
    assert 6 not in race  # no race at all


def test_mimic_race_without_the_column():
    with pytest.raises(InputError, match="race"):
        mimic_race(pd.DataFrame({"subject_id": [1], "insurance": ["x"]}), "admissions.csv")


CODED = pd.DataFrame({"Edema": [1.0, 0.0, -1.0, np.nan], "Cardiomegaly": [1.0, 0.0, -1.0, np.nan]})


@pytest.mark.parametrize(
    "policy, blank, edema, cardiomegaly",
    [
        ("u-zeros", "zero", [1, 0, 0, 0], [1, 0, 0, 0]),
        ("u-ones", "zero", [1, 0, 1, 0], [1, 0, 1, 0]),
        ("ignore", "zero", [1, 0, None, 0], [1, 0, None, 0]),
        ("mixed", "zero", [1, 0, 1, 0], [1, 0, 0, 0]),  # LibAUC: U-Ones for Edema (and Atelectasis) only
        ("u-zeros", "mask", [1, 0, 0, None], [1, 0, 0, None]),
        ("ignore", "mask", [1, 0, None, None], [1, 0, None, None]),
    ],
)
def test_label_policies(policy, blank, edema, cardiomegaly):
    coded = coded_labels(CODED, {"edema": "Edema", "cardiomegaly": "Cardiomegaly"}, "train.csv")
    out = apply_label_policy(coded, policy, blank)
    as_list = lambda col: [None if math.isnan(v) else v for v in out[col]]  # noqa: E731
    assert as_list("label_edema") == edema
    assert as_list("label_cardiomegaly") == cardiomegaly


def test_unknown_label_value_names_file_column_and_line():
    df = pd.DataFrame({"Edema": ["1.0", "0.0", "2.0", "maybe"]})
    with pytest.raises(InputError) as err:
        coded_labels(df, {"edema": "Edema"}, "train.csv")
    assert (
        "train.csv" in err.value.message and "'Edema'" in err.value.message and "line 4" in err.value.message
    )
    assert "2 unknown value(s)" in err.value.message
    assert "-1.0 (uncertain)" in err.value.hint


def test_unknown_policy():
    with pytest.raises(InputError, match="unknown label policy"):
        apply_label_policy(pd.DataFrame({"edema": [1.0]}), "u-twos")


def test_split_is_by_patient_seeded_and_near_the_fractions():
    patients = pd.Series([f"p{i // 3}" for i in range(3000)])  # 1000 patients, 3 images each
    split = split_patients(patients, (0.6, 0.1, 0.3), seed=7)
    assert patients_disjoint(patients, split) == []
    per_patient = pd.Series(split.to_numpy(), index=patients).groupby(level=0).first().value_counts()
    assert per_patient.to_dict() == {"train": 600, "test": 300, "validate": 100}
    assert split.equals(split_patients(patients, (0.6, 0.1, 0.3), seed=7))
    assert not split.equals(split_patients(patients, (0.6, 0.1, 0.3), seed=8))
    tv = train_validate(patients, 0.1, seed=0)
    assert set(tv) == {"train", "validate"} and patients_disjoint(patients, tv) == []
