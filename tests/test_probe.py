"""`fairscan probe`: a logistic probe in patient-grouped cross-validation, with a permutation test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairscan.representations.crossval import cross_validate, patient_folds
from fairscan.representations.features import validate_features
from fairscan.representations.permutation import permutation_p, permuted
from fairscan.representations.probe import ProbeSettings, probe
from fairscan.representations.simulate import simulate_features

FAST = dict(folds=3, inner_folds=2, grid=[0.01, 1.0])


def _features(**kw):
    return validate_features(simulate_features(**kw))


def test_a_planted_race_effect_is_found_and_no_effect_is_not():
    """The issue's target: p < 0.01 with a planted effect, p > 0.05 without (seeded)."""
    planted = probe(_features(patients=200, dim=8, shift=1.5, seed=3), "race", permutations=100, **FAST)
    race = planted.probe("race")
    assert race.p_value < 0.01
    assert race.auc[race.classes.index("Black")] > 0.75  # the shifted group stands out
    assert race.auc_macro > 0.6 and race.balanced_accuracy > race.chance
    null = probe(_features(patients=200, dim=8, shift=0.0, seed=3), "race", permutations=100, **FAST)
    assert null.probe("race").p_value > 0.05


def test_the_statistics_equal_a_hand_written_scikit_learn_pipeline():
    """Same folds and C: per-class one-vs-rest AUC, macro mean and balanced accuracy as scikit-learn computes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = _features(patients=150, dim=6, shift=1.0, seed=1)
    y = pd.Categorical(f.frame["race"], categories=["White", "Asian", "Black"]).codes.astype(np.int64)
    groups = pd.factorize(f.frame["patient_id"])[0]
    X = f.matrix()
    s = ProbeSettings(folds=4, grid=[0.3])
    ours = cross_validate(X, y, groups, s, 3)
    aucs, bals = [], []
    for train, test in patient_folds(y, groups, 4, s.seed):
        assert not set(groups[train]) & set(groups[test])  # no patient on both sides
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(
            X[train], y[train]
        )
        proba = model.predict_proba(X[test])
        aucs.append([roc_auc_score(y[test] == c, proba[:, c]) for c in range(3)])
        bals.append(balanced_accuracy_score(y[test], proba.argmax(axis=1)))
    np.testing.assert_allclose(ours.auc, aucs, atol=1e-10)
    np.testing.assert_allclose(ours.balanced_accuracy, bals, atol=1e-10)
    assert ours.macro == pytest.approx(np.mean(aucs), abs=1e-12)


def test_folds_are_over_patients_and_stratified():
    f = _features(patients=300, seed=2)
    y = pd.factorize(f.frame["race"])[0]
    groups = pd.factorize(f.frame["patient_id"])[0]
    folds = patient_folds(y, groups, 5, seed=0)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))  # every row tested once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        for c in range(3):  # each fold holds about a fifth of each class's patients
            share = len(set(groups[test][y[test] == c])) / len(set(groups[y == c]))
            assert 0.1 < share < 0.3
    assert [t.tolist() for _, t in patient_folds(y, groups, 5, seed=0)] == [t.tolist() for _, t in folds]


def test_permutations_move_whole_patients_between_patients_of_the_same_size():
    rng = np.random.default_rng(0)
    patients = np.array([0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 6, 7, 7, 7])
    y = np.array([0, 1, 2, 1, 1, 0, 2, 2, 1, 0, 1, 2, 2, 2, 0])
    seen = set()
    for _ in range(50):
        out = permuted(y, patients, rng)
        assert sorted(out.tolist()) == sorted(y.tolist())  # class counts kept
        seqs = {p: tuple(out[patients == p]) for p in range(8)}
        originals = {p: tuple(y[patients == p]) for p in range(8)}
        for size in (1, 2, 3):
            members = [p for p in range(8) if (patients == p).sum() == size]
            assert sorted(seqs[p] for p in members) == sorted(originals[p] for p in members)
        seen.add(tuple(out))
    assert len(seen) > 10


def test_permutation_p_value_counts_the_observed_as_one_permutation():
    assert permutation_p(0.7, np.array([0.5, 0.6, 0.7, 0.8])) == pytest.approx(3 / 5)
    assert permutation_p(0.9, np.zeros(99)) == pytest.approx(0.01)


def test_the_permutation_test_holds_its_level_under_the_null():
    """Simulation (seeded): features independent of race, 1-3 images per patient with a patient effect, race
    shares 60/25/15. With 19 permutations a level-5% test rejects when the observed statistic is the largest of
    20, which happens with probability exactly 1/20 under exchangeability. 100 datasets: the false-positive rate
    must stay below 0.12 (P(X >= 12) = 0.4% for Binomial(100, 0.05)). benchmarks/calibrate_probe.py runs the
    larger version (README)."""
    s = ProbeSettings(folds=3, grid=[1.0], permutations=19, confounders=False)
    rejections = 0
    for seed in range(100):
        f = _features(patients=90, max_images=3, dim=4, shift=0.0, seed=1000 + seed)
        rejections += probe(f, "race", settings=s).probe("race").p_value <= 0.05
    assert rejections / 100 <= 0.12


def test_an_image_level_split_reads_patients_not_the_attribute():
    """With several images per patient, splitting images puts a patient on both sides: the probe learns the
    patient and its AUC reads too high although the features carry no race at all."""
    f = _features(patients=150, max_images=4, dim=40, shift=0.0, patient_sd=1.0, image_sd=0.2, seed=5)
    y = pd.Categorical(f.frame["race"], categories=["White", "Asian", "Black"]).codes.astype(np.int64)
    X, patients = f.matrix(), pd.factorize(f.frame["patient_id"])[0]
    s = ProbeSettings(folds=5, grid=[10.0])
    by_patient = cross_validate(X, y, patients, s, 3).macro
    by_image = cross_validate(X, y, np.arange(len(y)), s, 3).macro
    assert by_patient < 0.6
    assert by_image > 0.75


def test_the_confounder_check_reads_the_labels_age_and_sex():
    frame = simulate_features(patients=200, dim=4, shift=0.0, seed=7)
    # A label that tracks race: the features say nothing, the labels say a lot.
    rng = np.random.default_rng(0)
    frame["label_tracks_race"] = ((frame["race"] == "Black") ^ (rng.random(len(frame)) < 0.1)).astype(float)
    frame.loc[frame.index[:5], "label_tracks_race"] = np.nan  # a masked label reads 0, with an indicator
    result = probe(validate_features(frame), "race", permutations=0, **FAST)
    conf = result.probe("race").confounders
    assert conf["features"] == [
        "label_no_finding",
        "label_pleural_effusion",
        "label_tracks_race",
        "label_tracks_race masked",
        "age",
        "sex=Male",
        "sex=Female",
    ]
    assert dict(zip(result.probe("race").classes, conf["auc"]))["Black"] > 0.75
    assert result.probe("race").p_value is None
    sex = probe(validate_features(frame), "sex", permutations=0, **FAST).probe("sex")
    assert not any(n.startswith("sex") for n in sex.confounders["features"])


def test_several_targets_and_binned_age_on_the_command_line(run_cli, tmp_path):
    simulate_features(patients=150, dim=6, seed=4).to_parquet(tmp_path / "feats.parquet")
    code, out, err = run_cli(
        "probe",
        tmp_path / "feats.parquet",
        "--target",
        "race",
        "sex",
        "age",
        "--permutations",
        "9",
        "--folds",
        "3",
        "--inner-folds",
        "2",
        "--grid",
        "0.1,1",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["schema"] == "fairscan.probe/1"
    assert [p["target"] for p in d["probes"]] == ["race", "sex", "age"]
    age = d["probes"][2]
    assert age["classes"] == ["<40", "40-60", "60-80", ">=80"] and age["chance"] == 0.25
    for p in d["probes"]:
        assert len(p["auc_macro_folds"]) == 3 and 0.1 <= p["p_value"] <= 1
        assert sum(p["images"].values()) + p["left_out"] == len(pd.read_parquet(tmp_path / "feats.parquet"))
    code, out, _ = run_cli(
        "probe",
        tmp_path / "feats.parquet",
        "--target",
        "race",
        "--permutations",
        "0",
        "--folds",
        "3",
        "--grid",
        "1",
        "--out",
        tmp_path / "rep",
    )
    assert code == 0 and "Macro AUC" in out and "Black" in out
    assert json.loads((tmp_path / "rep" / "probe.json").read_text())["probes"][0]["target"] == "race"
    assert "| race |" in (tmp_path / "rep" / "probe.md").read_text()
    page = (tmp_path / "rep" / "probe.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "Macro AUC" in page


def test_from_scores_probes_a_predictions_files_outputs(run_cli, tmp_path):
    from tests._preds import make_preds

    preds = make_preds(900, labels=("edema", "effusion"), seed=2)
    black = (preds["race"] == "Black").to_numpy()
    for lab in ("edema", "effusion"):  # the scores carry race: Black patients' logits shift up
        z = np.log(preds[f"prob_{lab}"]) - np.log1p(-preds[f"prob_{lab}"]) + 1.5 * black
        preds[f"prob_{lab}"] = 1 / (1 + np.exp(-z))
    preds.to_parquet(tmp_path / "preds.parquet")
    code, out, err = run_cli(
        "probe",
        tmp_path / "preds.parquet",
        "--from-scores",
        "--target",
        "race",
        "--permutations",
        "20",
        "--folds",
        "3",
        "--grid",
        "1",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["features"] == 2
    race = d["probes"][0]
    assert race["auc"]["Black"] > 0.75 and race["p_value"] == pytest.approx(1 / 21)
    assert race["confounders"]["features"][:2] == ["label_edema", "label_effusion"]


def test_fit_on_one_split_and_evaluate_on_another(run_cli, tmp_path):
    train = simulate_features(patients=200, dim=8, shift=2.0, seed=10)
    test = simulate_features(patients=150, dim=8, shift=2.0, seed=11)
    test["patient_id"] = "t" + test["patient_id"]
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    code, out, err = run_cli(
        "probe",
        "--fit-on",
        tmp_path / "train.parquet",
        "--evaluate-on",
        tmp_path / "test.parquet",
        "--target",
        "race",
        "--permutations",
        "100",
        "--inner-folds",
        "2",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    race = d["probes"][0]
    assert d["evaluate_on"].endswith("test.parquet") and d["images"] == len(test)
    assert race["auc"]["Black"] > 0.7 and race["p_value"] < 0.01 and len(race["C"]) == 1
    test["patient_id"] = train["patient_id"].iloc[: len(test)].to_numpy()
    test.to_parquet(tmp_path / "leak.parquet")
    code, _, err = run_cli(
        "probe", "--fit-on", tmp_path / "train.parquet", "--evaluate-on", tmp_path / "leak.parquet"
    )
    assert code == 2 and "in both" in err and "disjoint" in err


def test_bad_inputs_exit_2_with_what_to_do(run_cli, tmp_path):
    good = simulate_features(patients=60, dim=3, seed=0)
    good.to_parquet(tmp_path / "good.parquet")
    good.drop(columns=[c for c in good.columns if c.startswith("feat_")]).to_parquet(
        tmp_path / "nofeat.parquet"
    )
    good.assign(race="White").to_parquet(tmp_path / "white.parquet")
    good.drop(columns=["patient_id"]).to_parquet(tmp_path / "nopat.parquet")
    few = good.copy()
    few.loc[few["race"] == "Black", "race"] = "White"
    few.loc[few.index[:2], "race"] = "Black"  # the first patient only
    few.to_parquet(tmp_path / "few.parquet")
    cases = [
        (["nofeat.parquet"], "no feature columns"),
        (["good.parquet", "--features", "emb_{i}"], "no column matches --features"),
        (["white.parquet"], "one subgroup"),
        (["good.parquet", "--target", "ethnicity"], "no column 'ethnicity'"),
        (["nopat.parquet"], "no patient_id"),
        (["few.parquet"], "class 'Black' has 1 patient(s)"),
        (["good.parquet", "--grid", "0,1"], "positive C"),
        (["good.parquet", "--grid", "a,b"], "give numbers"),
        (["--fit-on", "good.parquet"], "go together"),
        (["good.parquet", "--mapping", "m.yaml"], "--from-scores"),
    ]
    for args, message in cases:
        args = [tmp_path / a if a.endswith(".parquet") else a for a in args]
        code, _, err = run_cli("probe", *args, "--permutations", "0")
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)


def test_processes_share_the_permutations_without_changing_the_result():
    f = _features(patients=100, dim=4, shift=0.5, seed=8)
    kw = dict(folds=3, grid=[1.0], permutations=8, confounders=False)
    one = probe(f, "race", jobs=1, **kw).probe("race")
    two = probe(f, "race", jobs=2, **kw).probe("race")
    assert one.p_value == two.p_value and one.auc_macro == two.auc_macro


def _script(name: str):
    """A benchmark script as a module (benchmarks/ is no package)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module(name)


def test_the_benchmark_and_the_calibration_run_small():
    bench = _script("bench_probe").main(
        ["--images", "300", "--dim", "8", "--folds", "3", "--inner-folds", "2", "--grid", "0.1,1"]
    )
    for side in ("fairscan", "sklearn"):
        run = bench[side][0]
        assert run["seconds"] > 0 and run["peak_mib_above_data"] >= 0 and 0 < run["auc_macro"] < 1
    assert bench["ratio_fastest"] > 0 and bench["workload"]["images"] == 300
    calib = _script("calibrate_probe").main(["--datasets", "2", "--permutations", "2", "--patients", "60"])
    assert calib["datasets"] == 2 and sum(calib["p_histogram"]) == 2
    assert 0 <= calib["patient_permutation"]["rate"] <= 1 and calib["mean_auc_image_folds"] > 0


def test_a_notebook_shows_the_result_as_html():
    """`_repr_html_`: a fragment scoped under .fairscan with each target's macro AUC and balanced accuracy."""
    r = probe(_features(patients=120, shift=1.0, seed=3), ["race", "sex"], permutations=0, **FAST)
    page = r._repr_html_()
    assert page.startswith('<div class="fairscan">') and "<html" not in page
    assert "How well each attribute can be read from the features" in page
    for p in r.probes:
        assert f"{p.auc_macro:.3f}" in page and f"{p.balanced_accuracy:.3f}" in page
    assert page.count("<tr>") >= 1 + len(r.probes)
