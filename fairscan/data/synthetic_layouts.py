"""The real datasets' file layouts, written for a synthetic population (``fairscan.data.synthetic``): CheXpert's
train/valid CSVs and demographics workbook, ChestX-ray14's Data_Entry CSV and lists, MIMIC-CXR-JPG's metadata,
labels and split files with MIMIC-IV's admissions and patients. Each writer returns the table of images to draw
(``file``, ``study_row``, ``lateral``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fairscan.schema import CHEXPERT_LABELS, NIH_LABELS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ROOT_NAMES = {"chexpert": "CheXpert-v1.0-small", "nih": "CXR8", "mimic": "mimic-cxr-jpg/2.0.0"}
DEMO_NAME = "CHEXPERT DEMO.xlsx"
MIMIC_IV = "mimiciv/2.2"


def _coded(rng: np.random.Generator, truth: pd.Series) -> np.ndarray:
    """CheXpert's coding of a true state: 1.0 / -1.0 when present; blank / 0.0 / -1.0 when absent."""
    import numpy as np

    u = rng.random(len(truth))
    present = truth.to_numpy()
    return np.where(
        present,
        np.where(u < 0.9, 1.0, -1.0),
        np.where(u < 0.65, np.nan, np.where(u < 0.95, 0.0, -1.0)),
    )


def _image_rows(studies: pd.DataFrame) -> pd.DataFrame:
    """One row per image: the study's row number and whether it is the lateral view."""
    import pandas as pd

    frontal = pd.DataFrame({"study_row": range(len(studies)), "lateral": False})
    lateral = pd.DataFrame({"study_row": studies.index[studies["lateral"]], "lateral": True})
    return (
        pd.concat([frontal, lateral])
        .sort_values(["study_row", "lateral"], kind="stable")
        .reset_index(drop=True)
    )


def write_chexpert(rng, root: Path, people, studies, labels) -> pd.DataFrame:
    """train.csv, valid.csv (the last ~8% of patients, truth labels) and CHEXPERT DEMO.xlsx beside the root."""
    import numpy as np
    import pandas as pd

    images = _image_rows(studies)
    st = studies.iloc[images["study_row"]].reset_index(drop=True)
    n_valid = max(2, round(0.08 * len(people)))
    valid = st["patient"] >= len(people) - n_valid
    folder = np.where(valid, "valid", "train")
    view = np.where(images["lateral"], "view2_lateral.jpg", "view1_frontal.jpg")
    pid = (st["patient"] + 1).map("patient{:05d}".format)
    rel = pd.Series(folder) + "/" + pid + "/study" + st["study"].astype(str) + "/" + view
    sex = people["sex"].to_numpy()[st["patient"]]
    csv = pd.DataFrame(
        {
            "Path": ROOT_NAMES["chexpert"] + "/" + rel,
            "Sex": sex,
            "Age": st["age"].astype(int),
            "Frontal/Lateral": np.where(images["lateral"], "Lateral", "Frontal"),
            "AP/PA": np.where(images["lateral"], None, st["view"]),
        }
    )
    for lab, name in CHEXPERT_LABELS.items():
        coded = _coded(rng, st[lab])
        truth = st[lab].to_numpy(dtype=float)
        csv[name] = np.where(valid, truth, coded)
        if lab == "no_finding":  # CheXpert records No Finding as 1 or blank
            csv[name] = np.where(st[lab], 1.0, np.where(valid, 0.0, np.nan))
    csv[~valid].to_csv(root / "train.csv", index=False)
    csv[valid].to_csv(root / "valid.csv", index=False)
    _write_demo(root.parent / DEMO_NAME, people)
    return pd.DataFrame({"file": rel, "study_row": images["study_row"], "lateral": images["lateral"]})


def _write_demo(path: Path, people: pd.DataFrame) -> None:
    import openpyxl

    from fairscan.io import atomic_path

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("CHEXPERT DEMO")
    sheet.append(["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"])
    for i, row in enumerate(people.itertuples()):
        if row.has_demo:
            sheet.append([f"patient{i + 1:05d}", row.sex, int(row.age), row.primary_race, row.ethnicity])
    with atomic_path(path) as tmp:
        book.save(tmp)


def write_nih(rng, root: Path, people, studies, labels) -> pd.DataFrame:
    """Data_Entry_2017_v2020.csv, images/*.png and the official lists (split by patient, ~80/20)."""
    import numpy as np
    import pandas as pd

    st = studies  # NIH has frontal images only
    pid = st["patient"] + 1
    index = pid.map("{:08d}".format) + "_" + (st["study"] - 1).map("{:03d}".format) + ".png"
    names = [NIH_LABELS[lab] for lab in labels]
    findings = [
        "|".join(n for n, on in zip(names, row, strict=True) if on) or "No Finding"
        for row in st[labels].to_numpy()
    ]
    w = 1024
    csv = pd.DataFrame(
        {
            "Image Index": index,
            "Finding Labels": findings,
            "Follow-up #": st["study"] - 1,
            "Patient ID": pid,
            "Patient Age": st["age"].astype(int),
            "Patient Gender": people["sex"].str[0].to_numpy()[st["patient"]],
            "View Position": st["view"],
            "OriginalImage[Width": w,
            "Height]": round(w * 1.2),
            "OriginalImagePixelSpacing[x": 0.143,
            "y]": 0.143,
        }
    )
    csv.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    test_patient = rng.random(len(people)) < 0.2
    is_test = test_patient[st["patient"]]
    (root / "test_list.txt").write_text("\n".join(index[is_test]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(index[~is_test]) + "\n")
    return pd.DataFrame({"file": "images/" + index, "study_row": np.arange(len(st)), "lateral": False})


def write_mimic(rng, root: Path, people, studies, labels) -> pd.DataFrame:
    """The metadata, chexpert and split CSVs (.csv.gz) under mimic-cxr-jpg/2.0.0 and MIMIC-IV's hosp/ files."""
    import numpy as np
    import pandas as pd

    images = _image_rows(studies)
    st = studies.iloc[images["study_row"]].reset_index(drop=True)
    subject = 10_000_000 + rng.choice(9_000_000, size=len(people), replace=False)
    study_id = 50_000_000 + rng.choice(9_000_000, size=len(studies), replace=False)
    anchor_year = rng.integers(2110, 2180, size=len(people))
    sid, stid = subject[st["patient"]], study_id[images["study_row"]]
    dicom = ["-".join(f"{v:08x}" for v in rng.integers(0, 2**32, size=5)) for _ in range(len(st))]
    year = anchor_year[st["patient"]] + (st["study"] - 1)
    view = np.where(images["lateral"], "LATERAL", st["view"])
    meta = pd.DataFrame(
        {
            "dicom_id": dicom,
            "subject_id": sid,
            "study_id": stid,
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": view,
            "Rows": 3056,
            "Columns": 2544,
            "StudyDate": year * 10000 + 101 + st["study"].to_numpy(),
            "StudyTime": 120000.0,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": np.where(images["lateral"], "lateral", "postero-anterior"),
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    chex = pd.DataFrame({"subject_id": subject[studies["patient"]], "study_id": study_id})
    for name, lab in sorted((name, lab) for lab, name in CHEXPERT_LABELS.items()):  # alphabetical, as MIMIC
        chex[name] = np.where(studies[lab], 1.0, np.nan) if lab == "no_finding" else _coded(rng, studies[lab])
    chex.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    patient_split = rng.choice(["train", "validate", "test"], size=len(people), p=(0.7, 0.1, 0.2))
    split = pd.DataFrame(
        {"dicom_id": dicom, "study_id": stid, "subject_id": sid, "split": patient_split[st["patient"]]}
    )
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    _write_mimic_iv(rng, root.parents[1] / MIMIC_IV / "hosp", people, subject, anchor_year)
    sub = pd.Series(sid).astype(str)
    files = (
        "files/p"
        + sub.str[:2]
        + "/p"
        + sub
        + "/s"
        + pd.Series(stid).astype(str)
        + "/"
        + pd.Series(dicom)
        + ".jpg"
    )
    return pd.DataFrame({"file": files, "study_row": images["study_row"], "lateral": images["lateral"]})


def _write_mimic_iv(rng, hosp: Path, people, subject, anchor_year) -> None:
    """admissions.csv.gz (1-3 admissions per patient; ``race`` as in MIMIC-IV v2) and patients.csv.gz."""
    import pandas as pd

    hosp.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(people.itertuples()):
        if not row.has_demo:
            continue
        races = row.mimic_race.split("|")
        for k in range(max(len(races), int(rng.integers(1, 4)))):
            rows.append({
                "subject_id": subject[i], "hadm_id": 20_000_000 + len(rows),
                "admittime": f"{anchor_year[i] + k}-03-01 10:00:00", "admission_type": "EW EMER.",
                "insurance": "Medicare", "race": races[min(k, len(races) - 1)],
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(hosp / "admissions.csv.gz", index=False)
    patients = pd.DataFrame(
        {
            "subject_id": subject,
            "gender": people["sex"].str[0],
            "anchor_age": people["age"].astype(int),
            "anchor_year": anchor_year,
            "anchor_year_group": "2014 - 2016",
            "dod": None,
        }
    )
    patients.to_csv(hosp / "patients.csv.gz", index=False)
