"""Calibration of the probe's permutation p-value: its false-positive rate under a null, against 5%.

    python benchmarks/calibrate_probe.py [--datasets 300] [--permutations 19] [--patients 150]

Each dataset is a null: Gaussian features independent of race, 1-4 images per patient sharing a patient effect
(patient sd 1, image sd 0.5), unbalanced race shares 70/20/10. On each, the probe's whole procedure (3 outer
x 2 inner patient-grouped folds, C in {0.01, 1}) gives the observed macro AUC, and ``--permutations``
reruns of it on targets permuted between patients give the p-value; with 19 permutations a 5% test rejects
when the observed value is the largest of 20, which under exchangeability happens with probability exactly
1/20. For contrast the same datasets are tested two wrong ways: with the target permuted between images
(ignoring patients), and with image-level folds (a patient on both sides; its AUC is reported too).

Prints each scheme's false-positive rate at 5% with its Monte Carlo standard error sqrt(r(1 - r) / n), the
p-values' histogram, and the mean AUC of patient-level and image-level folds. Small flags (--datasets 3
--permutations 4) make it a smoke test. The problems are small: one BLAS thread per process
(OPENBLAS_NUM_THREADS=1) runs them fastest.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _one(seed: int, args) -> dict:
    import pandas as pd

    from fairscan.representations.crossval import cross_validate
    from fairscan.representations.features import validate_features
    from fairscan.representations.permutation import permutation_p, permuted
    from fairscan.representations.probe import ProbeSettings
    from fairscan.representations.simulate import simulate_features

    f = validate_features(
        simulate_features(
            patients=args.patients,
            max_images=4,
            dim=args.dim,
            race_shares=(0.7, 0.2, 0.1),
            patient_sd=1.0,
            image_sd=0.5,
            seed=seed,
        )
    )
    y = pd.Categorical(f.frame["race"], categories=["White", "Asian", "Black"]).codes.astype(np.int64)
    groups = pd.factorize(f.frame["patient_id"])[0]
    X = f.matrix()
    s = ProbeSettings(folds=3, inner_folds=2, grid=[0.01, 1.0], seed=seed)
    rng = np.random.default_rng([seed, 1])
    observed = cross_validate(X, y, groups, s, 3).macro
    by_patient = [
        cross_validate(X, permuted(y, groups, rng), groups, s, 3).macro for _ in range(args.permutations)
    ]
    by_image = [cross_validate(X, rng.permutation(y), groups, s, 3).macro for _ in range(args.permutations)]
    rows = np.arange(len(y))
    image_folds = cross_validate(X, y, rows, s, 3).macro
    image_null = [cross_validate(X, rng.permutation(y), rows, s, 3).macro for _ in range(args.permutations)]
    return {
        "p_patient": permutation_p(observed, np.array(by_patient)),
        "p_image_permutation": permutation_p(observed, np.array(by_image)),
        "p_image_folds": permutation_p(image_folds, np.array(image_null)),
        "auc_patient_folds": observed,
        "auc_image_folds": image_folds,
    }


def _rate(p: np.ndarray, alpha: float) -> dict:
    r = float(np.mean(p <= alpha))
    return {"rate": r, "mc_se": float(np.sqrt(r * (1 - r) / len(p))), "rejections": int(np.sum(p <= alpha))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=300)
    ap.add_argument("--permutations", type=int, default=19)
    ap.add_argument("--patients", type=int, default=150)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    runs = []
    for i in range(args.datasets):
        runs.append(_one(args.seed * 100_000 + i, args))
        if (i + 1) % 25 == 0:
            done = np.array([r["p_patient"] for r in runs])
            print(
                f"  {i + 1} datasets, {time.perf_counter() - start:.0f} s: rate so far {np.mean(done <= args.alpha):.3f}",
                file=sys.stderr,
                flush=True,
            )
    cols = {k: np.array([r[k] for r in runs]) for k in runs[0]}
    return {
        "datasets": args.datasets,
        "permutations": args.permutations,
        "alpha": args.alpha,
        "patient_permutation": _rate(cols["p_patient"], args.alpha),
        "image_permutation": _rate(cols["p_image_permutation"], args.alpha),
        "image_folds": _rate(cols["p_image_folds"], args.alpha),
        "p_histogram": np.histogram(cols["p_patient"], bins=5, range=(0, 1))[0].tolist(),
        # p takes the values k / (n + 1), k = 1..n+1, each with probability 1 / (n + 1) under the null
        "p_histogram_expected": (
            np.histogram(np.arange(1, args.permutations + 2) / (args.permutations + 1), bins=5, range=(0, 1))[
                0
            ]
            * args.datasets
            / (args.permutations + 1)
        ).tolist(),
        "mean_auc_patient_folds": float(cols["auc_patient_folds"].mean()),
        "mean_auc_image_folds": float(cols["auc_image_folds"].mean()),
        "seconds": time.perf_counter() - start,
    }


def _print(d: dict) -> None:
    print(
        f"{d['datasets']} null datasets, {d['permutations']} permutations each, level {d['alpha']:g} "
        f"({d['seconds']:.0f} s)"
    )
    for key, what in (
        ("patient_permutation", "fairscan: target permuted between patients"),
        ("image_permutation", "wrong: target permuted between images"),
        ("image_folds", "wrong: image-level folds (and image-level permutations)"),
    ):
        r = d[key]
        print(
            f"  {what:58s} false-positive rate {r['rate']:.3f} +- {r['mc_se']:.3f} ({r['rejections']} rejections)"
        )
    expected = ", ".join(f"{x:.3g}" for x in d["p_histogram_expected"])
    print(f"  fairscan's p-values in fifths of [0, 1]: {d['p_histogram']} (under the null: {expected})")
    print(
        f"  mean macro AUC under the null: patient-level folds {d['mean_auc_patient_folds']:.3f}, "
        f"image-level folds {d['mean_auc_image_folds']:.3f}"
    )


if __name__ == "__main__":
    _print(main())
