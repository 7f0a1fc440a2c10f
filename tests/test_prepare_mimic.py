"""`fairscan prepare mimic`: the MIMIC-CXR-JPG layout with MIMIC-IV demographics in both race spellings."""

import json
import shutil

import pandas as pd
import pytest

from fairscan.data.mimic import prepare_mimic
from fairscan.data.splits import patients_disjoint
from fairscan.data.synthetic import MIMIC_IV, make_synthetic
from fairscan.errors import InputError
from fairscan.schema import read_manifest


@pytest.fixture(scope="module")
def synthetic_mimic(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("mimic"), layout="mimic", patients=120, seed=2)


def mimic_iv(root):
    return root.parents[1] / MIMIC_IV


def test_cohort_from_the_real_layout(synthetic_mimic, tmp_path, run_cli):
    code, out, err = run_cli(
        "prepare", "mimic", synthetic_mimic, "--mimic-iv", mimic_iv(synthetic_mimic), "--out", tmp_path / "m"
    )
    assert code == 0, err
    m = read_manifest(tmp_path / "m")
    assert set(m["race"]) <= {"White", "Black", "Asian"} and set(m["view"]) <= {"AP", "PA"}
    assert patients_disjoint(m["patient_id"], m["split"]) == []
    assert all((synthetic_mimic / p).is_file() for p in m["path"])
    assert m["path"].iloc[0].startswith(f"files/p{m['patient_id'].iloc[0][:2]}/p{m['patient_id'].iloc[0]}/s")
    # age at the study: anchor_age + (study year - anchor_year)
    meta = pd.read_csv(synthetic_mimic / "mimic-cxr-2.0.0-metadata.csv.gz").set_index("dicom_id")
    patients = pd.read_csv(mimic_iv(synthetic_mimic) / "hosp" / "patients.csv.gz").set_index("subject_id")
    row = m.iloc[0]
    year = meta.loc[row["image_id"], "StudyDate"] // 10000
    p = patients.loc[int(row["patient_id"])]
    assert row["age"] == p["anchor_age"] + year - p["anchor_year"]
    reasons = {d["reason"] for d in json.loads((tmp_path / "m" / "prepare.json").read_text())["dropped"]}
    assert {"views other than AP/PA", "patients with inconsistent race across admissions"} <= reasons
    assert "dropped (and why)" in out


def test_v1_ethnicity_column_in_core_folder(synthetic_mimic, tmp_path):
    core = tmp_path / "mimiciv" / "core"
    core.mkdir(parents=True)
    hosp = mimic_iv(synthetic_mimic) / "hosp"
    pd.read_csv(hosp / "admissions.csv.gz").rename(columns={"race": "ethnicity"}).to_csv(
        core / "admissions.csv", index=False
    )
    shutil.copy(hosp / "patients.csv.gz", core / "patients.csv.gz")
    v1 = prepare_mimic(synthetic_mimic, mimic_iv=tmp_path / "mimiciv")
    v2 = prepare_mimic(synthetic_mimic, mimic_iv=mimic_iv(synthetic_mimic))
    assert v1.options["race_column"] == "ethnicity" and v2.options["race_column"] == "race"
    assert v1.manifest["race"].equals(v2.manifest["race"])


def test_inconsistent_patients_are_dropped(synthetic_mimic):
    admissions = pd.read_csv(mimic_iv(synthetic_mimic) / "hosp" / "admissions.csv.gz")
    n_races = admissions.dropna(subset=["race"]).groupby("subject_id")["race"].nunique()
    inconsistent = set(n_races.index[n_races > 1].astype(str))
    assert inconsistent  # the generator plants some
    m = prepare_mimic(synthetic_mimic, mimic_iv=mimic_iv(synthetic_mimic)).manifest
    assert not inconsistent & set(m["patient_id"])


def test_pool_use_without_mimic_iv(synthetic_mimic):
    with pytest.raises(InputError, match="needs race") as err:
        prepare_mimic(synthetic_mimic)
    assert "--all-races" in err.value.hint
    prepared = prepare_mimic(synthetic_mimic, all_races=True, split="random")
    assert prepared.manifest["race"].isna().all() and prepared.warnings
