"""Probe speed and memory: `fairscan.representations.probe` against a hand-written scikit-learn pipeline.

    python benchmarks/bench_probe.py [--images 40000] [--dim 768] [--folds 5] [--inner-folds 3] [--rounds 1]

The workload is the issue's: 40,000 images x 768 features (simulated, 1-3 images per patient, a race shift),
the race probe with the default grid (C in 0.001, 0.01, 0.1, 1) chosen by a 3-fold inner cross-validation in
each of 5 patient-grouped outer folds; no permutations (each permutation reruns the same procedure, so its
cost scales alike). The baseline is what one would write by hand: per outer fold, ``GridSearchCV`` over a
``StandardScaler`` + ``LogisticRegression`` pipeline with the same grid, the same inner and outer folds
(fairscan's ``patient_folds``) and log-loss scoring, then ``roc_auc_score`` per class and
``balanced_accuracy_score``. Each side runs in its own process (same data, same seed), alternating over rounds,
so that each one's peak memory is its own; prints the times, the ratio and the peak resident memory above the
data. Small flags (--images 600 --dim 16) make it a smoke test that runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _data(args):
    from fairscan.representations.features import validate_features
    from fairscan.representations.simulate import simulate_features

    frame = simulate_features(
        patients=args.images // 2, max_images=3, dim=args.dim, shift=0.5, seed=args.seed
    )
    return validate_features(frame.iloc[: args.images].reset_index(drop=True))


def _fairscan(features, args) -> dict:
    from fairscan.representations.probe import ProbeSettings, probe

    s = ProbeSettings(
        targets=["race"],
        folds=args.folds,
        inner_folds=args.inner_folds,
        grid=args.grid,
        permutations=0,
        seed=args.seed,
        confounders=False,
    )
    r = probe(features, settings=s).probe("race")
    return {"auc_macro": r.auc_macro, "balanced_accuracy": r.balanced_accuracy, "C": r.C}


def _sklearn(features, args) -> dict:
    """The hand-written pipeline: GridSearchCV per outer fold, the same folds and grid."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fairscan.representations.crossval import patient_folds

    X = features.matrix()
    y = pd.Categorical(features.frame["race"], categories=["White", "Asian", "Black"]).codes.astype(np.int64)
    groups = pd.factorize(features.frame["patient_id"])[0]
    aucs, bals, cs = [], [], []
    for train, test in patient_folds(y, groups, args.folds, args.seed):
        inner = patient_folds(y[train], groups[train], args.inner_folds, args.seed)
        search = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            {"logisticregression__C": args.grid},
            cv=inner,
            scoring="neg_log_loss",
        ).fit(X[train], y[train])
        proba = search.predict_proba(X[test])
        aucs.append(np.mean([roc_auc_score(y[test] == c, proba[:, c]) for c in range(3)]))
        bals.append(balanced_accuracy_score(y[test], proba.argmax(axis=1)))
        cs.append(search.best_params_["logisticregression__C"])
    return {"auc_macro": float(np.mean(aucs)), "balanced_accuracy": float(np.mean(bals)), "C": cs}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a machine others share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one_side(args) -> dict:
    # Everything either side imports, imported before the clock and the memory baseline start.
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.pipeline  # noqa: F401

    import fairscan.fairness.groups
    import fairscan.representations.probe  # noqa: F401

    features = _data(args)
    before, cpu = _rss_mib(), _cpu_s()
    start = time.perf_counter()
    result = (_fairscan if args.side == "fairscan" else _sklearn)(features, args)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _cpu_s() - cpu,
        "peak_mib_above_data": _rss_mib() - before,
        **result,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner-folds", type=int, default=3)
    ap.add_argument(
        "--grid", type=lambda t: [float(x) for x in t.split(",")], default=[0.001, 0.01, 0.1, 1.0]
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", choices=["fairscan", "sklearn"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return _one_side(args)
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    runs: dict[str, list[dict]] = {"fairscan": [], "sklearn": []}
    for r in range(args.rounds):
        for side in ("fairscan", "sklearn") if r % 2 == 0 else ("sklearn", "fairscan"):
            out = subprocess.run(
                [sys.executable, __file__, *passed, "--side", side],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {side: min(r["seconds"] for r in rs) for side, rs in runs.items()}
    best_cpu = {side: min(r["cpu_seconds"] for r in rs) for side, rs in runs.items()}
    summary = {
        "workload": {
            "images": args.images,
            "features": args.dim,
            "folds": args.folds,
            "inner_folds": args.inner_folds,
            "grid": args.grid,
            "rounds": args.rounds,
        },
        "fairscan": runs["fairscan"],
        "sklearn": runs["sklearn"],
        "ratio_fastest": best["fairscan"] / best["sklearn"],
        "ratio_cpu": best_cpu["fairscan"] / best_cpu["sklearn"],
        "ratios": [f["seconds"] / s["seconds"] for f, s in zip(runs["fairscan"], runs["sklearn"])],
    }
    return summary


def _print(summary: dict) -> None:
    w = summary["workload"]
    print(
        f"probe of race: {w['images']:,} images x {w['features']} features, {w['folds']} outer x "
        f"{w['inner_folds']} inner folds, grid {w['grid']}, {w['rounds']} round(s)"
    )
    for side in ("fairscan", "sklearn"):
        for r in summary[side]:
            print(
                f"  {side:8s} {r['seconds']:8.1f} s ({r['cpu_seconds']:.1f} CPU s)  peak +{r['peak_mib_above_data']:.0f} MiB "
                "above the data  "
                f"macro AUC {r['auc_macro']:.4f}  balanced acc. {r['balanced_accuracy']:.4f}  C {r['C']}"
            )
    print(
        f"  ratio fairscan / sklearn: {summary['ratio_fastest']:.2f} (fastest runs; CPU time "
        f"{summary['ratio_cpu']:.2f}); per round "
        + ", ".join(f"{x:.2f}" for x in summary["ratios"])
        + "  (target <= 1.5)"
    )


if __name__ == "__main__":
    result = main()
    if "--side" in sys.argv:
        print(json.dumps(result))
    else:
        _print(result)
