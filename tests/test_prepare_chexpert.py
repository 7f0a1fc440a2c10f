"""`fairscan prepare chexpert`: the published split on the real train.csv, the paper's cohort, the official split."""

import json

import openpyxl
import pandas as pd
import pytest

from fairscan.data.chexpert import prepare_chexpert
from fairscan.data.splits import patients_disjoint
from fairscan.data.synthetic import DEMO_NAME, make_synthetic
from fairscan.schema import CHEXPERT_LABELS, read_manifest
from tests.conftest import shared_file

LABEL_NAMES = list(CHEXPERT_LABELS.values())
DEMO_HEADER = ["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"]


def write_demo_xlsx(path, rows):
    """A demographics file in the layout of CHEXPERT DEMO.xlsx, written with openpyxl."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("CHEXPERT DEMO")
    sheet.append(DEMO_HEADER)
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def write_train_csv(path, rows):
    """train.csv in CheXpert's layout; rows: (patient number, study, view file, Frontal/Lateral, AP/PA, sex)."""
    records = []
    for patient, study, view, fl, appa, sex in rows:
        rec = {"Path": f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/{view}", "Sex": sex, "Age": 50,
               "Frontal/Lateral": fl, "AP/PA": appa}  # fmt: skip
        rec.update({name: None for name in LABEL_NAMES})
        rec["Cardiomegaly"] = 1.0
        records.append(rec)
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def test_published_split_on_the_real_train_csv(tmp_path, run_cli):
    """Exactly the paper's images and patients; race from a demographics file we build in the DEMO layout."""
    folder = shared_file("chexpert", "train.csv.gz").parent
    shared_file("chexpert", "chexpert_split_2021_08_20.csv.gz")
    spellings = [("White", "Non-Hispanic/Non-Latino"), ("Black or African American", "Not Hispanic"),
                 ("Asian, non-Hispanic", "Non-Hispanic/Non-Latino"), ("Other", "Non-Hispanic/Non-Latino")]  # fmt: skip
    demo = write_demo_xlsx(
        tmp_path / DEMO_NAME,
        [(f"patient{i:05d}", "Male", 60, *spellings[i % 4]) for i in range(1, 2001)],
    )
    code, out, err = run_cli(
        "prepare", "chexpert", folder, "-d", demo, "--split", "published", "--out", tmp_path / "m"
    )
    assert code == 0, err
    m = read_manifest(tmp_path / "m")
    assert m["split"].value_counts().to_dict() == {"train": 76205, "test": 38240, "validate": 12673}
    assert m["patient_id"].nunique() == 42884
    assert m.groupby("split")["patient_id"].nunique().to_dict() == {
        "train": 25730,
        "validate": 4288,
        "test": 12866,
    }
    assert patients_disjoint(m["patient_id"], m["split"]) == []
    assert m["sex"].value_counts().to_dict() == {"Male": 74682, "Female": 52436}
    assert set(m["view"]) == {"AP", "PA"}
    # race: only patients 1..2000 have a row, a quarter of them "Other"; everyone else is kept, race missing
    number = m["patient_id"].str.slice(7).astype(int)
    with_race = number.le(2000) & number.mod(4).ne(3)
    assert m["race"].notna().equals(with_race)
    record = json.loads((tmp_path / "m" / "prepare.json").read_text())
    assert record["race_missing"]["images"] == int((~with_race).sum())
    assert record["options"]["split"] == "published" and record["dropped"] == []
    assert f"{int((~with_race).sum())} image(s)" in err and "kept with a missing race" in err
    assert "76205" in out and "kept with a missing race" in out
    assert record["inputs"]["split_file"]["sha256"]


def test_paper_cohort_rules_on_a_hand_built_train_csv(tmp_path):
    write_train_csv(
        tmp_path / "train.csv",
        [
            (1, 1, "view1_frontal.jpg", "Frontal", "AP", "Female"),  # kept
            (1, 1, "view2_lateral.jpg", "Lateral", None, "Female"),  # lateral
            (2, 1, "view1_frontal.jpg", "Frontal", "PA", "Male"),  # kept
            (3, 1, "view1_frontal.jpg", "Frontal", "LL", "Male"),  # not AP/PA
            (4, 1, "view1_frontal.jpg", "Frontal", "AP", "Male"),  # race Other
            (5, 1, "view1_frontal.jpg", "Frontal", "AP", "Male"),  # Hispanic
            (6, 1, "view1_frontal.jpg", "Frontal", "AP", "Male"),  # no demographics row
            (7, 2, "view1_frontal.jpg", "Frontal", "AP", "Unknown"),  # kept, sex missing
        ],
    )
    demo = write_demo_xlsx(
        tmp_path / DEMO_NAME,
        [
            ("patient00001", "Female", 50, "White, non-Hispanic", "Non-Hispanic/Non-Latino"),
            ("patient00002", "Male", 50, "Black or African American", "Not Hispanic"),
            ("patient00003", "Male", 50, "White", "Non-Hispanic/Non-Latino"),
            ("patient00004", "Male", 50, "Other", "Non-Hispanic/Non-Latino"),
            ("patient00005", "Male", 50, "White, Hispanic", "Hispanic/Latino"),
            ("patient00007", "Male", 50, "Asian - Historical Conv", "Non-Hispanic/Non-Latino"),
        ],
    )
    prepared = prepare_chexpert(tmp_path, demographics=demo, split="random", seed=0)
    m = prepared.manifest
    assert m["patient_id"].tolist() == ["patient00001", "patient00002", "patient00007"]
    assert m["race"].tolist() == ["White", "Black", "Asian"]
    assert m["sex"].isna().tolist() == [False, False, True]
    assert (
        m["path"].tolist()[0] == "train/patient00001/study1/view1_frontal.jpg"
    )  # relative to the CSV's folder
    assert prepared.image_root == tmp_path.resolve()
    reasons = {d["reason"]: (d["images"], d.get("values")) for d in prepared.dropped}
    assert reasons == {
        "lateral views": (1, {"Lateral": 1}),
        "frontal views other than AP/PA": (1, {"LL": 1}),
        "patients missing from the demographics file": (1, None),
        "race not White/Asian/Black (column PRIMARY_RACE)": (1, {"Other": 1}),
        "ethnicity not Non-Hispanic (column ETHNICITY)": (1, {"Hispanic/Latino": 1}),
    }
    kept_all = prepare_chexpert(tmp_path, demographics=demo, split="random", all_races=True).manifest
    assert len(kept_all) == 6 and kept_all["race"].isna().sum() == 2  # Other and no row: race missing


@pytest.fixture(scope="module")
def synthetic_chexpert(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("chexpert"), layout="chexpert", patients=150, seed=3)


def test_random_split_is_seeded_and_patient_disjoint(synthetic_chexpert):
    demo = synthetic_chexpert.parent / DEMO_NAME
    a = prepare_chexpert(synthetic_chexpert, demographics=demo, seed=1).manifest
    b = prepare_chexpert(synthetic_chexpert, demographics=demo, seed=1).manifest
    c = prepare_chexpert(synthetic_chexpert, demographics=demo, seed=2).manifest
    assert a.equals(b) and not a["split"].equals(c["split"])
    assert patients_disjoint(a["patient_id"], a["split"]) == []
    shares = a.groupby("split")["patient_id"].nunique() / a["patient_id"].nunique()
    assert shares["train"] == pytest.approx(0.6, abs=0.01) and shares["test"] == pytest.approx(0.3, abs=0.01)
    assert set(a["race"]) == {"White", "Asian", "Black"} and set(a["view"]) <= {"AP", "PA"}


def test_official_split_uses_valid_csv_as_test(synthetic_chexpert):
    demo = synthetic_chexpert.parent / DEMO_NAME
    m = prepare_chexpert(
        synthetic_chexpert, demographics=demo, split="official", validate_fraction=0.2
    ).manifest
    valid = pd.read_csv(synthetic_chexpert / "valid.csv")
    train = pd.read_csv(synthetic_chexpert / "train.csv")
    assert (m["split"] == "test").sum() == len(valid)  # every image of valid.csv, laterals included
    assert (m["split"] != "test").sum() == len(train)  # train.csv as it is, split 80/20 by patient
    assert patients_disjoint(m["patient_id"], m["split"]) == []
    test_labels = m.loc[m["split"] == "test", [f"label_{k}" for k in CHEXPERT_LABELS]]
    assert set(test_labels.stack().unique()) <= {0.0, 1.0}


def test_label_policy_reaches_the_manifest(synthetic_chexpert):
    demo = synthetic_chexpert.parent / DEMO_NAME
    raw = pd.read_csv(synthetic_chexpert / "train.csv")
    n_uncertain = int((raw["Edema"] == -1).sum())
    frames = {
        p: prepare_chexpert(
            synthetic_chexpert, demographics=demo, split="official", label_policy=p, blank="mask"
        ).manifest
        for p in ("u-zeros", "u-ones", "ignore")
    }
    train = {p: f[f["split"] != "test"]["label_edema"] for p, f in frames.items()}
    assert (train["u-ones"] == 1).sum() - (train["u-zeros"] == 1).sum() == n_uncertain
    assert train["ignore"].isna().sum() - train["u-zeros"].isna().sum() == n_uncertain
    assert train["u-zeros"].isna().sum() == int(raw["Edema"].isna().sum())  # blanks masked
