"""The fairness audit: computed once, read many ways (as fairlearn's MetricFrame).

``audit(preds, attrs=[...])`` returns an :class:`AuditResult`. The computation is split as fairlearn splits
``MetricFrame`` (group features, disaggregated results, bootstrap), one module per step:

- ``groups``: each attribute's subgroup per image; patients and their bootstrap strata;
- ``kernels``: one sweep of score-sorted rows per label gives the AUC of every segment (the whole
  population and each subgroup), for unit weights (the point estimate) and for every patient-bootstrap
  replicate (count weights); balanced test sets are drawn inside the kernel, a fresh draw per replicate;
- ``estimates``: segment AUCs -> gaps, deltas, means, pairwise differences, one function for the point
  estimate, the replicates and the values the replicates are centred on;
- ``stats``: replicates -> intervals, the gap test, the bias-adjusted gap (one place, one rule each);
- ``thresholds``: TPR/FPR/FNR, equalized odds and ECE.

This module runs them in order and lays the result out as the JSON of ``docs/audit-json.md``; the result
owns the CI gate (:meth:`AuditResult.check`). All values are fractions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.fairness import curves, estimates, kernels, stats, thresholds
from fairscan.fairness.groups import INTERSECT, Attribute, build_attributes, units
from fairscan.fairness.multitest import adjust
from fairscan.fairness.resample import BalanceCells, balance_cells, bootstrap_counts, image_keys
from fairscan.io import TABLE_SUFFIXES
from fairscan.schema import AUDIT_SCHEMA, Predictions, read_predictions

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INTERSECT", "AuditConfig", "AuditResult", "audit", "gate_reasons"]

GAP_TEST = (
    "H0: every subgroup has the same (mean) AUC. Patient bootstrap centred under H0: p = (1 + #{range of the "
    "replicates' deviations from the subgroup AUCs >= FG}) / (B + 1). Each image keeps its own group."
)
ADJUSTED_GAP = (
    "FG minus the bootstrap's estimate of its upward bias (best minus worst is positive even with no real "
    "difference), floored at 0; its interval [max(0, FG - q), FG + q] contains 0 exactly when p >= 1 - level."
)
MULTIPLICITY = (
    "p_value_holm: Holm over the audit's attributes; q_value: Benjamini-Hochberg over each attribute's "
    "per-label gap tests."
)


class AuditConfig(BaseModel):
    """Every setting of an audit; presets embed it, so unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    attrs: list[str] = Field(default_factory=lambda: ["sex", "race"])
    labels: list[str] | None = None
    intervals: Literal["bootstrap", "delong", "none"] = "bootstrap"
    n_boot: int = Field(1000, ge=10)
    ci_level: float = Field(0.95, gt=0, lt=1)
    resample: Literal["patient", "image"] = "patient"
    seed: int = 0
    balanced_test: bool = False
    balanced_draws: int = Field(1, ge=1, le=1000)
    min_pos: int = Field(10, ge=1)
    min_neg: int = Field(10, ge=1)
    age_bins: list[float] = Field(default_factory=lambda: [40.0, 60.0, 80.0])
    target_fpr: float = Field(0.2, gt=0, lt=1)
    tune_thresholds_on_test: bool = False
    ece_bins: int = Field(10, ge=2)
    # fairscan 0.1's permutation test (it tested exchangeable groups, not equal AUCs); accepted, ignored
    permutations: int | None = Field(None, exclude=True)

    @field_validator("attrs")
    @classmethod
    def _some_attrs(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one attribute (e.g. sex race)")
        return v


PERMUTATIONS_GONE = (
    "the permutation test is gone (--permutations / permutations: ignored): it tested whether groups are "
    "exchangeable, which unequal prevalence alone rejects; p-values now come from the bootstrap (--n-boot)"
)


# ----------------------------------------------------------------------------------------------- result


@dataclass
class AuditResult:
    """An audit computed once. Read it as a dict (:meth:`to_dict`, the JSON schema ``fairscan.audit/2``),
    as tables (:meth:`by_group`, :meth:`by_label`), or through :attr:`summary`."""

    name: str
    source: str
    config: AuditConfig
    labels: list[str]
    attrs: list[str]
    groups: dict[str, list[str]]
    n_images: int
    n_patients: int | None
    notes: list[str]
    _dict: dict[str, Any]
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    centres: dict[str, float] = field(default_factory=dict, repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self._dict)

    @property
    def summary(self) -> dict[str, Any]:
        return self._dict["summary"]

    @property
    def mean_auc(self) -> float | None:
        return self._dict["summary"]["mean_auc"]

    def gap(self, attr: str) -> float | None:
        """Headline FG of an attribute (fraction)."""
        return self._dict["summary"]["attrs"].get(attr, {}).get("gap")

    def check(self, *, max_gap: float | None = None, min_auc: float | None = None) -> dict[str, Any]:
        """The CI gate: fails when a headline gap exceeds ``max_gap`` or the mean AUC is below ``min_auc``
        (fractions). Records and returns ``{"max_gap", "min_auc", "passed", "reasons"}``."""
        reasons = gate_reasons(self._dict, max_gap, min_auc)
        gate = {"max_gap": max_gap, "min_auc": min_auc, "passed": not reasons, "reasons": reasons}
        self._dict["gate"] = gate
        return gate

    def _repr_html_(self) -> str:
        """How a notebook shows the result: its summary cards and tables (``fairscan.report.html``)."""
        from fairscan.report.html import audit_fragment

        return audit_fragment(self._dict)

    def by_label(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for lab, d in self._dict["labels"].items():
            row = {"label": lab, "n": d["n"], "n_pos": d["n_pos"], "auc": d["auc"], **_ci_cols(d["ci"])}
            for attr, ad in d["attrs"].items():
                row[f"gap_{attr}"] = ad["gap"]
                row[f"worst_{attr}"] = ad["worst_group"]
                row[f"p_{attr}"] = ad["p_value"]
            rows.append(row)
        return pd.DataFrame(rows)

    def by_group(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for lab, d in self._dict["labels"].items():
            for attr, ad in d["attrs"].items():
                for g, gd in ad["groups"].items():
                    rows.append(
                        {
                            "label": lab, "attr": attr, "group": g, "n": gd["n"], "n_pos": gd["n_pos"],
                            "auc": gd["auc"], **_ci_cols(gd["ci"]),
                            "delta_vs_group_mean": gd["delta_vs_group_mean"],
                            "delta_vs_population": gd["delta_vs_population"],
                        }
                    )  # fmt: skip
        return pd.DataFrame(rows)


def _ci_cols(ci) -> dict[str, float | None]:
    return {"ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None}


def gate_reasons(d: dict, max_gap: float | None, min_auc: float | None) -> list[str]:
    """Reasons the gate fails for one audit dict (empty when it passes)."""
    reasons = []
    name = d.get("model", "model")
    if min_auc is not None:
        mean = d["summary"]["mean_auc"]
        if mean is None or mean < min_auc:
            reasons.append(f"{name}: mean AUC {_pts(mean)} is below --min-auc {_pts(min_auc)}")
    if max_gap is not None:
        for attr, sd in d["summary"]["attrs"].items():
            gap = sd.get("gap")
            if gap is None:
                reasons.append(f"{name}: no {attr} gap: {sd.get('why_no_gap') or 'see the notes'}")
            elif gap > max_gap:
                reasons.append(
                    f"{name}: {attr} gap {_pts(gap)} exceeds --max-gap {_pts(max_gap)} "
                    f"({sd.get('worst_group')} vs {sd.get('best_group')})"
                )
    return reasons


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} points"


# ------------------------------------------------------------------------------------------------ audit


def audit(
    preds: Predictions | pd.DataFrame | str | os.PathLike,
    attrs: list[str] | None = None,
    *,
    config: AuditConfig | None = None,
    thresholds_from: Predictions | pd.DataFrame | str | os.PathLike | None = None,
    name: str | None = None,
    progress=None,
    **settings: Any,
) -> AuditResult:
    """Audit one predictions table (a path, a DataFrame or :class:`~fairscan.schema.Predictions`).

    ``attrs`` and keyword ``settings`` override ``config`` (see :class:`AuditConfig`). ``thresholds_from``
    takes validation predictions for the threshold metrics (TPR/FPR/FNR at ``target_fpr``).
    """
    cfg = resolve_config(config, attrs, settings)
    p = as_predictions(preds)
    return _Auditor(p, cfg, thresholds_from, name, progress).run()


def resolve_config(config: AuditConfig | None, attrs, settings) -> AuditConfig:
    from pydantic import ValidationError

    base = (config or AuditConfig()).model_dump()
    if config is not None and config.permutations is not None:
        base["permutations"] = config.permutations
    if attrs is not None:
        base["attrs"] = list(attrs)
    base.update(settings)
    try:
        return AuditConfig(**base)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(f"audit setting {where}: {first['msg']}") from exc


def as_predictions(obj) -> Predictions:
    import pandas as pd

    from fairscan.schema import validate_predictions

    if isinstance(obj, Predictions):
        return obj
    if isinstance(obj, pd.DataFrame):
        return validate_predictions(obj, "DataFrame")
    return read_predictions(obj)


def stem(source: str) -> str:
    """A model's name from its file: ``runs/mae/test.parquet`` -> ``test``."""
    name = os.path.basename(str(source))
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "predictions"


@dataclass
class _Label:
    """One label's audited rows (those with a label), sorted by score, with their full-set segments."""

    scores: np.ndarray
    y: np.ndarray  # int8 0/1
    unit: np.ndarray  # resampling unit (patient or image) per row
    seg: np.ndarray  # (rows, 1 + attributes): segment ids; n_seg = none
    tied: np.ndarray
    order: np.ndarray  # row positions in the predictions table
    cells: BalanceCells | None = None
    seg_all: np.ndarray | None = None  # with balanced draws: the full-set and every draw's segment columns


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


class _Auditor:
    """The audit's computation, step by step; ``run`` returns the AuditResult."""

    def __init__(self, preds: Predictions, cfg: AuditConfig, thresholds_from, name, progress):
        if thresholds_from is not None and cfg.tune_thresholds_on_test:
            raise InputError("--thresholds-from and --tune-thresholds-on-test exclude each other")
        if cfg.balanced_test and cfg.intervals == "delong" and cfg.balanced_draws > 1:
            raise InputError(
                "DeLong intervals cover one balanced draw, not an average of several",
                hint="use --intervals bootstrap with --balanced-draws, or --balanced-draws 1",
            )
        self.p, self.cfg, self.progress, self.thr_source = preds, cfg, progress, thresholds_from
        self.notes: list[str] = list(preds.notes)
        if cfg.permutations is not None:
            self.notes.append(PERMUTATIONS_GONE)
        self.name = name or stem(preds.source)
        self.labels = self._select_labels()
        self.attrs = build_attributes(preds.frame, cfg.attrs, cfg.age_bins, preds.source)
        self.n_seg = 1 + sum(len(a.groups) for a in self.attrs)
        self.units = self._units()
        self.level = cfg.ci_level
        self.min_count = stats.boot_min_count(cfg.n_boot)
        self._note_groups()

    # -- set-up

    def _select_labels(self) -> list[str]:
        if self.cfg.labels is None:
            return list(self.p.labels)
        unknown = [lab for lab in self.cfg.labels if lab not in self.p.labels]
        if unknown:
            raise InputError(
                f"{self.p.source}: unknown label(s) {', '.join(unknown)}",
                hint=f"labels in this file: {', '.join(self.p.labels)}",
            )
        return list(self.cfg.labels)

    def _units(self):
        cfg, frame = self.cfg, self.p.frame
        by_image = cfg.resample == "image" or not self.p.has_patients
        if not self.p.has_patients and cfg.intervals == "bootstrap" and cfg.resample != "image":
            raise InputError(
                f"{self.p.source}: no patient_id column (or it has blanks); intervals resample patients",
                hint="add patient_id, or pass --resample image to resample images instead (intervals then "
                "ignore that one patient's images are correlated), or --intervals none",
            )
        if cfg.resample == "image":
            self.notes.append(
                "resampling images, not patients, as asked (--resample image)"
                if self.p.has_patients
                else "no patient_id: intervals resample images, not patients (--resample image)"
            )
        ids = frame["patient_id"] if self.p.has_patients else None
        return units(ids, self.attrs, by_image=by_image)

    def _note_groups(self) -> None:
        for a in self.attrs:
            missing = a.codes < 0
            if missing.any():
                n_pat = len(np.unique(self.units.of_row[missing])) if self.p.has_patients else None
                who = f" ({n_pat} patient(s))" if n_pat is not None and self.units.n_patients else ""
                self.notes.append(
                    f"{a.name}: {int(missing.sum())} image(s){who} have no value and are in no {a.name} "
                    f"subgroup (they count in the overall AUCs)"
                )
            if len(a.groups) == 1:
                self.notes.append(f"{a.name}: one group only ({a.groups[0]}) in this file, so there is no gap")
            if a.patients_varying:
                self.notes.append(
                    f"{a.name}: {a.patients_varying} patient(s) have images in more than one {a.name} group (or "
                    f"without one); each image counts in its own group and the bootstrap resamples whole patients"
                )

    # -- per label

    def _label(self, lab: str) -> _Label:
        """Rows with a label, sorted by the ranking score (logits when given), and their segments."""
        y_all, s_all = self.p.y(lab), self.p.score(lab)
        rows = np.flatnonzero(~np.isnan(y_all))
        order = rows[np.argsort(s_all[rows], kind="mergesort")]
        seg = np.full((len(order), 1 + len(self.attrs)), -1, dtype=np.int32)
        seg[:, 0] = 0
        for j, a in enumerate(self.attrs, start=1):
            codes = a.codes[order]
            seg[codes >= 0, j] = a.offset + codes[codes >= 0]
        scores = s_all[order].astype(np.float64)
        unit = self.units.of_row[order]
        return _Label(scores, y_all[order].astype(np.int8), unit, kernels.segments(seg, self.n_seg),
                      kernels.ties(scores), order)  # fmt: skip

    def _counts(self, r: _Label):
        n = np.bincount(r.seg.ravel(), minlength=self.n_seg + 1)[: self.n_seg]
        pos = np.bincount(r.seg[r.y == 1].ravel(), minlength=self.n_seg + 1)[: self.n_seg]
        return n, pos

    def _cells(self, lab: str, r: _Label, valid: dict[str, np.ndarray], keys: np.ndarray) -> BalanceCells:
        columns = [
            (a.name, np.where(r.seg[:, j] < self.n_seg, r.seg[:, j] - a.offset, -1), a.groups, valid[a.name],
             a.offset)
            for j, a in enumerate(self.attrs, start=1)
        ]  # fmt: skip
        return balance_cells(r.y, r.unit, keys[r.order], columns, seed=self.cfg.seed, label=lab)

    def _balanced(self, r: _Label, weights: np.ndarray, replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-set segment AUCs (replicates, segments) and balanced-draw ones (replicates, draws, segments) of
        bootstrap replicates, from one sweep per replicate."""
        k = self.cfg.balanced_draws
        out = kernels.balanced_segment_aucs(r.y, r.unit, r.seg_all, r.tied, r.cells.arrays, k, self.n_seg, weights,
                                            replicates)  # fmt: skip
        return out[:, : self.n_seg], out[:, self.n_seg :].reshape(len(weights), k, self.n_seg)

    def _balanced_point(self, r: _Label) -> np.ndarray:
        """The point estimate's balanced-draw segment AUCs, (draws, segments)."""
        k = self.cfg.balanced_draws
        out = kernels.counted_segment_aucs(r.y, r.unit, r.seg_all, r.tied, (1 + k) * self.n_seg,
                                           np.ones(self.units.count), r.cells.point_counts(k))  # fmt: skip
        return out[self.n_seg :].reshape(k, self.n_seg)

    @staticmethod
    def _reported(full: np.ndarray, balanced: np.ndarray | None) -> np.ndarray:
        """The AUCs the audit reports: the whole population's from the full set, the subgroups' from the
        balanced draws (averaged) when balancing."""
        if balanced is None:
            return full
        out = full.copy()
        out[:, 1:] = balanced[:, 1:]
        return out

    # -- main

    def run(self) -> AuditResult:
        cfg = self.cfg
        data = {lab: self._label(lab) for lab in self.labels}
        ones = np.ones((1, self.units.count))
        full, counts, valid_seg = {}, {}, {}
        for lab, r in data.items():
            n, pos = self._counts(r)
            ok = (pos >= cfg.min_pos) & (n - pos >= cfg.min_neg)
            ok[0] = pos[0] > 0 and n[0] - pos[0] > 0
            valid_seg[lab] = ok
            aucs = kernels.segment_aucs(r.y, r.unit, r.seg, r.tied, self.n_seg, ones)
            full[lab] = np.where(ok, aucs, np.nan)
            counts[lab] = (n, pos)
        self._note_small_groups(counts, valid_seg)
        valid = {lab: {a.name: valid_seg[lab][list(a.segments)] for a in self.attrs} for lab in self.labels}
        draws = {}
        if cfg.balanced_test:
            keys = image_keys(self.p.frame["image_id"].tolist())
            for lab, r in data.items():
                r.cells = self._cells(lab, r, valid[lab], keys)
                r.seg_all = r.cells.segments(r.seg, self.n_seg, cfg.balanced_draws)
                per_draw = self._balanced_point(r)  # (draws, segments)
                draws[lab] = np.where(valid_seg[lab], per_draw, np.nan)
                counts[lab] = self._balanced_counts(r, counts[lab])
        point = {lab: self._reported(full[lab], draws[lab].mean(axis=0, keepdims=True) if draws else None)
                 for lab in self.labels}  # fmt: skip
        used = self._labels_used(valid)
        with_auc = self._labels_with_auc(point)
        tree = _Trees(self.attrs, valid, used, with_auc)
        point_tree = tree(point)
        centre_tree = tree(full) if draws else None
        draw_tree = tree({lab: self._reported(np.repeat(full[lab], len(d), axis=0), d) for lab, d in draws.items()}) \
            if draws and cfg.balanced_draws > 1 else None  # fmt: skip

        thr = self._thresholds()
        rate_units = {lab: self._rate_units(r, thr["raw"][lab]) for lab, r in data.items()
                      if thr and thr["raw"].get(lab) is not None}  # fmt: skip
        reps_tree, rate_boot = None, {}
        if cfg.intervals == "bootstrap":
            boot, rate_boot = self._bootstrap(data, valid_seg, rate_units)
            reps_tree = tree(boot)
        delong = self._delong(data, valid_seg) if cfg.intervals == "delong" else None
        zipped = _Zip(point_tree, reps_tree, centre_tree, self.level, self.min_count)
        rates = {lab: thresholds.metrics(u, rate_boot.get(lab), self.attrs, zipped.ci) for lab, u in rate_units.items()}
        layout = _Layout(self, data, counts, zipped, draw_tree, delong, rates, tree)
        d = layout.audit_dict(thr)
        return AuditResult(
            name=self.name, source=self.p.source, config=cfg, labels=self.labels,
            attrs=[a.name for a in self.attrs], groups={a.name: a.groups for a in self.attrs},
            n_images=len(self.p.frame), n_patients=self.units.n_patients, notes=self.notes, _dict=d,
            replicates=zipped.headline_replicates(), centres=zipped.headline_centres(), provenance=self.p.provenance,
        )  # fmt: skip

    def _balanced_counts(self, r: _Label, full_counts):
        """Counts behind balanced AUCs: every valid group holds the draw's quota."""
        n, pos = full_counts[0].copy(), full_counts[1].copy()
        for a, info in zip(self.attrs, r.cells.per_attr, strict=True):
            if info is not None:
                n[list(a.segments)] = info["n_per_group"]
                pos[list(a.segments)] = info["n_pos_per_group"]
        return n, pos

    def _note_small_groups(self, counts, valid_seg) -> None:
        for lab in self.labels:
            n, pos = counts[lab]
            if not valid_seg[lab][0]:
                self.notes.append(f"{lab}: only one class in the whole population, so no AUC")
            for a in self.attrs:
                for gi, g in enumerate(a.groups):
                    k = a.offset + gi
                    if not valid_seg[lab][k] and n[k] > 0:
                        self.notes.append(
                            f"{lab}: {a.name}={g} has {pos[k]} positives and {n[k] - pos[k]} negatives "
                            f"(fewer than {self.cfg.min_pos}/{self.cfg.min_neg}, see --min-count): AUC left "
                            f"missing"
                        )

    def _labels_with_auc(self, point) -> list[str]:
        labs = [lab for lab in self.labels if not np.isnan(point[lab][0, 0])]
        if not labs:
            raise InputError(
                f"{self.p.source}: no label has both positives and negatives, so there is no AUC to audit",
                hint="check the label columns (1 = positive, 0 = negative, empty = masked)",
            )
        return labs

    def _labels_used(self, valid) -> dict[str, list[str]]:
        used = {}
        for a in self.attrs:
            labs = [lab for lab in self.labels if valid[lab][a.name].all()]
            left = [lab for lab in self.labels if lab not in labs]
            if left and len(a.groups) > 1:
                self.notes.append(
                    f"{a.name}: label(s) {', '.join(left)} lack an AUC in some subgroup and are left out of "
                    f"the subgroup means and the headline gap"
                )
            if not labs and len(a.groups) > 1:
                self.notes.append(f"{a.name}: no label has an AUC in every subgroup, so there is no headline gap")
            used[a.name] = labs
        return used

    def _bootstrap(self, data, valid_seg, rate_units) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Replicate AUCs per label (replicates, segments), and for labels with a threshold the replicate
        counts behind TPR and FPR (replicates, 4, segments), both from the same resampled patients."""
        cfg = self.cfg
        out = {lab: np.empty((cfg.n_boot, self.n_seg)) for lab in self.labels}
        rate_out = {lab: np.empty((cfg.n_boot, *u.shape[1:])) for lab, u in rate_units.items()}
        done = 0
        task = self.progress.add_task("bootstrap", total=cfg.n_boot) if self.progress else None
        for w in bootstrap_counts(self.units.strata, cfg.n_boot, cfg.seed):
            ids = np.arange(done, done + len(w))
            for lab, r in data.items():
                if r.cells is None:
                    full, balanced = kernels.segment_aucs(r.y, r.unit, r.seg, r.tied, self.n_seg, w), None
                else:
                    full, draws = self._balanced(r, w, ids)
                    balanced = draws.mean(axis=1)
                out[lab][done : done + len(w)] = self._reported(full, balanced)
            for lab, u in rate_units.items():  # weighted sums of each unit's counts: one small matmul
                rate_out[lab][done : done + len(w)] = (w @ u.reshape(len(u), -1)).reshape(len(w), *u.shape[1:])
            done += len(w)
            if task is not None:
                self.progress.update(task, completed=done)
        for lab in self.labels:
            out[lab][:, ~valid_seg[lab]] = np.nan
        return out, rate_out

    def _delong(self, data, valid_seg) -> dict[str, np.ndarray]:
        """DeLong intervals of single AUCs (on the balanced draw's rows when balancing); clustered by patient
        (Obuchowski) when patients are known and resampled."""
        clustered = self.p.has_patients and self.cfg.resample == "patient"
        out = {}
        for lab, r in data.items():
            seg = r.seg
            if r.cells is not None:  # the point estimate's draw (one draw: see __init__)
                seg = np.full_like(r.seg, self.n_seg)
                seg[:, 0] = 0
                kept = r.cells.point_counts(1) > 0
                for j in range(r.cells.n_cols):
                    seg[kept[:, j], 1 + j] = r.seg[kept[:, j], 1 + j]
            ci = np.full((self.n_seg, 2), np.nan)
            for k in np.flatnonzero(valid_seg[lab]):
                rows = (seg == k).any(axis=1)
                clusters = r.unit[rows] if clustered else None
                _, lo, hi = kernels.delong_ci(r.y[rows], r.scores[rows], self.level, clusters)
                ci[k] = lo, hi
            out[lab] = ci
        how = "account for patient clustering (Obuchowski, 1997)" if clustered else "treat images as independent"
        self.notes.append(f"DeLong intervals cover single AUCs only and {how}; gaps, deltas and means have none")
        return out

    def _thresholds(self) -> dict[str, Any] | None:
        """Per-label thresholds at a global FPR, from validation predictions (or the audited file if asked)."""
        cfg = self.cfg
        if self.thr_source is None and not cfg.tune_thresholds_on_test:
            return None
        if self.thr_source is not None:
            val = as_predictions(self.thr_source)
            source = val.source
        else:
            val, source = self.p, "test (tuned on the audited file)"
            self.notes.append("thresholds were tuned on the audited file itself: threshold metrics are optimistic")
        logit = {lab: self.p.has_logits(lab) for lab in self.labels}
        raw = thresholds.choose(val, self.labels, cfg.target_fpr, logit)
        shown = {lab: thresholds.as_probability(t, logit[lab]) for lab, t in raw.items()}
        return {"source": str(source), "target_fpr": cfg.target_fpr, "values": shown, "raw": raw}

    def _rate_units(self, r: _Label, t: float) -> np.ndarray:
        return thresholds.rate_units(r.y, r.unit, r.seg, r.scores, t, self.units.count, self.n_seg)


class _Trees:
    """Segment AUCs per label -> the tree of every statistic (``estimates``), for any leading axis."""

    def __init__(self, attrs, valid, used, with_auc):
        self.attrs, self.valid, self.used, self.with_auc = attrs, valid, used, with_auc

    def __call__(self, aucs: dict[str, np.ndarray]) -> dict[str, Any]:
        labels = {lab: estimates.per_label(a, self.attrs, self.valid[lab]) for lab, a in aucs.items()}
        return {"labels": labels, "summary": estimates.summary(labels, self.with_auc, self.attrs, self.used)}


class _Zip:
    """Point estimates, replicates and centres zipped into (value, interval) by one rule (``stats``)."""

    def __init__(self, point, reps, centre, level, min_count):
        self.point, self.reps, self.centre = point, reps, centre
        self.level, self.min_count = level, min_count

    @staticmethod
    def leaf(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    def arrays(self, *path, i=None):
        """(point (G,) or scalar, replicates (B, ...) or None, centre or None) of one statistic."""

        def pick(tree):
            if tree is None:
                return None
            x = self.leaf(tree, path)
            return x[:, i] if i is not None else x

        point, reps, centre = pick(self.point), pick(self.reps), pick(self.centre)
        return point[0], reps, (None if centre is None else centre[0])

    def __call__(self, *path, i=None) -> tuple[float | None, list[float] | None]:
        point, reps, centre = self.arrays(*path, i=i)
        value = _num(point)
        return value, stats.interval(value, reps, None if centre is None else float(centre), self.level,
                                     min_count=self.min_count)  # fmt: skip

    def ci(self, reps: np.ndarray | None) -> list[float] | None:
        return stats.percentile_ci(reps, self.level, min_count=self.min_count)

    def gap_test(self, *path) -> dict[str, Any] | None:
        """Gap test of the groups at ``path`` (a tree node with ``groups`` or ``group_mean_auc``)."""
        if self.reps is None:
            return None
        key = "group_mean_auc" if path[0] == "summary" else "groups"
        point, reps, centre = self.arrays(*path, key)
        have = ~np.isnan(point)
        centre = point if centre is None else centre
        return stats.gap_test(point[have], reps[:, have], centre[have], self.level, min_count=self.min_count)

    def worst(self, *path) -> list[float] | None:
        if self.reps is None:
            return None
        point, reps, centre = self.arrays(*path, "group_mean_auc")
        return stats.worst_group(point, reps, point if centre is None else centre, self.level,
                                 min_count=self.min_count)  # fmt: skip

    def headline_replicates(self) -> dict[str, np.ndarray]:
        """Replicates of the mean AUC and each headline gap, for paired comparisons between models."""
        if self.reps is None:
            return {}
        s = self.reps["summary"]
        out = {"mean_auc": s["mean_auc"]}
        out.update({f"gap:{a}": sd["gap"] for a, sd in s["attrs"].items()})
        return out

    def headline_centres(self) -> dict[str, float]:
        """What those replicates are centred on (absent: on the point estimates)."""
        if self.centre is None:
            return {}
        s = self.centre["summary"]
        out = {"mean_auc": float(s["mean_auc"][0])}
        out.update({f"gap:{a}": float(sd["gap"][0]) for a, sd in s["attrs"].items()})
        return out


class _Layout:
    """The audit dict of ``docs/audit-json.md``, read off the zipped statistics."""

    def __init__(self, auditor: _Auditor, data, counts, z: _Zip, draw_tree, delong, rates, tree: _Trees):
        self.a, self.data, self.counts, self.z = auditor, data, counts, z
        self.draw_tree, self.delong, self.rates = draw_tree, delong, rates
        self.used, self.with_auc = tree.used, tree.with_auc
        self.cfg = auditor.cfg

    def audit_dict(self, thr) -> dict[str, Any]:
        a, cfg = self.a, self.cfg
        labels_out = {lab: self._label(lab) for lab in a.labels}
        self._q_values(labels_out)
        summary_attrs = {attr.name: self._summary_attr(attr) for attr in a.attrs}
        holm = adjust([s.get("p_value") for s in summary_attrs.values()], "holm")
        for s, ph in zip(summary_attrs.values(), holm, strict=True):
            s["p_value_holm"] = ph
        if self.z.reps is not None:
            dropped = int(np.isnan(self.z.reps["summary"]["mean_auc"]).sum())
            if dropped:
                a.notes.append(f"{dropped} of {cfg.n_boot} bootstrap replicates lost a class in some label")
        if cfg.intervals != "bootstrap":
            a.notes.append("no p-values: the gap test uses the bootstrap (--intervals bootstrap)")
        settings = cfg.model_dump()
        settings["labels"] = a.labels
        mean_auc, mean_auc_ci = self.z("summary", "mean_auc")
        return {
            "schema": AUDIT_SCHEMA, "fairscan_version": __version__, "model": a.name, "source": a.p.source,
            "provenance": a.p.provenance, "units": "fraction", "settings": settings,
            "inference": {"gap_test": GAP_TEST, "gap_adjusted": ADJUSTED_GAP, "multiplicity": MULTIPLICITY,
                          "balanced": self._balanced_note()},
            "notes": a.notes, "n_images": len(a.p.frame), "n_patients": a.units.n_patients,
            "labels": labels_out,
            "summary": {"mean_auc": mean_auc, "mean_auc_ci": mean_auc_ci, "labels": self.with_auc,
                        "attrs": summary_attrs},
            "thresholds": None if thr is None else {k: v for k, v in thr.items() if k != "raw"},
            "curves": self._curves(),
            "gate": None,
        }  # fmt: skip

    def _curves(self) -> dict[str, Any]:
        """ROC and reliability curves per label, overall and per subgroup, on the full test set."""
        roc, rel = {}, {}
        for lab, r in self.data.items():
            p = self.a.p.p(lab)[r.order]
            roc[lab] = {"overall": curves.roc_tpr(r.y, r.scores)}
            rel[lab] = {"overall": curves.reliability(r.y, p, self.cfg.ece_bins)}
            for j, attr in enumerate(self.a.attrs, start=1):
                roc[lab][attr.name], rel[lab][attr.name] = {}, {}
                for gi, g in enumerate(attr.groups):
                    rows = r.seg[:, j] == attr.offset + gi
                    roc[lab][attr.name][g] = curves.roc_tpr(r.y[rows], r.scores[rows])
                    rel[lab][attr.name][g] = curves.reliability(r.y[rows], p[rows], self.cfg.ece_bins) if rows.any() else None
        return {"fpr": [float(x) for x in curves.FPR_GRID], "roc": roc, "reliability": rel}

    def _balanced_note(self) -> str | None:
        if not self.cfg.balanced_test:
            return None
        k = self.cfg.balanced_draws
        return (
            f"subgroup AUCs on balanced test sets (every subgroup with the same positives and negatives, drawn "
            f"without replacement), averaged over {k} draw(s); each bootstrap replicate draws its own sets, and "
            f"intervals and tests are centred on the full-set values that balancing leaves unchanged in "
            f"expectation"
        )

    def _label(self, lab: str) -> dict[str, Any]:
        r, (n, pos), z = self.data[lab], self.counts[lab], self.z
        auc, ci = z("labels", lab, "overall")
        if self.delong is not None:
            ci = _nan_list(self.delong[lab][0])
        thr = self.rates.get(lab)
        return {
            "n": int(n[0]), "n_pos": int(pos[0]), "auc": auc, "ci": ci if auc is not None else None,
            "ece": thresholds.ece(r.y, self.a.p.p(lab)[r.order], self.cfg.ece_bins),
            "threshold": thr["overall"] if thr else None,
            "attrs": {attr.name: self._label_attr(lab, attr, thr) for attr in self.a.attrs},
        }  # fmt: skip

    def _label_attr(self, lab: str, attr: Attribute, thr) -> dict[str, Any]:
        r, z = self.data[lab], self.z
        path = ("labels", lab, "attrs", attr.name)
        groups = {g: self._group(lab, attr, gi, thr) for gi, g in enumerate(attr.groups)}
        gap, gap_ci = z(*path, "gap")
        best, worst = _best_worst(z.arrays(*path, "groups")[0], attr.groups)
        test = z.gap_test(*path) if gap is not None else None
        balanced = None
        if r.cells is not None and r.cells.per_attr[self.a.attrs.index(attr)] is not None:
            balanced = {**r.cells.per_attr[self.a.attrs.index(attr)], "draws": self.cfg.balanced_draws,
                        "balance_sd": self._balance_sd(*path)}  # fmt: skip
        return {
            "groups": groups, "gap": gap, "gap_ci": gap_ci, "p_value": test["p_value"] if test else None,
            "q_value": None, "best_group": best, "worst_group": worst, "balanced": balanced,
            "threshold_gaps": thr[attr.name]["gaps"] if thr else None,
        }  # fmt: skip

    def _group(self, lab: str, attr: Attribute, gi: int, thr) -> dict[str, Any]:
        r, (n, pos), z = self.data[lab], self.counts[lab], self.z
        path, k = ("labels", lab, "attrs", attr.name), attr.offset + gi
        auc, ci = z(*path, "groups", i=gi)
        if self.delong is not None:
            ci = _nan_list(self.delong[lab][k])
        in_group = r.seg[:, 1 + self.a.attrs.index(attr)] == k  # the full test set, balanced or not
        dgm, dgm_ci = z(*path, "delta_vs_group_mean", i=gi)
        dpop, dpop_ci = z(*path, "delta_vs_population", i=gi)
        return {
            "n": int(n[k]), "n_pos": int(pos[k]), "auc": auc, "ci": ci if auc is not None else None,
            "delta_vs_group_mean": dgm, "delta_vs_group_mean_ci": dgm_ci,
            "delta_vs_population": dpop, "delta_vs_population_ci": dpop_ci,
            "threshold": thr[attr.name]["groups"][attr.groups[gi]] if thr else None,
            "ece": thresholds.ece(r.y[in_group], self.a.p.p(lab)[r.order][in_group], self.cfg.ece_bins),
            "note": None if auc is not None else _why_missing(n[k], pos[k], self.cfg),
        }  # fmt: skip

    def _balance_sd(self, *path) -> float | None:
        """Standard deviation of a balanced gap over the draws (None with one draw)."""
        if self.draw_tree is None:
            return None
        gaps = self.z.leaf(self.draw_tree, (*path, "gap"))
        gaps = gaps[~np.isnan(gaps)]
        return float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None

    def _q_values(self, labels_out: dict) -> None:
        """Benjamini-Hochberg over each attribute's per-label gap tests."""
        for attr in self.a.attrs:
            ps = [labels_out[lab]["attrs"][attr.name]["p_value"] for lab in self.a.labels]
            for lab, q in zip(self.a.labels, adjust(ps, "fdr_bh"), strict=True):
                labels_out[lab]["attrs"][attr.name]["q_value"] = q

    def _summary_attr(self, attr: Attribute) -> dict[str, Any]:
        a, z, name = self.a, self.z, attr.name
        if len(attr.groups) < 2 or name not in z.point["summary"]["attrs"]:
            why = (f"{name} has one group only ({attr.groups[0]})" if len(attr.groups) == 1
                   else f"no label has an AUC in every {name} subgroup")  # fmt: skip
            return {"groups": attr.groups, "gap": None, "gap_ci": None, "gap_adjusted": None, "gap_adjusted_ci": None,
                    "p_value": None, "why_no_gap": why, "labels_used": [], "labels_left_out": list(a.labels),
                    "patients_varying": attr.patients_varying}  # fmt: skip
        path = ("summary", "attrs", name)
        per_group = {key: {g: z(*path, key, i=gi)[0] for gi, g in enumerate(attr.groups)}
                     for key in ("group_mean_auc", "delta_vs_group_mean", "delta_vs_population")}  # fmt: skip
        per_group_ci = {f"{key}_ci": {g: z(*path, key, i=gi)[1] for gi, g in enumerate(attr.groups)}
                        for key in per_group}  # fmt: skip
        gap, gap_ci = z(*path, "gap")
        best, worst = _best_worst(z.arrays(*path, "group_mean_auc")[0], attr.groups)
        test = z.gap_test(*path) if gap is not None else None
        label_gaps = {lab: z(*("labels", lab, "attrs", name, "gap"))[0] for lab in self.used[name]}
        max_lab = max(label_gaps, key=lambda k: -np.inf if label_gaps[k] is None else label_gaps[k])
        out = {
            "groups": attr.groups, "group_mean_auc": per_group["group_mean_auc"],
            "group_mean_auc_ci": per_group_ci["group_mean_auc_ci"], "gap": gap, "gap_ci": gap_ci,
            "gap_adjusted": test["gap_adjusted"] if test else None,
            "gap_adjusted_ci": test["gap_adjusted_ci"] if test else None,
            "p_value": test["p_value"] if test else None, "best_group": best, "worst_group": worst,
            "worst_group_auc": z(*path, "worst_group_auc")[0], "worst_group_auc_ci": z.worst(*path),
            "pairwise": self._pairwise(attr, path),
            "delta_vs_group_mean": per_group["delta_vs_group_mean"],
            "delta_vs_group_mean_ci": per_group_ci["delta_vs_group_mean_ci"],
            "delta_vs_population": per_group["delta_vs_population"],
            "delta_vs_population_ci": per_group_ci["delta_vs_population_ci"],
            "labels_used": self.used[name], "labels_left_out": [lab for lab in a.labels if lab not in self.used[name]],
            "mean_label_gap": z(*path, "mean_label_gap")[0], "mean_label_gap_ci": z(*path, "mean_label_gap")[1],
            "max_label_gap": z(*path, "max_label_gap")[0], "max_label_gap_ci": z(*path, "max_label_gap")[1],
            "max_label_gap_label": max_lab, "patients_varying": attr.patients_varying,
            "balance_sd": self._balance_sd(*path), "equalized_odds": self._mean_eo(name),
        }  # fmt: skip
        return out

    def _pairwise(self, attr: Attribute, path) -> list[dict[str, Any]]:
        out = []
        for k, (i, j) in enumerate(estimates.pairs(attr.groups)):
            diff, ci = self.z(*path, "pairwise", i=k)
            out.append({"a": attr.groups[i], "b": attr.groups[j], "diff": diff, "ci": ci})
        return out

    def _mean_eo(self, attr: str) -> float | None:
        """Mean over labels of the equalized-odds gap at the thresholds (None without thresholds)."""
        values = [r[attr]["gaps"]["equalized_odds"] for r in self.rates.values()]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None


def _nan_list(ci) -> list[float] | None:
    return None if np.isnan(ci).any() else [float(ci[0]), float(ci[1])]


def _best_worst(values: np.ndarray, groups: list[str]) -> tuple[str | None, str | None]:
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None, None
    idx = np.flatnonzero(ok)
    return groups[idx[np.argmax(values[idx])]], groups[idx[np.argmin(values[idx])]]


def _why_missing(n: int, pos: int, cfg: AuditConfig) -> str:
    if n == 0:
        return "no images"
    if pos == 0 or pos == n:
        return "one class only"
    return f"too few positives or negatives ({pos}/{n - pos}; minimum {cfg.min_pos}/{cfg.min_neg}, see --min-count)"
