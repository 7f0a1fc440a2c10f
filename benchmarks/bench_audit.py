"""Audit speed: fairscan against a plain scikit-learn loop and fairlearn's MetricFrame bootstrap.

    python benchmarks/bench_audit.py [--images 40000] [--n-boot 1000] [--baseline-reps 3]

The workload is the issue's: 40,000 images x 14 labels x (overall + 2 sexes + 3 races), 1,000 patient
bootstrap replicates. fairscan runs it whole (first a warm-up call so that numba's compiled kernels are
loaded from cache, as in any later run); the baselines run a few replicates and are extrapolated linearly
(the whole sklearn loop takes ~15 minutes). Prints each time, the ratios, the peak memory, and checks that
fairscan's point estimates equal scikit-learn's to 1e-12.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]


def sklearn_replicate(df: pd.DataFrame, labels, attrs, rng) -> None:
    """One patient-bootstrap replicate the plain way: resample patients, then roc_auc_score per segment."""
    patients = df["patient_id"].unique()
    drawn = rng.choice(patients, size=len(patients), replace=True)
    rows = df.groupby("patient_id").indices
    idx = np.concatenate([rows[p] for p in drawn])
    sample = df.iloc[idx]
    for lab in labels:
        y, p = sample[f"label_{lab}"].to_numpy(), sample[f"prob_{lab}"].to_numpy()
        roc_auc_score(y, p)
        for attr in attrs:
            col = sample[attr].to_numpy()
            for g in np.unique(col):
                m = col == g
                roc_auc_score(y[m], p[m])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--baseline-reps", type=int, default=3)
    args = ap.parse_args()

    import fairscan
    from fairscan.schema import CHEXPERT_LABELS

    tmp = Path(tempfile.mkdtemp())
    path = tmp / "preds.parquet"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/make_example_predictions.py"),
            str(path),
            "--images",
            str(args.images),
        ],
        check=True,
        capture_output=True,
    )
    df = pd.read_parquet(path)
    labels, attrs = list(CHEXPERT_LABELS), ["sex", "race"]
    print(
        f"workload: {len(df):,} images, {df['patient_id'].nunique():,} patients, {len(labels)} labels, "
        f"overall + 2 sexes + 3 races, {args.n_boot} patient-bootstrap replicates"
    )

    fairscan.audit(path, attrs=attrs, n_boot=10, permutations=10)  # warm-up: load the compiled kernels
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = fairscan.audit(path, attrs=attrs, n_boot=args.n_boot, permutations=0)
    t_fs = time.perf_counter() - t
    t = time.perf_counter()
    fairscan.audit(path, attrs=attrs, n_boot=args.n_boot, permutations=args.permutations)
    t_fs_perm = time.perf_counter() - t
    t = time.perf_counter()  # + TPR/FPR/FNR at a threshold per label, with their bootstrap intervals
    fairscan.audit(path, attrs=attrs, n_boot=args.n_boot, permutations=0, tune_thresholds_on_test=True)
    t_fs_thr = time.perf_counter() - t
    perm_only = dict(attrs=attrs, intervals="none", permutations=args.permutations)
    t = time.perf_counter()
    fairscan.audit(path, **perm_only)
    t_perm_full = time.perf_counter() - t
    t = time.perf_counter()  # each permutation redraws the balanced sets from the shuffled groups
    fairscan.audit(path, balanced_test=True, **perm_only)
    t_perm_balanced = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from fairscan.report import write_report

    report_dir = tmp / "report"
    write_report(result.to_dict(), report_dir)  # warm-up: matplotlib's import, fonts and caches
    t = time.process_time()
    write_report(result.to_dict(), report_dir)  # audit.json, report.md and report.html with its 3 figures
    t_report = time.process_time() - t

    d = result.to_dict()
    worst = 0.0
    for lab in labels:
        worst = max(
            worst, abs(d["labels"][lab]["auc"] - roc_auc_score(df[f"label_{lab}"], df[f"prob_{lab}"]))
        )
        for attr in attrs:
            for g, gd in d["labels"][lab]["attrs"][attr]["groups"].items():
                m = df[attr] == g
                if gd["auc"] is not None:
                    worst = max(
                        worst,
                        abs(gd["auc"] - roc_auc_score(df.loc[m, f"label_{lab}"], df.loc[m, f"prob_{lab}"])),
                    )

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(args.baseline_reps):
        sklearn_replicate(df, labels, attrs, rng)
    t_sk = (time.perf_counter() - t) / args.baseline_reps * args.n_boot

    t_fl = None
    try:
        from fairlearn.metrics import MetricFrame

        reps = max(2, args.baseline_reps)
        t = time.perf_counter()
        for lab in labels[:2]:
            for attr in attrs:
                MetricFrame(
                    metrics=roc_auc_score,
                    y_true=df[f"label_{lab}"],
                    y_pred=df[f"prob_{lab}"],
                    sensitive_features=df[attr],
                    n_boot=reps,
                    ci_quantiles=[0.025, 0.975],
                    random_state=0,
                )
        per_rep_per_label = (time.perf_counter() - t) / reps / 2
        t_fl = per_rep_per_label * len(labels) * args.n_boot
    except ImportError:
        pass

    print(f"fairscan audit, {args.n_boot} bootstrap replicates:            {t_fs:8.2f} s")
    print(f"fairscan audit, + {args.permutations} permutations (the default):  {t_fs_perm:8.2f} s")
    print(f"fairscan audit, + threshold metrics with intervals (no permutations): {t_fs_thr:8.2f} s")
    print(
        f"{args.permutations} permutations alone: {t_perm_full:.2f} s on the full test set, "
        f"{t_perm_balanced:.2f} s with --balanced-test ({t_perm_balanced / t_perm_full:.1f}x)"
    )
    print(
        f"scikit-learn roc_auc_score loop (extrapolated from {args.baseline_reps}): {t_sk:8.1f} s  "
        f"-> fairscan is {t_sk / t_fs:.0f}x faster"
    )
    if t_fl is not None:
        print(
            f"fairlearn MetricFrame(n_boot) (extrapolated; resamples images, not patients): {t_fl:8.1f} s  "
            f"-> fairscan is {t_fl / t_fs:.0f}x faster"
        )
    print(f"largest difference from scikit-learn's point estimates: {worst:.2e} (target <= 1e-12)")
    print(f"writing the report (audit.json, report.md, report.html with 3 figures): {t_report:.2f} CPU s")
    print(
        f"peak memory: {rss0 / 1024:.0f} MiB before, {rss1 / 1024:.0f} MiB after the audits "
        f"(a replicates x images float64 matrix would be {args.n_boot * len(df) * 8 / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
