"""The calibration study: every test, interval and correction of the audit, measured by simulation.

    python benchmarks/calibration.py [--datasets 1000] [--boot 999] [--only NAME ...] [--cache DIR] [--no-old]
                                     [--jobs 2]

Each scenario simulates datasets with known subgroup AUCs (``fairscan.fairness.simulate``) and audits them
as a user would. It prints, beside each target: rejection rates at p <= 0.05 under nulls (with their Monte
Carlo standard error), power under planted gaps, bias, RMSE and coverage of the headline gap and its
bias-adjusted form, and the same for fairscan 0.1's behaviour in the same run -- its permutation test, run
from a git worktree at ``--old-ref`` in a subprocess on the same datasets (size-adjusted power where its
size falls outside the [3%, 7%] window). Results are cached per dataset in ``--cache`` (JSON lines), so an
interrupted study resumes; the cache is keyed by the replicate count and fingerprints of what the audit
computes (so it survives edits that change no number).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "58d7fa1"  # fairscan 0.1's audit (permutation p-values)
WINDOW = (0.03, 0.07)
TWO = {"a": (0.3, 0.80), "b": (0.2, 0.75)}
PREV = dict(groups={"g": (("A", "B"), (0.8, 0.2))}, prevalence_by="g", prevalence_factor={"A": 0.5 / 0.3, "B": 0.08 / 0.3})


def simulator():
    """``fairscan/fairness/simulate.py`` loaded from this checkout by path, so that the 0.1 worker (whose
    package has no simulator) draws exactly the same datasets."""
    spec = importlib.util.spec_from_file_location("fairscan_simulate", ROOT / "fairscan/fairness/simulate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def scenarios(sim) -> dict[str, dict]:
    """name -> kind (gap / compare / seeds), the Scenario, audit settings, true gaps, and whether 0.1's test
    runs beside it (and on which null its size is measured)."""
    sc = sim.Scenario
    even = {"sex": (("Male", "Female"), (0.5, 0.5)), "race": (("White", "Asian", "Black"), (0.5, 0.25, 0.25))}

    def paper(patients, fg):
        return sc(patients=patients, shift={"sex": {"Female": fg}, "race": {"Black": fg}})

    out = {
        "prevalence 0.50 vs 0.08 (null)": dict(kind="gap", sc=sc(patients=2000, labels=TWO, **PREV), attrs=["g"], old=True),
        "prevalence, --balanced-test (null)": dict(kind="gap", sc=sc(patients=2000, labels=TWO, **PREV), attrs=["g"],
                                                   audit={"balanced_test": True}, old=True),
        "3 images/patient, 1% sex flipped (null)": dict(kind="gap", sc=sc(patients=600, labels=TWO, images_per_patient=3,
                                                        patient_sd=1.0, flip={"sex": 0.01}), attrs=["sex", "race"], old=True),
        "age bins varying within patients (null)": dict(kind="gap", sc=sc(patients=600, labels=TWO, images_per_patient=2.5,
                                                        patient_sd=0.5, ages=True), attrs=["age"],
                                                        audit={"age_bins": [50.0, 70.0]}, old=True),
        "prevalence, 5-point gap (power)": dict(kind="gap", sc=sc(patients=2000, labels=TWO, shift={"g": {"B": 0.05}}, **PREV),
                                               attrs=["g"], old=True, null="prevalence 0.50 vs 0.08 (null)"),
        "prevalence, --balanced-test, 5-point gap (power)": dict(
            kind="gap", sc=sc(patients=2000, labels=TWO, shift={"g": {"B": 0.05}}, **PREV), attrs=["g"],
            audit={"balanced_test": True}, old=True, null="prevalence, --balanced-test (null)"),
        "two models, equal AUCs (compare null)": dict(kind="compare", sc=sc(patients=1500, labels=TWO, groups=even),
                                                      attrs=["sex", "race"]),
        "two models, both FG race 3 points (compare null)": dict(
            kind="compare", sc=sc(patients=1500, labels=TWO, groups=even, shift={"race": {"Black": 0.03}}), attrs=["race"]),
        "two models, FG race 0 vs 3 points (compare power)": dict(
            kind="compare", sc=sc(patients=1500, labels=TWO, groups=even), b_shift={"race": {"Black": 0.03}},
            attrs=["race"]),
        "3 seeds, equal models (study null)": dict(kind="seeds", seeds=3, sc=sc(patients=1500, labels=TWO, groups=even, logits=True),
                                                   attrs=["race"]),
        "5 seeds, equal models (study null)": dict(kind="seeds", seeds=5, sc=sc(patients=1500, labels=TWO, groups=even, logits=True),
                                                   attrs=["race"]),
    }  # fmt: skip
    for patients in (13000, 1500):
        for fg in (0.0, 0.02, 0.05):
            out[f"{patients:,} patients, 14 labels, true FG {100 * fg:g}"] = dict(
                kind="gap", sc=paper(patients, fg), attrs=["sex", "race"], truth=fg, adjusted=True, gated=patients == 13000
            )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------- running


def run_gap(spec, seed, sim, boot) -> dict:
    import fairscan

    df = sim.simulate(spec["sc"], seed)[0]
    d = fairscan.audit(df, attrs=spec["attrs"], n_boot=boot, seed=seed, **spec.get("audit", {})).to_dict()
    out = {}
    for a in spec["attrs"]:
        s = d["summary"]["attrs"][a]
        labels = [d["labels"][lab]["attrs"][a] for lab in d["labels"]]
        out[a] = {k: s.get(k) for k in ("p_value", "p_value_holm", "gap", "gap_ci", "gap_adjusted", "gap_adjusted_ci")}
        out[a]["q_min"] = min((x["q_value"] for x in labels if x.get("q_value") is not None), default=None)
    return out


def run_compare(spec, seed, sim, boot) -> dict:
    import fairscan

    frames = sim.simulate(spec["sc"], seed, models=2, model_sd=0.5)
    if "b_shift" in spec:  # the same images, labels and shared noise; model b with its own shifts
        frames[1] = sim.simulate(_with(spec["sc"], shift=spec["b_shift"]), seed, models=2, model_sd=0.5)[1]
    c = fairscan.compare(frames, attrs=spec["attrs"], names=["a", "b"], n_boot=boot, seed=seed).to_dict()
    e = c["comparison"]["paired"]["b"]
    out = {"mean_auc": {"p": e["mean_auc_diff_p"], "holm": e["mean_auc_diff_p_holm"], "ci": e["mean_auc_diff_ci"]}}
    for a in spec["attrs"]:  # the worst subgroup's mean AUC is outside the Holm family
        out[f"gap:{a}"] = {"p": e["gap_diff_p"][a], "holm": e["gap_diff_p_holm"][a], "ci": e["gap_diff_ci"][a]}
        out[f"worst:{a}"] = {"p": e["worst_diff_p"][a], "holm": None, "ci": e["worst_diff_ci"][a]}
    return out


def run_seeds(spec, seed, sim, boot) -> dict:
    """Two equal models, ``seeds`` training seeds each (a seed moves every label's AUC by N(0, 1 point) and adds
    its own score noise), on one test set: the seed-aware difference against the bootstrap-only one."""
    import fairscan
    from fairscan.fairness import stats
    from fairscan.fairness.compare import difference, metric

    rng = np.random.default_rng([seed, 99])
    audits = {}
    for model in ("a", "b"):
        for s in range(spec["seeds"]):
            labels = {lab: (prev, auc + rng.normal(0, 0.01)) for lab, (prev, auc) in spec["sc"].labels.items()}
            df = sim.simulate(_with(spec["sc"], labels=labels), seed)[0]
            for lab in labels:
                df[f"logit_{lab}"] += rng.normal(0, 0.5, len(df))
            audits[model, s] = fairscan.audit(df, attrs=spec["attrs"], n_boot=boot, seed=seed)
    out = {}
    for key in ("mean_auc", *(f"{kind}:{a}" for kind in ("gap", "worst") for a in spec["attrs"])):
        values, devs = [], []
        for s in range(spec["seeds"]):
            reps = audits["b", s].replicates[key] - audits["a", s].replicates[key]
            value, dev = difference(key, metric(audits["b", s], key)[0] - metric(audits["a", s], key)[0], reps, None)
            values.append(value)
            devs.append(dev)
        aware = stats.seed_difference(values, devs, 0.95)
        # the seed mean tested on the test set's error alone, as if the seeds were one model
        plain = stats.paired_difference(float(np.mean(values)), np.mean(devs, axis=0), 0.95)
        out[key] = {"aware": aware["p_value"], "bootstrap_only": plain["p_value"]}
    return out


def _with(sc, **changes):
    from dataclasses import replace

    return replace(sc, **changes)


OLD_WORKER = "--old-worker"


def old_worker(name: str, seeds: list[int], perms: int) -> None:
    """Runs under fairscan 0.1 (PYTHONPATH = its worktree): its permutation test on the same datasets."""
    import fairscan

    sim = simulator()
    spec = scenarios(sim)[name]
    for seed in seeds:
        df = sim.simulate(spec["sc"], seed)[0]
        d = fairscan.audit(df, attrs=spec["attrs"], intervals="none", permutations=perms, seed=seed,
                           **spec.get("audit", {})).to_dict()  # fmt: skip
        print(json.dumps({"seed": seed, **{a: d["summary"]["attrs"][a]["p_value"] for a in spec["attrs"]}}), flush=True)


# ---------------------------------------------------------------------------------------------- caching


def fingerprints() -> dict[str, str]:
    """What the statistics compute (not the code's text), per kind of computation: a full-set audit, a
    balanced one, a comparison and a seed difference of one small simulated dataset, each hashed. A scenario's
    cache is keyed by the kinds it uses, so editing a comment keeps every cache, and changing the balanced
    draws keeps the full-set scenarios'."""
    import fairscan
    from fairscan.fairness import stats

    sim = simulator()
    frames = sim.simulate(sim.Scenario(patients=300, labels=TWO, images_per_patient=2, patient_sd=0.5), 0, models=2,
                          model_sd=0.5)  # fmt: skip
    parts = {
        "audit": fairscan.audit(frames[0], attrs=["sex", "race"], n_boot=50).to_dict()["summary"],
        "balanced": fairscan.audit(frames[0], attrs=["sex", "race"], n_boot=50, balanced_test=True).to_dict()["summary"],
        "compare": fairscan.compare(frames, attrs=["race"], names=["a", "b"], n_boot=50).to_dict()["comparison"]["paired"],
        "seeds": [stats.seed_difference([0.01, 0.02, k / 100], [np.linspace(-0.01, 0.01 * j, 50) for j in range(3)], 0.95)
                  for k in (1, 5)],
    }  # fmt: skip
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:8] for k, v in parts.items()}


def kinds(spec: dict) -> list[str]:
    out = ["audit"]
    if spec.get("audit", {}).get("balanced_test"):
        out.append("balanced")
    if spec["kind"] in ("compare", "seeds"):
        out.append(spec["kind"])
    return out


class Cache:
    """Results per dataset, one JSON-lines file per scenario and implementation, named by the scenario, the
    replicate count and the fingerprints of what it computes."""

    def __init__(self, folder: Path, tag: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tag = tag

    def path(self, name: str, which: str) -> Path:
        slug = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")
        return self.folder / f"{slug}.{which}.{self.tag}.jsonl"

    def load(self, name: str, which: str) -> dict[int, dict]:
        p = self.path(name, which)
        if not p.exists():
            return {}
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return {r["seed"]: r for r in rows}

    def append(self, name: str, which: str, row: dict) -> None:
        with open(self.path(name, which), "a") as f:
            f.write(json.dumps(row) + "\n")


def run_new(name, spec, n, boot, sim, cache: Cache) -> dict[int, dict]:
    done = cache.load(name, "new")
    fn = {"gap": run_gap, "compare": run_compare, "seeds": run_seeds}[spec["kind"]]
    for seed in range(n):
        if seed not in done:
            row = {"seed": seed, **fn(spec, seed, sim, boot)}
            cache.append(name, "new", row)
            done[seed] = row
    return {s: done[s] for s in range(n)}


def run_old(name, n, perms, cache: Cache, old_root: Path | None) -> dict[int, dict] | None:
    done = cache.load(name, "old")
    todo = [s for s in range(n) if s not in done]
    if todo and old_root is not None:
        env = {**os.environ, "PYTHONPATH": str(old_root)}
        cmd = [sys.executable, __file__, OLD_WORKER, name, "--perms", str(perms), "--seeds", ",".join(map(str, todo))]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                row = json.loads(line)
                cache.append(name, "old", row)
                done[row["seed"]] = row
    return {s: done[s] for s in range(n) if s in done} or None


# ---------------------------------------------------------------------------------------------- summaries


def rate(ps) -> tuple[float, float]:
    ps = np.array([p for p in ps if p is not None], dtype=float)
    r = float((ps <= 0.05).mean()) if len(ps) else math.nan
    return r, math.sqrt(r * (1 - r) / max(len(ps), 1))


def _fmt_rate(r, se, target=WINDOW) -> str:
    ok = target[0] <= r <= target[1]
    return f"{100 * r:5.1f}% (±{100 * se:.1f}) {'ok' if ok else 'OUT of [3%, 7%]'}"


def summarise_gap(name, spec, new, old, all_new, all_old) -> list[str]:
    lines = []
    power = name.endswith("(power)")
    for a in spec["attrs"]:
        ps = [r[a]["p_value"] for r in new.values()]
        r, se = rate(ps)
        what = "power" if power else "rejection rate"
        line = f"  {a:5s} gap test {what}: {100 * r:5.1f}%" if power else f"  {a:5s} gap test: {_fmt_rate(r, se)}"
        if old:
            po = [o[a] for o in old.values()]
            ro, seo = rate(po)
            line += f"   | 0.1 permutation test: {100 * ro:5.1f}% (±{100 * seo:.1f})"
            if power and spec.get("null") in all_old:
                null = [o[a] for o in all_old[spec["null"]].values() if o[a] is not None]
                cut = float(np.quantile(null, 0.05))
                adj = np.mean([p <= cut for p in po if p is not None])
                line += f", size-adjusted {100 * adj:5.1f}% (its null size {100 * rate(null)[0]:.1f}%)"
        lines.append(line)
    if len(spec["attrs"]) > 1 and not power and "truth" not in spec:
        fam = [any(r[a]["p_value_holm"] <= 0.05 for a in spec["attrs"]) for r in new.values()]
        raw = [any(r[a]["p_value"] <= 0.05 for a in spec["attrs"]) for r in new.values()]
        lines.append(f"  Holm over {len(spec['attrs'])} attributes: family-wise {100 * np.mean(fam):.1f}% "
                     f"(unadjusted {100 * np.mean(raw):.1f}%), target <= 5%")  # fmt: skip
    return lines


def summarise_adjusted(name, spec, new) -> list[str]:
    fg = spec["truth"]
    lines = []
    for a in spec["attrs"]:
        raw = np.array([r[a]["gap"] for r in new.values()])
        adj = np.array([r[a]["gap_adjusted"] for r in new.values()])
        lo = np.array([(r[a]["gap_adjusted_ci"] or [0.0, math.inf])[0] for r in new.values()])
        hi = np.array([(r[a]["gap_adjusted_ci"] or [0.0, math.inf])[1] for r in new.values()])
        pct = np.array([r[a]["gap_ci"] or [-math.inf, math.inf] for r in new.values()])
        ps = np.array([r[a]["p_value"] for r in new.values()])
        cov = np.mean((lo <= fg + 1e-12) & (fg <= hi + 1e-12))
        cov_raw = np.mean((pct[:, 0] <= fg) & (fg <= pct[:, 1]))
        line = (f"  {a:5s} raw FG bias {100 * (raw.mean() - fg):+.2f}, RMSE {100 * np.sqrt(((raw - fg) ** 2).mean()):.2f}"
                f" | adjusted bias {100 * (adj.mean() - fg):+.2f}, RMSE {100 * np.sqrt(((adj - fg) ** 2).mean()):.2f}"
                f" | coverage {100 * cov:.1f}% (raw percentile interval {100 * cov_raw:.1f}%)")  # fmt: skip
        if spec.get("gated"):
            bias_ok = abs(adj.mean() - fg) <= 0.005
            line += f" [bias {'ok' if bias_ok else 'OVER 0.5'}"
            line += f", coverage {'ok' if cov >= 0.92 else 'UNDER 92%'}]" if fg > 0 else "]"
        if fg == 0:
            dual = np.mean((lo == 0) == (ps >= 0.05 - 1e-12))
            qs = [r[a]["q_min"] for r in new.values()]
            line += (f"\n         at 0: gap test {_fmt_rate(*rate(ps))}; interval contains 0 exactly when p >= 0.05 in "
                     f"{100 * dual:.1f}% of datasets; BH over labels, any q <= 0.05: {100 * rate(qs)[0]:.1f}%")  # fmt: skip
        else:
            line += f"\n         power of the gap test: {100 * rate(ps)[0]:.1f}%"
        lines.append(line)
    return lines


def summarise_compare(name, spec, new) -> list[str]:
    lines = []
    keys = [k for k in next(iter(new.values())) if k != "seed"]
    shifted = spec.get("b_shift", {})
    for k in keys:
        ps = [r[k]["p"] for r in new.values()]
        if not shifted:
            lines.append(f"  {k:9s} paired difference: {_fmt_rate(*rate(ps))}")
        elif k != "mean_auc":
            truth = _true_difference(k, spec["sc"], _with(spec["sc"], shift=shifted))
            cis = [r[k]["ci"] for r in new.values() if r[k]["ci"]]
            cover = np.mean([lo <= truth <= hi for lo, hi in cis])
            lines.append(f"  {k:9s} power {100 * rate(ps)[0]:.1f}%, coverage of the true difference "
                         f"{100 * truth:+g} points {100 * cover:.1f}% (target 95%)")  # fmt: skip
    if not shifted:
        family = [k for k in keys if not k.startswith("worst:")]
        fam = [any(r[k]["holm"] <= 0.05 for k in family) for r in new.values()]
        lines.append(f"  Holm over the {len(family)} differences: family-wise {100 * np.mean(fam):.1f}%, target <= 5%")
    return lines


def _true_difference(key: str, a, b) -> float:
    """Model b minus model a of ``gap:<attr>`` or ``worst:<attr>`` (a shift lowers its group's AUC, so the worst
    subgroup sits the largest shift below the labels' AUC)."""
    kind, attr = key.split(":")
    if kind == "gap":
        return b.true_gap(attr) - a.true_gap(attr)
    lowest = [max([0.0, *sc.shift.get(attr, {}).values()]) for sc in (a, b)]
    return -(lowest[1] - lowest[0])


def summarise_seeds(name, spec, new) -> list[str]:
    lines = []
    for k in [k for k in next(iter(new.values())) if k != "seed"]:
        aware = rate([r[k]["aware"] for r in new.values()])
        plain = rate([r[k]["bootstrap_only"] for r in new.values()])
        lines.append(f"  {k:9s} seed-aware: {_fmt_rate(*aware)}   | bootstrap only (ignores seeds): {100 * plain[0]:5.1f}%")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=999)
    ap.add_argument("--only", nargs="*", help="scenario names (substrings)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".calibration-cache")
    ap.add_argument("--old-ref", default=OLD_REF)
    ap.add_argument("--no-old", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="processes (each with one numba thread)")
    args = ap.parse_args()
    start = time.perf_counter()
    sim = simulator()
    specs = scenarios(sim)
    if args.only:
        specs = {k: v for k, v in specs.items() if any(o in k for o in args.only)}
    prints = fingerprints()
    old_root = None if args.no_old else _old_worktree(args.old_ref)
    results_new, results_old = {}, {}
    tags = {name: "-".join(prints[k] for k in kinds(spec)) + f"-b{args.boot}" for name, spec in specs.items()}
    jobs = [(name, args.datasets, args.boot, args.cache, tags[name], old_root) for name in specs]
    jobs.sort(key=lambda job: -specs[job[0]]["sc"].patients * len(specs[job[0]]["sc"].labels))  # biggest first
    try:
        if args.jobs > 1:  # datasets in parallel processes, one numba thread each (threads oversubscribe)
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            os.environ["NUMBA_NUM_THREADS"] = "1"  # read by the spawned workers (fork is unsafe after OpenMP)
            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                for name, new, old in pool.map(_run_scenario, jobs):
                    results_new[name], results_old[name] = new, old
        else:
            for job in jobs:
                name, new, old = _run_scenario(job)
                results_new[name], results_old[name] = new, old
    finally:
        if old_root is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_root)], capture_output=True)
    print(f"calibration study: {args.datasets} datasets per scenario, {args.boot} bootstrap replicates per test "
          f"(0.1's test: as many permutations); fingerprints {prints}")  # fmt: skip
    for name, spec in specs.items():
        new, old = results_new[name], results_old.get(name)
        print(f"\n{name}")
        if "truth" in spec:
            lines = summarise_adjusted(name, spec, new)
        elif spec["kind"] == "gap":
            lines = summarise_gap(name, spec, new, old, results_new, results_old)
        else:
            lines = {"compare": summarise_compare, "seeds": summarise_seeds}[spec["kind"]](name, spec, new)
        print("\n".join(lines))
    print(f"\nruntime: {time.perf_counter() - start:.0f} s (cached datasets are not rerun)")


def _run_scenario(job) -> tuple[str, dict, dict | None]:
    name, n, boot, folder, tag, old_root = job
    sim = simulator()
    spec = scenarios(sim)[name]
    cache = Cache(folder, tag)
    t = time.perf_counter()
    new = run_new(name, spec, n, boot, sim, cache)
    old = run_old(name, n, boot, cache, old_root) if spec.get("old") else None
    print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    return name, new, old


def _old_worktree(ref: str) -> Path | None:
    where = Path(tempfile.mkdtemp()) / "fairscan-0.1"
    made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        print(f"(no 0.1 baseline: {made.stderr.strip()})", file=sys.stderr)
        return None
    return where


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == OLD_WORKER:
        ap = argparse.ArgumentParser()
        ap.add_argument("name")
        ap.add_argument("--perms", type=int)
        ap.add_argument("--seeds")
        a = ap.parse_args(sys.argv[2:])
        old_worker(a.name, [int(s) for s in a.seeds.split(",")], a.perms)
    else:
        main()
