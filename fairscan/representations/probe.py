"""How well a protected attribute can be read from a model's features: a logistic probe.

The method (Gichoya et al., Lancet Digital Health 2022; Jones et al., MICCAI 2023, as a linear probe):

- Cross-validation over **patients**: k folds (``folds``, default 5) stratified by the target, no patient in
  both a training and a test fold (:func:`patient_folds`). Splitting images instead lets a
  model recognise the patient rather than the attribute, and reads too high (see the tests and
  ``benchmarks/calibrate_probe.py``).
- In each training fold: features standardised (mean 0, sd 1 on that fold), and an L2-penalised multinomial
  logistic regression whose inverse penalty C is chosen from a small grid (``grid``) by the mean log loss
  over an inner patient-grouped cross-validation (``inner_folds``); then refitted on the whole training fold.
- On each test fold: the one-vs-rest AUC of each class, their macro mean, and the balanced accuracy (chance
  level 1/k for k classes); all averaged over the folds.
- Significance: a permutation test of the whole procedure (Ojala and Garriga, JMLR 2010): the target is
  permuted between patients and everything above (folds, grid search, fits) rerun, ``permutations`` times;
  p = (1 + #{permuted macro AUC >= observed}) / (permutations + 1). Patients trade their whole sequence of
  targets with patients of the same number of images (exchangeability blocks), so a patient's images move
  together, targets that vary between a patient's images (age bins) stay valid, and every permutation keeps
  the class counts.
- The confounder check (as Gichoya et al.): the same probe from the labels, age and sex alone (the target's
  own column left out), so a reader can see how much of the signal the disease labels and demographics explain.
- Across splits (``evaluate_on``): fit on one table (the grid chosen by patient-grouped CV on it), evaluate on
  another; the permutation test then permutes the evaluated table's target between its patients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.representations.crossval import (
    blas_threads,
    class_metrics,
    class_proba,
    cross_validate,
    fit_probe,
)
from fairscan.representations.features import Features, read_features, resolve_settings, subgroups
from fairscan.representations.permutation import null_distribution, permutation_p, permutation_rng, permuted
from fairscan.schema import LABEL_PREFIX

PROBE_SCHEMA = "fairscan.probe/1"


class ProbeSettings(BaseModel):
    """Every setting of a probe; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(default_factory=lambda: ["race"])
    folds: int = Field(5, ge=2)
    inner_folds: int = Field(3, ge=2)
    grid: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0])
    permutations: int = Field(100, ge=0)
    seed: int = 0
    age_bins: list[float] = Field(default_factory=lambda: [40.0, 60.0, 80.0])
    confounders: bool = True
    max_iter: int = Field(1000, ge=10)
    jobs: int = Field(1, ge=1)  # processes that share the permutations (the result does not depend on it)

    @field_validator("grid")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(c <= 0 for c in v):
            raise ValueError("give one or more positive C values (inverse L2 penalty), e.g. 0.01,0.1,1")
        return sorted(set(v))

    @field_validator("targets")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one target (e.g. race)")
        return v


# ------------------------------------------------------------------------------------------------ targets


@dataclass
class _Target:
    name: str
    classes: list[str]
    codes: np.ndarray  # class index per row of the table, -1 = missing


def _target(features: Features, name: str, s: ProbeSettings, classes: list[str] | None = None) -> _Target:
    """The target's class per row; an evaluated table (``classes`` given) takes the fitted table's classes."""
    codes, groups = subgroups(features, name, s.age_bins)
    seen = [groups[i] for i in sorted(set(codes[codes >= 0].tolist()))]
    if classes is not None:
        unknown = [g for g in seen if g not in classes]
        if unknown:
            raise InputError(
                f"{features.source}: {name} has class(es) {', '.join(unknown)} that the fitted table lacks",
                hint="fit on a table with every class, or drop those rows",
            )
    classes = seen if classes is None else classes
    index = {g: j for j, g in enumerate(classes)}
    lookup = np.array([index.get(g, -1) for g in groups] + [-1], dtype=np.int64)  # code -1 reads the last
    return _Target(name, list(classes), lookup[codes])


def _check_classes(t: _Target, patients: np.ndarray, folds: int, source: str) -> None:
    if len(t.classes) < 2:
        raise InputError(
            f"{source}: {t.name} has one subgroup ({', '.join(t.classes) or 'none'}) among the rows with features",
            hint="a probe needs two classes or more; probe another attribute",
        )
    rows = t.codes >= 0
    for c, cls in enumerate(t.classes):
        n = len(np.unique(patients[rows][t.codes[rows] == c]))
        if n < folds:
            raise InputError(
                f"{source}: {t.name} class {cls!r} has {n} patient(s); {folds}-fold cross-validation needs "
                f"at least {folds} per class",
                hint="use fewer --folds, merge the class (e.g. other --age-bins), or drop its rows",
            )


def confounder_matrix(features: Features, target: str, s: ProbeSettings) -> tuple[np.ndarray, list[str]]:
    """The labels, age and sex as features (the target's own columns left out): masked labels read 0 with
    an indicator beside them, a missing age the mean age with an indicator, sex one-hot."""
    frame = features.frame
    parts = {p.strip() for p in target.split("+")}
    cols, names = [], []
    for c in [c for c in frame.columns if str(c).startswith(LABEL_PREFIX)]:
        v = frame[c].to_numpy(dtype=np.float64)
        cols.append(np.nan_to_num(v, nan=0.0))
        names.append(c)
        if np.isnan(v).any():
            cols.append(np.isnan(v).astype(np.float64))
            names.append(f"{c} masked")
    if "age" in frame.columns and "age" not in parts:
        import pandas as pd

        age = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(age).any():
            cols.append(np.where(np.isnan(age), np.nanmean(age), age))
            names.append("age")
            if np.isnan(age).any():
                cols.append(np.isnan(age).astype(np.float64))
                names.append("age missing")
    if "sex" in frame.columns and "sex" not in parts:
        codes, groups = subgroups(features, "sex", s.age_bins)
        for j, g in enumerate(groups):
            cols.append((codes == j).astype(np.float64))
            names.append(f"sex={g}")
    return (np.column_stack(cols) if cols else np.empty((len(frame), 0))), names


# ------------------------------------------------------------------------------------------------- results


@dataclass
class TargetProbe:
    """One target's probe: the statistics, averaged over the folds (or on the evaluated table)."""

    target: str
    classes: list[str]
    images: list[int]  # per class
    patients: list[int]  # per class
    left_out: int  # rows without a value of the target
    auc: list[float]  # one-vs-rest AUC per class
    auc_macro: float
    auc_macro_folds: list[float]
    balanced_accuracy: float
    p_value: float | None
    permutations: int
    C: list[float]  # the C chosen in each fold
    confounders: dict[str, Any] | None = None

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "classes": self.classes,
            "images": dict(zip(self.classes, self.images)),
            "patients": dict(zip(self.classes, self.patients)),
            "left_out": self.left_out,
            "auc": dict(zip(self.classes, self.auc)),
            "auc_macro": self.auc_macro,
            "auc_macro_folds": self.auc_macro_folds,
            "balanced_accuracy": self.balanced_accuracy,
            "chance": self.chance,
            "p_value": self.p_value,
            "permutations": self.permutations,
            "C": self.C,
            "confounders": self.confounders,
        }


@dataclass
class ProbeResult:
    """Every target's probe of one features table (or of a fitted and an evaluated table)."""

    source: str
    evaluate_on: str | None
    settings: ProbeSettings
    images: int
    patients: int
    features: int
    probes: list[TargetProbe]
    notes: list[str] = field(default_factory=list)

    def probe(self, target: str) -> TargetProbe:
        for p in self.probes:
            if p.target == target:
                return p
        raise KeyError(target)

    def _repr_html_(self) -> str:
        """How a notebook shows the result: the report's tables (``fairscan.representations.report``)."""
        from fairscan.representations.report import probe_fragment

        return probe_fragment(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PROBE_SCHEMA,
            "fairscan_version": __version__,
            "source": self.source,
            "evaluate_on": self.evaluate_on,
            "images": self.images,
            "patients": self.patients,
            "features": self.features,
            "settings": self.settings.model_dump(),
            "probes": [p.to_dict() for p in self.probes],
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------------------------- the probe


def _as_features(obj) -> Features:
    return obj if isinstance(obj, Features) else read_features(obj)


def _compact(patients: np.ndarray) -> np.ndarray:
    return np.unique(patients, return_inverse=True)[1].astype(np.int64)


class _Run:
    """One target's rows: features, classes and patients, with the counts a result reports."""

    def __init__(self, t: _Target, X: np.ndarray, patients: np.ndarray):
        rows = t.codes >= 0
        self.X = X if rows.all() else X[rows]  # no copy of a large matrix when every row has the target
        self.y, self.groups = t.codes[rows], _compact(patients[rows])
        self.rows, self.k, self.t = rows, len(t.classes), t
        self.images = [int(np.sum(self.y == c)) for c in range(self.k)]
        self.patients = [len(np.unique(self.groups[self.y == c])) for c in range(self.k)]

    def result(self, auc, macro_folds, bal, p, n_perm, cs, confounders) -> TargetProbe:
        return TargetProbe(
            target=self.t.name,
            classes=self.t.classes,
            images=self.images,
            patients=self.patients,
            left_out=int((~self.rows).sum()),
            auc=[float(a) for a in auc],
            auc_macro=float(np.mean(macro_folds)),
            auc_macro_folds=[float(m) for m in macro_folds],
            balanced_accuracy=float(bal),
            p_value=p,
            permutations=n_perm,
            C=cs,
            confounders=confounders,
        )


def _confounder_summary(names: list[str], auc, macro: float, balanced_accuracy: float) -> dict[str, Any]:
    return {
        "features": names,
        "auc": [float(a) for a in auc],
        "auc_macro": float(macro),
        "balanced_accuracy": float(balanced_accuracy),
    }


def _probe_cv(f: Features, run: _Run, s: ProbeSettings, index: int, progress) -> TargetProbe:
    """Cross-validation on one table, the permutation test, and the confounder check."""
    task = progress.add_task(f"probe {run.t.name}", total=1 + s.permutations) if progress else None
    observed = cross_validate(run.X, run.y, run.groups, s, run.k)
    if progress:
        progress.update(task, advance=1)
    null = null_distribution(run, s, index, lambda n: progress.update(task, advance=n) if progress else None)
    p = permutation_p(observed.macro, null) if s.permutations else None
    confounders = None
    if s.confounders:
        Xc, names = confounder_matrix(f, run.t.name, s)
        if names:
            c = cross_validate(Xc[run.rows], run.y, run.groups, s, run.k)
            confounders = _confounder_summary(
                names, np.nanmean(c.auc, axis=0), c.macro, c.balanced_accuracy.mean()
            )
    return run.result(
        np.nanmean(observed.auc, axis=0),
        observed.macro_folds,
        observed.balanced_accuracy.mean(),
        p,
        s.permutations,
        observed.C,
        confounders,
    )


def _probe_across(f: Features, e: Features, fit: _Run, ev: _Run, s: ProbeSettings, index: int, progress):
    """Fit on one table, evaluate on the other; the permutation test permutes the evaluated target."""
    model = fit_probe(fit.X, fit.y, fit.groups, s, fit.k)
    proba = class_proba(model, ev.X, fit.k)
    auc, bal = class_metrics(ev.y, proba)
    macro = float(np.nanmean(auc))
    rng = permutation_rng(s.seed, index)
    null = np.array(
        [np.nanmean(class_metrics(permuted(ev.y, ev.groups, rng), proba)[0]) for _ in range(s.permutations)]
    )
    p = permutation_p(macro, null) if s.permutations else None
    confounders = None
    if s.confounders:
        Xf, names_f = confounder_matrix(f, fit.t.name, s)
        Xe, names_e = confounder_matrix(e, fit.t.name, s)
        names = [n for n in names_f if n in names_e]
        if names:
            cf = fit_probe(Xf[fit.rows][:, [names_f.index(n) for n in names]], fit.y, fit.groups, s, fit.k)
            ca, cb = class_metrics(
                ev.y, class_proba(cf, Xe[ev.rows][:, [names_e.index(n) for n in names]], fit.k)
            )
            confounders = _confounder_summary(names, ca, np.nanmean(ca), cb)
    if progress:
        progress.update(progress.add_task(f"probe {fit.t.name}", total=1), advance=1)
    return ev.result(auc, [macro], bal, p, s.permutations, [float(model[1].C)], confounders)


def probe(
    features: Features | str,
    targets: list[str] | str | None = None,
    *,
    settings: ProbeSettings | None = None,
    evaluate_on: Features | str | None = None,
    progress=None,
    **overrides: Any,
) -> ProbeResult:
    """Probe a features table (a path or :class:`Features`) for each target; see the module's docstring.

    With ``evaluate_on``, fit on ``features`` and evaluate on that table instead of cross-validating.
    Every input is checked before the first fit.
    """
    from sklearn.exceptions import ConvergenceWarning

    s = resolve_settings(ProbeSettings, settings, "targets", targets, overrides, "probe")
    f = _as_features(features)
    e = _as_features(evaluate_on) if evaluate_on is not None else None
    runs = _prepare(f, e, s)
    notes = list(f.notes) + (list(e.notes) if e is not None else [])
    probes = []
    with warnings.catch_warnings(record=True) as caught, blas_threads(runs[0][0].X):
        warnings.simplefilter("always", ConvergenceWarning)
        for i, (fit, ev) in enumerate(runs):
            probes.append(
                _probe_cv(f, fit, s, i, progress)
                if ev is None
                else _probe_across(f, e, fit, ev, s, i, progress)
            )
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if unconverged:
        notes.append(f"{unconverged} logistic fit(s) stopped at max_iter={s.max_iter} before converging")
    if s.confounders:
        notes += _confounder_notes(f, probes)
    for p in probes:
        if p.left_out:
            notes.append(f"{p.target}: {p.left_out:,} row(s) without a value are left out of its probe")
    table = e if e is not None else f
    return ProbeResult(
        source=f.source,
        evaluate_on=e.source if e is not None else None,
        settings=s,
        images=len(table.frame),
        patients=int(table.frame["patient_id"].nunique()),
        features=len(f.columns),
        probes=probes,
        notes=notes,
    )


def _confounder_notes(f: Features, probes: list[TargetProbe]) -> list[str]:
    """What the confounder check could not read, said rather than left to be guessed."""
    missing = [p.target for p in probes if p.confounders is None]
    if missing:
        return [f"{', '.join(missing)}: no labels, age or sex to read, so no confounder check"]
    if not any(str(c).startswith(LABEL_PREFIX) for c in f.frame.columns):
        return ["no label_<id> columns: the confounder check reads age and sex only"]
    return []


def _prepare(f: Features, e: Features | None, s: ProbeSettings) -> list[tuple[_Run, _Run | None]]:
    """Every target's rows, classes and patients, checked before any fit."""
    pf = f.patients("a patient-grouped probe")
    Xf = f.matrix()
    if e is None:
        runs = []
        for name in s.targets:
            t = _target(f, name, s)
            _check_classes(t, pf, s.folds, f.source)
            runs.append((_Run(t, Xf, pf), None))
        return runs
    if e.columns != f.columns:
        missing = [c for c in f.columns if c not in e.columns]
        raise InputError(
            f"{e.source}: its features differ from {f.source}'s"
            + (f" (it lacks {', '.join(missing[:5])})" if missing else " (another order)"),
            hint="fit and evaluate on tables written by the same model (`fairscan embed`)",
        )
    pe = e.patients("a patient-level permutation test")
    shared = set(f.frame["patient_id"]) & set(e.frame["patient_id"])
    if shared:
        raise InputError(
            f"{len(shared)} patient(s) are in both {f.source} and {e.source}, e.g. {sorted(shared)[0]!r}",
            hint="fit and evaluate on disjoint patients (e.g. the train and test splits)",
        )
    Xe = e.matrix()
    runs = []
    for name in s.targets:
        tf = _target(f, name, s)
        _check_classes(tf, pf, s.inner_folds, f.source)
        te = _target(e, name, s, classes=tf.classes)
        runs.append((_Run(tf, Xf, pf), _Run(te, Xe, pe)))
    return runs
