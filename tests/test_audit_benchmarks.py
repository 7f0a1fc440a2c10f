"""The audit's benchmark and calibration study run (tiny flags): they must not rot between full runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_calibration_study_runs_and_resumes(tmp_path):
    args = ("benchmarks/calibration.py", "--datasets", "3", "--boot", "39", "--no-old", "--cache", str(tmp_path),
            "--only", "prevalence 0.50", "equal AUCs", "3 seeds", "1,500 patients, 14 labels, true FG 2")  # fmt: skip
    out = _run(*args)
    for name in ("prevalence 0.50 vs 0.08 (null)", "two models, equal AUCs", "3 seeds", "true FG 2"):
        assert name in out
    assert "gap test:" in out and "seed-aware" in out and "adjusted bias" in out and "runtime:" in out
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert len(cached) == 4 and all(p.endswith(".jsonl") for p in cached)
    assert _run(*args).count("\n") == out.count("\n")  # the second run reads its cache


def test_audit_benchmark_runs():
    out = _run("benchmarks/bench_audit.py", "--images", "1500", "--n-boot", "20", "--baseline-reps", "1",
               "--baseline-ref", "")  # fmt: skip
    assert "fairscan audit (the default" in out and "balanced-test" in out
    assert "largest difference from scikit-learn's point estimates" in out
