"""`fairscan ensemble`: mean of probabilities, alignment, and errors that name the differences."""

import numpy as np
import pandas as pd
import pytest

import fairscan
from fairscan.schema import read_predictions, write_predictions
from tests._preds import make_preds


@pytest.fixture
def members(tmp_path):
    a = make_preds(300, ("edema", "effusion"), seed=0)
    b = a.copy()
    rng = np.random.default_rng(1)
    for lab in ("edema", "effusion"):
        b[f"prob_{lab}"] = rng.random(len(b))
    b = b.sample(frac=1.0, random_state=0)  # another row order: aligned on image_id
    pa, pb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_predictions(a, pa, provenance={"run": "a"})
    write_predictions(b, pb)
    return a, b, pa, pb


def test_mean_of_probabilities(run_cli, members, tmp_path):
    a, b, pa, pb = members
    out = tmp_path / "ens.parquet"
    code, stdout, err = run_cli("ensemble", pa, pb, "-o", out)
    assert code == 0, err
    ens = read_predictions(out)
    b_aligned = b.set_index("image_id").loc[a["image_id"]]
    assert np.allclose(ens.p("edema"), (a["prob_edema"].to_numpy() + b_aligned["prob_edema"].to_numpy()) / 2)
    assert list(ens.frame["image_id"]) == list(a["image_id"])
    assert ens.provenance["stage"] == "ensemble" and len(ens.provenance["members"]) == 2
    assert ens.provenance["members"][0]["provenance"]["run"] == "a"
    # the output is auditable like any other
    assert fairscan.audit(out, attrs=["sex"], intervals="none").mean_auc > 0.5


def test_weights_logits_and_ranks(members):
    a, b, pa, pb = members
    df, _ = fairscan.ensemble([pa, pb], weights=[3, 1])
    b_al = b.set_index("image_id").loc[a["image_id"]]
    assert np.allclose(
        df["prob_edema"], 0.75 * a["prob_edema"].to_numpy() + 0.25 * b_al["prob_edema"].to_numpy()
    )
    df, _ = fairscan.ensemble([pa, pb], method="mean-logit")
    z = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + np.exp(-(z(a["prob_edema"].to_numpy()) + z(b_al["prob_edema"].to_numpy())) / 2))
    assert np.allclose(df["prob_edema"], expected)
    df, _ = fairscan.ensemble([pa, pb], method="mean-rank")
    assert df["prob_edema"].between(0, 1).all()


def test_mismatched_images_name_the_differences(run_cli, members, tmp_path):
    a, b, pa, _ = members
    c = a.iloc[5:].copy()
    pc = tmp_path / "c.parquet"
    write_predictions(c, pc)
    code, _, err = run_cli("ensemble", pa, pc, "-o", tmp_path / "x.parquet")
    assert code == 2
    assert "do not hold the same images" in err and "i00000" in err
    assert not (tmp_path / "x.parquet").exists()


def test_mismatched_labels_and_attributes(run_cli, members, tmp_path):
    a, _, pa, _ = members
    d = a.drop(columns=["label_effusion", "prob_effusion"])
    pd_ = tmp_path / "d.parquet"
    write_predictions(d, pd_)
    code, _, err = run_cli("ensemble", pa, pd_, "-o", tmp_path / "x.parquet")
    assert code == 2 and "different labels" in err and "effusion" in err
    e = a.copy()
    e.loc[e.index[4], "sex"] = "Female" if e.loc[e.index[4], "sex"] == "Male" else "Male"
    pe = tmp_path / "e.parquet"
    write_predictions(e, pe)
    code, _, err = run_cli("ensemble", pa, pe, "-o", tmp_path / "x.parquet")
    assert code == 2 and "disagree on column sex" in err and "i00004" in err


def test_bad_weights_and_method(run_cli, members, tmp_path):
    _, _, pa, pb = members
    code, _, err = run_cli("ensemble", pa, pb, "-o", tmp_path / "x.parquet", "--weights", "1")
    assert code == 2 and "1 weights for 2" in err
    code, _, err = run_cli("ensemble", pa, pb, "-o", tmp_path / "x.parquet", "--method", "vote")
    assert code == 2 and "unknown ensemble method" in err


def test_compare_pairs_the_bootstrap(members):
    a, _, pa, pb = members
    c = fairscan.compare([pa, pb], attrs=["sex"], n_boot=100)
    d = c.to_dict()
    row = {r["model"]: r for r in d["comparison"]["rows"]}
    assert d["comparison"]["paired"]["b"]["mean_auc_diff"] == pytest.approx(
        row["b"]["mean_auc"] - row["a"]["mean_auc"]
    )
    ci = d["comparison"]["paired"]["b"]["mean_auc_diff_ci"]
    assert ci[0] < d["comparison"]["paired"]["b"]["mean_auc_diff"] < ci[1]
    gaps = [row[m]["gap"]["sex"] for m in ("a", "b")]
    assert d["comparison"]["fs_constant"]["sex"] == pytest.approx(max(gaps) + 0.01)
    assert min(row[m]["fs"]["sex"] for m in ("a", "b")) == pytest.approx(0.01)
    assert isinstance(c.table(), pd.DataFrame)
