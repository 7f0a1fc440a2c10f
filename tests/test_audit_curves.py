"""ROC and reliability curves per subgroup (the report's pictures) and the notebook view of a result."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

import fairscan
from fairscan.fairness.curves import FPR_GRID, reliability, roc_tpr
from tests._preds import make_preds


@pytest.mark.parametrize("ties", [False, True])
def test_roc_on_the_grid_equals_scikit_learns_curve(ties):
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    s = rng.normal(size=500) + y
    if ties:
        s = np.round(s, 1)
    order = np.argsort(s, kind="mergesort")
    fpr, tpr, _ = roc_curve(y, s)
    assert roc_tpr(y[order], s[order]) == pytest.approx(np.interp(FPR_GRID, fpr, tpr), abs=1e-5)
    assert roc_tpr(np.ones(5), np.arange(5.0)) is None


def test_reliability_bins_are_the_ece_s():
    df = make_preds(900, ("edema",), seed=1)
    d = fairscan.audit(df, attrs=["sex"], intervals="none", ece_bins=10).to_dict()
    rel = d["curves"]["reliability"]["edema"]["overall"]
    n = np.array(rel["n"])
    gap = [abs(o - m) for o, m in zip(rel["observed"], rel["mean_p"]) if o is not None]
    assert sum(k * g for k, g in zip(n[n > 0], gap)) / n.sum() == pytest.approx(d["labels"]["edema"]["ece"], abs=1e-4)
    direct = reliability(df["label_edema"].to_numpy(), df["prob_edema"].to_numpy(), 10)
    assert direct["n"] == rel["n"]


def test_the_report_draws_curves_for_every_attribute(tmp_path):
    from fairscan.report import write_report

    r = fairscan.audit(make_preds(900, ("edema", "effusion"), seed=2, gap=0.3), attrs=["sex", "race"], n_boot=30)
    d = r.to_dict()
    assert set(d["curves"]["roc"]["edema"]) == {"overall", "sex", "race"}
    assert len(d["curves"]["roc"]["edema"]["race"]["Black"]) == len(d["curves"]["fpr"])
    html = write_report(d, tmp_path)["html"].read_text()
    for attr in ("sex", "race"):
        assert f'<figure id="fig-roc-{attr}">' in html and f'<figure id="fig-reliability-{attr}">' in html


def test_results_render_in_a_notebook():
    r = fairscan.audit(make_preds(600, ("edema",), seed=3), attrs=["sex"], n_boot=30)
    html = r._repr_html_()
    assert html.startswith('<div class="fairscan">') and f"{100 * r.mean_auc:.2f}" in html and "Notes" in html
    c = fairscan.compare([make_preds(600, ("edema",), seed=3), make_preds(600, ("edema",), seed=3, gap=0.2)],
                         attrs=["sex"], n_boot=30, names=["a", "b"])  # fmt: skip
    assert '<div class="fairscan">' in c._repr_html_() and "Models compared" in c._repr_html_()
