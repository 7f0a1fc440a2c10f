"""Multiple-comparison corrections against statsmodels (an independent implementation) and their error rates."""

import numpy as np
import pytest

from fairscan.fairness.multitest import METHODS, adjust

multitest = pytest.importorskip("statsmodels.stats.multitest")


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "fdr_by"])
@pytest.mark.parametrize("m", [1, 2, 5, 20, 137])
def test_equals_statsmodels(method, m):
    rng = np.random.default_rng(m)
    p = np.concatenate([rng.random(m - m // 3), rng.random(m // 3) * 1e-3])
    p[: m // 5] = p[0]  # ties
    rng.shuffle(p)
    ours = np.array(adjust(list(p), method))
    _, theirs, _, _ = multitest.multipletests(p, method=method)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-12)


def test_missing_values_stay_missing_and_leave_the_family():
    p = [0.01, None, 0.04, float("nan"), 0.03]
    out = adjust(p, "holm")
    assert out[1] is None and out[3] is None
    _, theirs, _, _ = multitest.multipletests([0.01, 0.04, 0.03], method="holm")
    assert np.allclose([out[0], out[2], out[4]], theirs)
    assert adjust([], "fdr_bh") == [] and adjust(p, "none")[0] == 0.01


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown correction"):
        adjust([0.1], "bonferonni")
    assert set(METHODS) == {"holm", "fdr_bh", "fdr_by", "none"}


def test_error_rates_by_simulation():
    """Holm keeps the family-wise error rate at or below 5% and BH the false discovery rate, on 2,000 families
    of 10 tests with 7 true nulls (uniform p-values) and 3 strong effects."""
    rng = np.random.default_rng(0)
    fwer = {"holm": 0, "none": 0}
    fdp = []
    n = 2000
    for _ in range(n):
        p = np.concatenate([rng.random(7), rng.random(3) * 1e-4])
        for method in fwer:
            fwer[method] += bool((np.array(adjust(list(p), method))[:7] <= 0.05).any())
        rejected = np.array(adjust(list(p), "fdr_bh")) <= 0.05
        fdp.append(rejected[:7].sum() / max(rejected.sum(), 1))
    assert fwer["holm"] / n <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)
    assert fwer["none"] / n > 0.25  # what the correction is for: 1 - 0.95^7 = 30%
    assert np.mean(fdp) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)
