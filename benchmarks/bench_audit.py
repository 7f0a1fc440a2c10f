"""Audit speed: fairscan's default audit against fairscan 0.1's, a plain scikit-learn loop and fairlearn.

    python benchmarks/bench_audit.py [--images 40000] [--n-boot 1000] [--baseline-ref 58d7fa1] [--baseline-reps 3]

The workload is 40,000 images x 14 labels x (overall + 2 sexes + 3 races), 1,000 patient-bootstrap replicates.
fairscan runs it whole (first a warm-up call so that numba's compiled kernels are loaded from cache, as in any
later run). The baseline "0.1" is the audit as it was at ``--baseline-ref`` (its default: 1,000 replicates and
1,000 permutations), checked out into a temporary git worktree and run in a subprocess on the same file, in the
same run. The scikit-learn and fairlearn baselines run a few replicates and are extrapolated linearly. Prints
each time, the ratios, the peak memory, and checks that point estimates equal scikit-learn's to 1e-12.
"""

from __future__ import annotations

import argparse
import json
import os
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
BASELINE_REF = "58d7fa1"  # the last commit with fairscan 0.1's audit (permutation p-values)

OLD_AUDIT = """
import json, sys, time
import fairscan
path, n_boot, perms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fairscan.audit(path, attrs=["sex", "race"], n_boot=10, permutations=10)  # warm-up
out = {}
for key, kw in (("default", dict(n_boot=n_boot, permutations=perms)),
                ("perm_full", dict(intervals="none", permutations=perms)),
                ("perm_balanced", dict(intervals="none", permutations=perms, balanced_test=True))):
    t = time.perf_counter()
    fairscan.audit(path, attrs=["sex", "race"], **kw)
    out[key] = time.perf_counter() - t
print(json.dumps(out))
"""


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


def old_audit_times(ref: str, path: Path, n_boot: int, perms: int) -> dict | None:
    """fairscan 0.1's audit timed in a subprocess from a temporary worktree at ``ref`` (None if git can't, or
    with ``--baseline-ref ''``)."""
    if not ref:
        return None
    where = Path(tempfile.mkdtemp()) / "fairscan-old"
    made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        print(f"(no 0.1 baseline: git worktree at {ref} failed: {made.stderr.strip()})")
        return None
    try:
        env = {**os.environ, "PYTHONPATH": str(where)}
        run = subprocess.run([sys.executable, "-c", OLD_AUDIT, str(path), str(n_boot), str(perms)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=1000, help="the 0.1 baseline's default")
    ap.add_argument("--baseline-ref", default=BASELINE_REF)
    ap.add_argument("--baseline-reps", type=int, default=3)
    args = ap.parse_args()

    import fairscan
    from fairscan.schema import CHEXPERT_LABELS

    tmp = Path(tempfile.mkdtemp())
    path = tmp / "preds.parquet"
    subprocess.run([sys.executable, str(ROOT / "examples/make_example_predictions.py"), str(path), "--images",
                    str(args.images)], check=True, capture_output=True)  # fmt: skip
    df = pd.read_parquet(path)
    labels, attrs = list(CHEXPERT_LABELS), ["sex", "race"]
    print(
        f"workload: {len(df):,} images, {df['patient_id'].nunique():,} patients, {len(labels)} labels, "
        f"overall + 2 sexes + 3 races, {args.n_boot} patient-bootstrap replicates"
    )
    old = old_audit_times(args.baseline_ref, path, args.n_boot, args.permutations)

    fairscan.audit(path, attrs=attrs, n_boot=10)  # warm-up: load the compiled kernels
    fairscan.audit(path, attrs=attrs, n_boot=10, balanced_test=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = None

    def default():
        nonlocal result
        result = fairscan.audit(path, attrs=attrs, n_boot=args.n_boot)

    t_fs = timed(default)
    t_bal = timed(lambda: fairscan.audit(path, attrs=attrs, n_boot=args.n_boot, balanced_test=True))
    t_thr = timed(lambda: fairscan.audit(path, attrs=attrs, n_boot=args.n_boot, tune_thresholds_on_test=True))
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
        worst = max(worst, abs(d["labels"][lab]["auc"] - roc_auc_score(df[f"label_{lab}"], df[f"prob_{lab}"])))
        for attr in attrs:
            for g, gd in d["labels"][lab]["attrs"][attr]["groups"].items():
                m = df[attr] == g
                if gd["auc"] is not None:
                    want = roc_auc_score(df.loc[m, f"label_{lab}"], df.loc[m, f"prob_{lab}"])
                    worst = max(worst, abs(gd["auc"] - want))

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
                MetricFrame(metrics=roc_auc_score, y_true=df[f"label_{lab}"], y_pred=df[f"prob_{lab}"],
                            sensitive_features=df[attr], n_boot=reps, ci_quantiles=[0.025, 0.975], random_state=0)  # fmt: skip
        t_fl = (time.perf_counter() - t) / reps / 2 * len(labels) * args.n_boot
    except ImportError:
        pass

    print(f"fairscan audit (the default: {args.n_boot} replicates, gap test, adjusted gap):  {t_fs:8.2f} s")
    if old:
        print(f"fairscan 0.1 audit (its default: + {args.permutations} permutations), same run: {old['default']:8.2f} s"
              f"  -> ratio {t_fs / old['default']:.2f} (target <= 1.3)")  # fmt: skip
    print(f"  with --balanced-test (each replicate draws its own balanced sets): {t_bal:8.2f} s "
          f"-> {t_bal / t_fs:.1f}x the full-set audit (target <= 3x)")  # fmt: skip
    if old:
        print(f"  0.1's permutation test: {old['perm_full']:.2f} s full set, {old['perm_balanced']:.2f} s balanced "
              f"({old['perm_balanced'] / old['perm_full']:.1f}x)")  # fmt: skip
    print(f"  + threshold metrics with intervals: {t_thr:8.2f} s")
    print(f"scikit-learn roc_auc_score loop (extrapolated from {args.baseline_reps}): {t_sk:8.1f} s  "
          f"-> fairscan is {t_sk / t_fs:.0f}x faster")  # fmt: skip
    if t_fl is not None:
        print(f"fairlearn MetricFrame(n_boot) (extrapolated; resamples images, not patients): {t_fl:8.1f} s  "
              f"-> fairscan is {t_fl / t_fs:.0f}x faster")  # fmt: skip
    print(f"largest difference from scikit-learn's point estimates: {worst:.2e} (target <= 1e-12)")
    print(f"writing the report (audit.json, report.md, report.html with 3 figures): {t_report:.2f} CPU s")
    print(
        f"peak memory: {rss0 / 1024:.0f} MiB before, {rss1 / 1024:.0f} MiB after the audits "
        f"(a replicates x images float64 matrix would be {args.n_boot * len(df) * 8 / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
