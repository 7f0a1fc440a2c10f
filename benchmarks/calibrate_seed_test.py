"""The seed-aware comparison's t-test under its own model, over the ratios of shared to own error it may meet.

    python benchmarks/calibrate_seed_test.py [--datasets 20000]

A study's difference at seed k is d_k = T + S_k + W_k: T the test-set error every seed shares, S_k the
test-set error of seed k's own, W_k training noise. ``stats.seed_difference`` estimates Var(S + W) from the
spread of the d_k and Var(T) from the bootstrap's covariance of two seeds' deviations (here drawn with the
sampling error of 499 replicates), and refers the mean to Student's t with Satterthwaite's degrees of freedom.
This script runs that exact function on normal draws, at 2, 3 and 5 seeds, and prints its false-positive rate
at p <= 0.05 for several ratios of the three errors. (A t-test on K - 1 degrees of freedom with the same
variance, which ignores that the bootstrap estimates Var(T) precisely, rejects 0-1% wherever T is not 0.)
``benchmarks/calibration.py`` measures the same test on simulated audits; this one sweeps the error ratios.
"""

from __future__ import annotations

import argparse

import numpy as np

from fairscan.fairness import stats


def rate(k: int, shared: float, own_test: float, training: float, n: int, boot: int, rng) -> float:
    rejected = 0
    for _ in range(n):
        common = rng.normal(0, shared, boot)  # the bootstrap's view of T (and of each S_k) on shared replicates
        devs = [common + rng.normal(0, own_test, boot) for _ in range(k)]
        values = rng.normal(0, shared) + rng.normal(0, own_test, k) + rng.normal(0, training, k)
        rejected += stats.seed_difference(list(values), devs, 0.95)["p_value"] <= 0.05
    return rejected / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=20000)
    ap.add_argument("--boot", type=int, default=499)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    se = 100 * np.sqrt(0.05 * 0.95 / args.datasets)
    print(f"false positives at p <= 0.05 over {args.datasets} draws each (Monte Carlo s.e. {se:.2f} points)")
    for k in (2, 3, 5):
        for shared, own_test, training in [(0.0, 0.5, 1.0), (0.5, 0.5, 1.0), (1.0, 0.5, 1.0), (2.0, 0.5, 0.5)]:
            r = rate(k, shared, own_test, training, args.datasets, args.boot, rng)
            print(f"  {k} seeds, sd shared {shared:.1f} / own test-set {own_test:.1f} / training {training:.1f}: "
                  f"{100 * r:.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
