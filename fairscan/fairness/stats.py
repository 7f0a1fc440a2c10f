"""Inference from replicates: intervals, the gap test, the bias-adjusted gap and paired differences.

One module owns every interval and p-value the audit, ``compare`` and the studies print, so that they follow
one rule each (``benchmarks/calibration`` measures their error rates and coverage by simulation):

- **Intervals** are percentile intervals over the patient-bootstrap replicates. When the replicates are
  centred on another value than the point estimate (balanced test sets: each replicate makes its own draw,
  so it is centred on the full-set value), the interval is moved with the point: ``point + percentiles(rep -
  centre)``; with the usual centring that is the plain percentile interval.
- **The gap test** (:func:`gap_test`) asks whether subgroups whose true AUCs are all equal could show a gap
  as large as the one observed. Under that null, the observed gap is the range of the subgroups' estimation
  errors; the bootstrap's deviations ``A*_g - centre_g`` estimate those errors, whatever the prevalence in each
  group, the number of images per patient or the balancing. p = (1 + #{range(A* - centre) >= FG}) / (B + 1).
  (Shuffling group labels between patients tests that the groups are exchangeable, a different null that
  unequal prevalence alone rejects.)
- **The gap's interval** is the projection of the simultaneous region {A : range(A_hat - A) <= q}, q the
  (1 - alpha) critical value of the same deviations: [max(0, FG - q), FG + q]. It covers the true gap with at
  least the stated level, and it contains 0 exactly when the gap test's p >= alpha.
- **The bias-adjusted gap**: best minus worst is biased upward (noise alone makes a gap). The bias is
  estimated by the bootstrap at the subgroup AUCs shrunk toward their mean (by the share of their spread
  that noise does not explain, see :func:`_bias`) and subtracted; the result is floored at 0.
- **Paired differences** (two models on the same images, the same replicates): two-sided centred-bootstrap
  p-value and the symmetric interval dual to it; a difference of gaps is first corrected for the bias the
  bootstrap sees in it (:func:`bias_corrected`). With several training seeds, a t-test over seeds whose
  variance adds the test-set error the seeds share (:func:`seed_difference`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TOLERANCE = 1e-12  # a replicate equal to the observed statistic up to rounding counts as reaching it


def boot_min_count(n_boot: int) -> float:
    """An interval needs at least half the bootstrap replicates (and 10) to be defined."""
    return max(10, 0.5 * n_boot)


def percentile_ci(reps: np.ndarray | None, level: float, *, min_count: float = 10) -> list[float] | None:
    """Percentile interval over the replicates that are not NaN; None with fewer than ``min_count`` of them."""
    if reps is None:
        return None
    reps = reps[~np.isnan(reps)]
    if len(reps) < min_count:
        return None
    lo = 100 * (1 - level) / 2
    a, b = np.percentile(reps, [lo, 100 - lo])
    return [float(a), float(b)]


def interval(
    point: float, reps: np.ndarray | None, centre: float | None, level: float, *, min_count: float = 10
) -> list[float] | None:
    """The interval of one statistic: percentiles of its replicates, moved with the point estimate when the
    replicates are centred elsewhere (``centre`` not None)."""
    if reps is None or point is None or math.isnan(point):
        return None
    if centre is None:
        return percentile_ci(reps, level, min_count=min_count)
    if math.isnan(centre):
        return None
    ci = percentile_ci(reps - centre, level, min_count=min_count)
    return None if ci is None else [point + ci[0], point + ci[1]]


def _deviations(reps: np.ndarray, centre: np.ndarray) -> np.ndarray:
    d = reps - centre[None, :]
    return d[~np.isnan(d).any(axis=1)]


def critical_count(n: int, alpha: float) -> int:
    """m such that p = (1 + #{R* >= x}) / (n + 1) >= alpha exactly when at least m replicates reach x."""
    return max(0, math.ceil(alpha * (n + 1) - 1 - 1e-9))


def gap_test(
    point: np.ndarray, reps: np.ndarray, centre: np.ndarray, level: float, *, min_count: float = 10
) -> dict[str, Any] | None:
    """The gap test, the gap's interval and the bias-adjusted gap for one vector of subgroup AUCs.

    ``point`` (G,) the estimates, ``reps`` (B, G) their replicates, ``centre`` (G,) what the replicates are
    centred on. None when fewer than two groups or too few complete replicates."""
    if len(point) < 2 or np.isnan(point).any() or np.isnan(centre).any():
        return None
    dev = _deviations(reps, centre)
    n = len(dev)
    if n < min_count:
        return None
    ranges = dev.max(axis=1) - dev.min(axis=1)
    gap = float(point.max() - point.min())
    p = (1 + int((ranges >= gap - TOLERANCE).sum())) / (n + 1)
    m = critical_count(n, round(1 - level, 12))
    q = float(np.sort(ranges)[n - m]) if 1 <= m <= n else math.inf
    low = 0.0 if gap <= q + TOLERANCE else gap - q
    return {
        "p_value": p,
        "gap_adjusted": max(0.0, gap - _bias(point, dev)),
        "gap_adjusted_ci": [low, gap + q] if math.isfinite(q) else None,
        "replicates": n,
    }


SHRINK_NOISE = 2.0  # chosen by the calibration study: |bias| <= 0.35 points at true gaps of 0, 2 and 5


def _bias(point: np.ndarray, dev: np.ndarray) -> float:
    """The bootstrap's estimate of best-minus-worst's upward bias, at the subgroup AUCs shrunk toward their
    mean: their spread (sum of squared deviations) is cut by ``SHRINK_NOISE`` times what noise alone gives it
    on average, sum_g var_g (1 - 1/G). (The plain bootstrap correction, at the unshrunk AUCs, underestimates
    the bias when there is no gap, because noise has already spread the AUCs apart.)"""
    mean = point.mean()
    spread = float(((point - mean) ** 2).sum())
    noise = float(dev.var(axis=0, ddof=1).sum()) * (1 - 1 / len(point))
    shrink = math.sqrt(max(0.0, spread - SHRINK_NOISE * noise) / spread) if spread > 0 else 0.0
    shrunk = mean + shrink * (point - mean)
    moved = shrunk[None, :] + dev
    bias = float((moved.max(axis=1) - moved.min(axis=1)).mean() - (shrunk.max() - shrunk.min()))
    return max(0.0, bias)


def worst_group(
    point: np.ndarray, reps: np.ndarray, centre: np.ndarray, level: float, *, min_count: float = 10
) -> list[float] | None:
    """Interval of the worst subgroup's AUC, min_g A_g: the projection of a simultaneous band A_g in
    point_g +- c * se_g, c the level's quantile of max_g |deviation_g| / se_g over replicates."""
    if len(point) < 1 or np.isnan(point).any() or np.isnan(centre).any():
        return None
    dev = _deviations(reps, centre)
    if len(dev) < min_count:
        return None
    se = dev.std(axis=0, ddof=1)
    if not (se > 0).all():
        return None
    c = float(np.quantile(np.abs(dev / se).max(axis=1), level))
    return [float((point - c * se).min()), float((point + c * se).min())]


def centred(diff: float, reps: np.ndarray, centre: float | None) -> tuple[float, np.ndarray]:
    """A smooth statistic's difference (the mean AUC) and its replicates' deviations from their centre."""
    return diff, reps - (diff if centre is None else centre)


def bias_corrected(diff: float, reps: np.ndarray, centre: float | None) -> tuple[float, np.ndarray]:
    """A difference of gaps, corrected for the bootstrap's estimate of its bias, and the replicates' deviations
    from their mean. Best minus worst is biased upward, and more so the closer the subgroups are, so the
    difference of two models' gaps is biased toward 0 when one gap is near a tie and the other is not; the
    bootstrap sees the same bias, mean(D*) - centre, which is subtracted (the calibration study found the
    uncorrected test at 0-0.5% false positives for a nominal 5%)."""
    ok = reps[~np.isnan(reps)]
    if not len(ok):
        return diff, ok
    mean = float(ok.mean())
    return diff - (mean - (diff if centre is None else centre)), ok - mean


def paired_difference(value: float | None, dev: np.ndarray | None, level: float, *, min_count: float = 10) -> dict[str, Any]:
    """A difference of two statistics measured on the same replicates, from ``value`` (the difference,
    possibly bias-corrected) and ``dev`` (its replicates' deviations, :func:`centred` or
    :func:`bias_corrected`): the two-sided p-value (H0: no difference) p = (1 + #{|dev| >= |value|}) / (B + 1)
    and the symmetric interval value +- q, q the level's critical value of |dev|, which excludes 0 exactly
    when p < 1 - level."""
    out: dict[str, Any] = {"diff": value, "ci": None, "p_value": None}
    if value is None or dev is None or math.isnan(value):
        return out
    dev = np.abs(dev[~np.isnan(dev)])
    n = len(dev)
    if n < min_count:
        return out
    out["p_value"] = (1 + int((dev >= abs(value) - TOLERANCE).sum())) / (n + 1)
    m = critical_count(n, round(1 - level, 12))
    if 1 <= m <= n:
        q = float(np.sort(dev)[n - m])
        out["ci"] = [value - q, value + q]
    return out


def seed_difference(
    values: list[float | None], devs: list[np.ndarray | None], level: float, *, min_count: float = 10
) -> dict[str, Any]:
    """A paired difference averaged over K training seeds on one test set, with the between-seed variance.

    ``values[k]`` is seed k's difference (model minus reference, same seed) and ``devs[k]`` its replicates'
    deviations, on replicates shared by every seed. Seed k's difference is the truth plus a test-set error
    shared by all seeds plus an error of its own (training noise, and the part of the test-set error that
    differs between seeds). The spread between seeds, s^2, estimates the own errors' variance; the shared
    part's variance is the covariance of two seeds' deviations, averaged over pairs (c). So the seed mean has
    se^2 = s^2 / K + c, referred to Student's t with Satterthwaite's degrees of freedom
    (s^2/K + c)^2 / ((s^2/K)^2 / (K - 1)). With c = 0 it is the paired t-test over seeds; with one seed,
    :func:`paired_difference`.
    """
    from scipy import stats

    k = len(values)
    empty = {"diff": None, "ci": None, "p_value": None, "method": None, "seeds": k, "seed_sd": None}
    if k == 0 or any(v is None or math.isnan(v) for v in values):
        return empty
    if k == 1:
        return {**paired_difference(values[0], devs[0], level, min_count=min_count), "method": "paired bootstrap",
                "seeds": 1, "seed_sd": None}  # fmt: skip
    diff = float(np.mean(values))
    own = float(np.var(values, ddof=1)) / k
    shared = _shared_covariance(devs, min_count)
    se2 = own + shared
    df = se2**2 / (own**2 / (k - 1)) if own > 0 else math.inf
    dist = stats.t(df=df) if math.isfinite(df) else stats.norm()
    se = math.sqrt(se2)
    half = float(dist.ppf(0.5 + level / 2)) * se
    p = float(2 * dist.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    method = f"t-test over {k} seeds + shared test-set error (df {df:.1f})"
    return {"diff": diff, "ci": [diff - half, diff + half], "p_value": min(1.0, p), "method": method,
            "seeds": k, "seed_sd": math.sqrt(own * k)}  # fmt: skip


def _shared_covariance(devs: list[np.ndarray | None], min_count: float) -> float:
    """Mean covariance between two seeds' replicate deviations (the test-set error they share), floored at 0;
    0 without replicates."""
    if any(d is None for d in devs):
        return 0.0
    block = np.column_stack(devs)
    block = block[~np.isnan(block).any(axis=1)]
    if len(block) < min_count:
        return 0.0
    cov = np.cov(block, rowvar=False)
    k = cov.shape[0]
    return max(0.0, float((cov.sum() - np.trace(cov)) / (k * (k - 1))))
