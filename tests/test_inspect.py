"""`fairscan inspect`: Glocker et al.'s PCA modes and Kolmogorov-Smirnov tests between subgroups."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ks_2samp

from fairscan.representations.features import validate_features
from fairscan.representations.inspect import inspect
from fairscan.representations.simulate import simulate_features
from tests.conftest import shared_file

# Glocker et al.'s printed "Adjusted p-values" (notebooks/chexpert.bias-inspection.*.ipynb of
# biomedia-mira/cxr-foundation-bias, commit 272c22d): one row per PCA mode; columns disease (1 vs 0),
# Asian-White, Black-Asian, White-Black, Female-Male; Benjamini-Yekutieli over the 20 tests.
PUBLISHED = {
    "chexpert-model": [
        "0.000000 1.000000 0.020582 0.398892 1.000000",
        "0.012141 1.000000 0.000000 0.000000 0.263349",
        "0.000000 0.024602 0.290201 1.000000 1.000000",
        "0.123292 1.000000 0.398892 0.161457 0.147430",
    ],
    "cxr-foundation": [
        "0.000000 0.962124 0.000027 0.000308 0.000000",
        "0.000000 0.001297 0.000000 0.004345 0.001297",
        "0.000000 0.000000 0.000000 1.000000 0.000000",
        "1.000000 0.000000 0.000000 0.000178 0.000000",
    ],
}
COLUMNS = [
    ("label", {"1", "0"}),
    ("race", {"Asian", "White"}),
    ("race", {"Black", "Asian"}),
    ("race", {"White", "Black"}),
    ("sex", {"Female", "Male"}),
]


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_reproduces_glocker_et_al_published_tables(run_cli, model):
    path = shared_file("glocker", f"{model}.embeddings.csv")
    code, out, err = run_cli(
        "inspect",
        path,
        "--components",
        "PCA Mode {i}",
        "--modes",
        "4",
        "--attrs",
        "race",
        "sex",
        "--label",
        "disease_label",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert list(d) == ["schema", "modes", "correction", "tests"]
    assert (d["schema"], d["modes"], d["correction"], len(d["tests"])) == (
        "fairscan.inspect/1",
        4,
        "fdr_by",
        20,
    )
    assert all(list(t) == ["mode", "attr", "a", "b", "ks", "p", "p_adjusted"] for t in d["tests"])
    found = {(t["mode"], t["attr"], frozenset((t["a"], t["b"]))): t["p_adjusted"] for t in d["tests"]}
    for mode, row in enumerate(PUBLISHED[model], start=1):
        ours = [f"{found[(mode, attr, frozenset(pair))]:.6f}" for attr, pair in COLUMNS]
        assert " ".join(ours) == row, f"mode {mode}"
    assert "1,492 row(s) neither 1 nor 0" in err or "1,554 row(s) neither 1 nor 0" in err


def test_ks_statistics_and_corrections_equal_scipy_and_statsmodels():
    """Each test's KS statistic equals scipy's and a direct ECDF computation; the corrections equal statsmodels'
    multipletests (an independent implementation), to 1e-12."""
    from statsmodels.stats.multitest import multipletests

    f = validate_features(simulate_features(patients=200, dim=10, shift=0.8, seed=3))
    for correction in ("fdr_by", "fdr_bh", "holm", "none"):
        r = inspect(f, ["race", "sex"], label="pleural_effusion", pca=3, correction=correction)
        assert r.modes == 3 and len(r.tests) == 3 * (1 + 3 + 1)
        for t in r.tests:
            g = next(g for g in r.groupings if g.attr == t.attr)
            x = r.projection[:, t.mode - 1]
            a, b = x[g.codes == g.groups.index(t.a)], x[g.codes == g.groups.index(t.b)]
            ref = ks_2samp(a, b)
            assert t.ks == pytest.approx(ref.statistic, abs=1e-12) and t.p == pytest.approx(
                ref.pvalue, abs=1e-12
            )
            grid = np.concatenate([a, b])
            ecdf = np.abs(
                np.searchsorted(np.sort(a), grid, "right") / len(a)
                - np.searchsorted(np.sort(b), grid, "right") / len(b)
            )
            assert t.ks == pytest.approx(ecdf.max(), abs=1e-12)
        p = [t.p for t in r.tests]
        expected = p if correction == "none" else multipletests(p, method=correction)[1]
        np.testing.assert_allclose([t.p_adjusted for t in r.tests], expected, atol=1e-12, rtol=0)


def test_pca_modes_find_a_planted_shift_and_nothing_without_one():
    planted = inspect(validate_features(simulate_features(patients=400, dim=6, shift=1.5, seed=1)), ["race", "sex"])
    black = [t for t in planted.tests if t.attr == "race" and "Black" in (t.a, t.b)]
    assert min(t.p_adjusted for t in black) < 1e-6  # the shift moves a leading mode
    assert planted.explained_variance == sorted(planted.explained_variance, reverse=True)
    null = validate_features(simulate_features(patients=400, dim=6, seed=1))
    assert min(t.p_adjusted for t in inspect(null, ["race", "sex"], per_patient="first").tests) > 0.05


def test_one_row_per_patient_holds_the_ks_tests_level_and_all_images_do_not():
    """Simulation (seeded): sex independent of the features, 1-4 images per patient that share a patient effect.
    The KS test takes rows as independent: on every image it rejects far above 5%; on each patient's first
    image it holds its level. 200 datasets: bounds at 0.09 (P(X >= 18) = 0.9% for Binomial(200, 0.05))."""
    rates = {"all": 0, "first": 0}
    for seed in range(200):
        f = validate_features(
            simulate_features(patients=120, max_images=4, dim=1, patient_sd=1.0, image_sd=0.2, seed=seed),
            pattern="feat_{i}",
        )
        for how in rates:
            r = inspect(f, ["sex"], components="feat_{i}", per_patient=how, correction="none")
            rates[how] += r.tests[0].p <= 0.05
    assert rates["first"] / 200 <= 0.09
    assert rates["all"] / 200 >= 0.2


def test_the_label_test_leaves_other_values_out_and_says_how_many():
    frame = simulate_features(patients=100, dim=4, seed=2)
    frame["label_pleural_effusion"] = np.resize([1.0, 0.0, -1.0, np.nan], len(frame))
    r = inspect(validate_features(frame), ["sex"], label="pleural_effusion", pca=2)
    first = r.tests[0]
    assert (first.attr, first.a, first.b) == ("label", "1", "0")
    assert first.n_a + first.n_b + r.label_left_out == len(frame)
    assert (
        r.label_left_out
        == frame["label_pleural_effusion"].isin([-1.0]).sum() + frame["label_pleural_effusion"].isna().sum()
    )
    assert any("neither 1 nor 0 are left out" in n for n in r.notes)
    frame["outcome"] = frame["label_pleural_effusion"]  # any other column is read as it is named
    assert inspect(validate_features(frame), ["sex"], label="outcome", pca=2).tests[0].n_a == first.n_a


def test_per_patient_first_and_dedupe_keep_the_first_rows():
    frame = simulate_features(patients=50, max_images=3, dim=3, seed=4)
    frame["path"] = frame["image_id"]
    frame = frame.loc[np.r_[np.arange(len(frame)), 0, 1, 2]].reset_index(drop=True)  # three rows twice
    frame["image_id"] = [f"row{i}" for i in range(len(frame))]
    f = validate_features(frame)
    r = inspect(f, ["sex"], pca=2)
    assert any("3 of" in n and "--dedupe path" in n for n in r.notes)
    deduped = inspect(f, ["sex"], pca=2, dedupe="path")
    assert deduped.rows == len(frame) - 3 and any("3 repeated rows dropped" in n for n in deduped.notes)
    first = inspect(f, ["sex"], pca=2, per_patient="first")
    assert first.rows == 50 and any("each patient's first row" in n for n in first.notes)


def test_cli_writes_json_markdown_and_a_self_contained_page(run_cli, tmp_path):
    simulate_features(patients=120, dim=6, shift=1.0, seed=5).to_parquet(tmp_path / "feats.parquet")
    args = [
        "inspect",
        tmp_path / "feats.parquet",
        "--attrs",
        "sex",
        "race",
        "--label",
        "pleural_effusion",
        "--tsne",
    ]
    code, out, err = run_cli(*args, "--out", tmp_path / "rep")
    assert code == 0, err
    assert "Kolmogorov-Smirnov" in out and "race" in out and "wrote" in err
    code, js, _ = run_cli(*args[:-1], "--json")
    assert json.loads((tmp_path / "rep" / "inspect.json").read_text()) == json.loads(js)
    md = (tmp_path / "rep" / "inspect.md").read_text()
    assert "| 1 | label_pleural_effusion | 1 vs 0 |" in md
    page = (tmp_path / "rep" / "inspect.html").read_text()
    assert (
        page.count("data:image/svg+xml;base64,") == 2
        and "<script" not in page
        and "http" not in page.split("<style>")[0]
    )
    assert "Kolmogorov-Smirnov tests per mode" in page


def test_tsne_is_seeded():
    f = validate_features(simulate_features(patients=60, dim=5, seed=6))
    one, two = (inspect(f, ["sex"], pca=2, tsne=True, seed=3).tsne for _ in range(2))
    np.testing.assert_array_equal(one, two)


def test_bad_inputs_exit_2_with_what_to_do(run_cli, tmp_path):
    good = simulate_features(patients=60, dim=3, seed=0)
    good.to_parquet(tmp_path / "good.parquet")
    good.drop(columns=[c for c in good.columns if c.startswith("feat_")]).to_parquet(
        tmp_path / "nofeat.parquet"
    )
    good.assign(label_pleural_effusion=1.0).to_parquet(tmp_path / "allpos.parquet")
    cases = [
        (["nofeat.parquet"], "no feature columns"),
        (["good.parquet", "--components", "PCA Mode {i}"], "no column matches --components 'PCA Mode {i}'"),
        (["good.parquet", "--components", "feat_", "--pca", "2"], "exclude each other"),
        (["good.parquet", "--components", "PCA Mode"], "must hold {i} once"),
        (["good.parquet", "--components", "feat_{i}", "--modes", "5"], "matches 3 column(s), 5 asked for"),
        (["good.parquet", "--modes", "2"], "--modes counts the columns of --components"),
        (["good.parquet", "--pca", "9"], "more modes than the table allows"),
        (["good.parquet", "--attrs", "ethnicity"], "no column 'ethnicity'"),
        (["good.parquet", "--attrs", "split"], "no column 'split'"),
        (["good.parquet", "--label", "edema"], "no label column 'label_edema' or 'edema'"),
        (["allpos.parquet", "--label", "pleural_effusion"], "has no rows with 0"),
        (["good.parquet", "--correction", "bonferroni"], "correction"),
        (["good.parquet", "--per-patient", "last"], "--per-patient: Input should be"),
        (["good.parquet", "--out", "good.parquet"], "is a file, not a folder"),
    ]
    for args, message in cases:
        args = [tmp_path / a if a.endswith(".parquet") else a for a in args]
        code, _, err = run_cli("inspect", *args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
    good.assign(race="White").to_parquet(tmp_path / "white.parquet")
    code, _, err = run_cli("inspect", tmp_path / "white.parquet", "--attrs", "race")
    assert code == 2 and "1 subgroup(s) (White)" in err


def test_a_notebook_shows_the_result_as_html():
    """`_repr_html_`: a fragment scoped under .fairscan with the test table, every test's corrected p-value."""
    from html.parser import HTMLParser

    r = inspect(validate_features(simulate_features(patients=120, dim=6, shift=1.0, seed=2)), ["race", "sex"])
    page = r._repr_html_()
    assert page.startswith('<div class="fairscan">') and "<html" not in page
    assert "Kolmogorov-Smirnov tests per mode" in page and "Bias inspection" in page

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows: list[list[str]] = []

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag == "td":
                self.rows[-1].append("")

        def handle_data(self, data):
            if self.rows and self.rows[-1] and self.lasttag == "td":
                self.rows[-1][-1] += data

    parser = Cells()
    parser.feed(page)
    body = [row for row in parser.rows if row]
    assert len(body) == len(r.tests)
    for row, t in zip(body, r.tests, strict=True):
        assert row[0] == str(t.mode) and row[2] == f"{t.a} vs {t.b}"
        assert float(row[6]) == pytest.approx(t.p_adjusted, abs=5e-7)  # printed to 6 decimals
