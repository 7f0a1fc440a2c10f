"""Bad input: each case exits 2 with a message naming the file, the column and the fix, and writes nothing."""

import shutil

import pandas as pd
import pytest

from fairscan.data.synthetic import DEMO_NAME, make_synthetic


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("errors"), patients=30, seed=9)


@pytest.fixture
def dataset(pristine, tmp_path):
    """A private copy of the synthetic CheXpert CSVs and demographics (no images needed)."""
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    for name in ("train.csv", "valid.csv"):
        shutil.copy(pristine / name, root / name)
    shutil.copy(pristine.parent / DEMO_NAME, tmp_path / DEMO_NAME)
    return root


def run_chexpert(run_cli, root, *extra, demo=None):
    out = root.parent / "out"
    code, stdout, err = run_cli(
        "prepare", "chexpert", root, "-d", demo or root.parent / DEMO_NAME, "--out", out, *extra
    )
    return code, err, out


def edit_csv(path, change):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(df).to_csv(path, index=False)


def assert_refused(code, err, out, *needles):
    assert code == 2, err
    assert "Error:" in err and "hint:" in err
    flat = " ".join(err.split())
    for needle in needles:
        assert needle in flat, (needle, flat)
    assert not (out / "manifest.parquet").exists() and not (out / "prepare.json").exists()


def test_missing_column(dataset, run_cli):
    edit_csv(dataset / "train.csv", lambda df: df.drop(columns=["AP/PA"]))
    assert_refused(
        *run_chexpert(run_cli, dataset), "train.csv", "missing column(s) 'AP/PA'", "rename the columns back"
    )


def test_renamed_column(dataset, run_cli):
    edit_csv(dataset / "train.csv", lambda df: df.rename(columns={"Frontal/Lateral": "Frontal_Lateral"}))
    assert_refused(*run_chexpert(run_cli, dataset), "'Frontal_Lateral' looks like 'Frontal/Lateral'")


def test_unknown_label_value(dataset, run_cli):
    def change(df):
        df.loc[2, "Edema"] = "2.0"
        return df

    edit_csv(dataset / "train.csv", change)
    assert_refused(
        *run_chexpert(run_cli, dataset), "train.csv", "column 'Edema'", "'2.0'", "line 4", "blank it"
    )


def test_demographics_without_patient(dataset, run_cli):
    demo = dataset.parent / "demo.csv"
    pd.read_excel(dataset.parent / DEMO_NAME).rename(columns={"PATIENT": "ID"}).to_csv(demo, index=False)
    assert_refused(*run_chexpert(run_cli, dataset, demo=demo), "demo.csv", "'PATIENT'", "CHEXPERT DEMO.xlsx")


def test_duplicate_patient_in_demographics(dataset, run_cli):
    demo = dataset.parent / "demo.csv"
    people = pd.read_excel(dataset.parent / DEMO_NAME)
    pd.concat([people, people.head(1)]).to_csv(demo, index=False)
    assert_refused(
        *run_chexpert(run_cli, dataset, demo=demo),
        "demo.csv",
        "'PATIENT'",
        "duplicate",
        "one row per patient",
    )


def test_duplicate_paths(dataset, run_cli):
    edit_csv(dataset / "train.csv", lambda df: pd.concat([df, df.head(2)]))
    assert_refused(
        *run_chexpert(run_cli, dataset), "train.csv", "column 'Path'", "duplicate", "remove the repeated rows"
    )


def test_split_file_that_does_not_fit(dataset, run_cli):
    n = len(pd.read_csv(dataset / "train.csv"))
    split = dataset.parent / "split.csv"
    pd.DataFrame({"index": [0, 1, n + 5], "split": ["train", "test", "validate"]}).to_csv(split)
    assert_refused(
        *run_chexpert(run_cli, dataset, "--split", split),
        "split.csv",
        "column 'index'",
        f"0..{n - 1}",
        "another version",
    )
    pd.DataFrame({"index": [0, 0], "split": ["train", "test"]}).to_csv(split)
    assert_refused(*run_chexpert(run_cli, dataset, "--split", split), "split.csv", "repeats row 0")
    pd.DataFrame({"index": [0, 1], "split": ["train", "holdout"]}).to_csv(split)
    assert_refused(
        *run_chexpert(run_cli, dataset, "--split", split), "split.csv", "column 'split'", "holdout"
    )


def test_published_split_offline_and_absent(dataset, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRSCAN_OFFLINE", "1")
    assert_refused(
        *run_chexpert(run_cli, dataset, "--split", "published"), "offline", "chexpert_split_2021_08_20.csv"
    )


def test_empty_after_filtering(dataset, run_cli):
    demo = dataset.parent / "demo.csv"
    pd.read_excel(dataset.parent / DEMO_NAME).assign(PRIMARY_RACE="Other").to_csv(demo, index=False)
    assert_refused(
        *run_chexpert(run_cli, dataset, demo=demo),
        "no images are left",
        "race not White/Asian/Black",
        "PRIMARY_RACE",
    )


def test_missing_inputs_and_options(dataset, run_cli, tmp_path):
    assert_refused(*run_chexpert(run_cli, tmp_path / "nowhere"), "no train.csv here")
    assert_refused(*run_chexpert(run_cli, dataset, demo=tmp_path / "none.xlsx"), "no such demographics file")
    (tmp_path / "broken.xlsx").write_bytes(b"not a workbook")
    assert_refused(
        *run_chexpert(run_cli, dataset, demo=tmp_path / "broken.xlsx"), "broken.xlsx", "Excel workbook"
    )
    assert_refused(*run_chexpert(run_cli, dataset, "--labels", "u-twos"), "--labels: Input should be 'u-zeros'")
    assert_refused(*run_chexpert(run_cli, dataset, "--fractions", "0.5,0.5,0.5"), "summing to 1")
    (dataset / "valid.csv").unlink()
    assert_refused(*run_chexpert(run_cli, dataset, "--split", "official"), "valid.csv", "not found")


def test_a_failed_run_leaves_an_earlier_result_alone(dataset, run_cli):
    code, err, out = run_chexpert(run_cli, dataset)
    assert code == 0, err
    before = (out / "manifest.parquet").read_bytes(), (out / "prepare.json").read_bytes()
    edit_csv(dataset / "train.csv", lambda df: df.drop(columns=["Sex"]))
    code, err, out = run_chexpert(run_cli, dataset)
    assert code == 2 and "'Sex'" in err
    assert ((out / "manifest.parquet").read_bytes(), (out / "prepare.json").read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.parquet",
        "prepare.json",
    ]  # no temporary files left


def test_nih_and_mimic_bad_input(tmp_path, run_cli):
    nih = make_synthetic(tmp_path / "n", layout="nih", patients=10, seed=1)
    edit_csv(
        nih / "Data_Entry_2017_v2020.csv",
        lambda df: df.assign(**{"Finding Labels": "Cardiomegaly|Pneumonitis"}),
    )
    code, _, err = run_cli("prepare", "nih", nih, "--out", tmp_path / "o")
    assert_refused(
        code, err, tmp_path / "o", "Data_Entry_2017_v2020.csv", "'Finding Labels'", "'Pneumonitis'"
    )
    code, _, err = run_cli("prepare", "mimic", tmp_path / "n", "--out", tmp_path / "o")
    assert_refused(code, err, tmp_path / "o", "no mimic-cxr-2.0.0-metadata.csv", "MIMIC-CXR-JPG")
