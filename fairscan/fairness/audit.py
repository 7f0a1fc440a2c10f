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
- ``thresholds``: TPR/FPR/FNR, equalized odds and ECE; ``curves``: ROC and reliability curves;
- ``layout``: the JSON of ``docs/audit-json.md``, read off the zipped statistics; ``result``: the
  :class:`AuditResult`, which owns the CI gate (:meth:`AuditResult.check`).

This module holds the settings and runs the steps in order. All values are fractions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fairscan.errors import InputError
from fairscan.fairness import kernels, stats, thresholds
from fairscan.fairness.groups import INTERSECT, build_attributes, units
from fairscan.fairness.layout import Layout, Trees, Zip
from fairscan.fairness.resample import BalanceCells, balance_cells, bootstrap_counts, image_keys
from fairscan.fairness.result import AuditResult, gate_reasons
from fairscan.io import TABLE_SUFFIXES
from fairscan.schema import Predictions, read_predictions

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INTERSECT", "AuditConfig", "AuditResult", "audit", "gate_reasons"]


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
    dedupe: str | None = None  # a column naming the image (path): one row per image, the first
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


def _one_row_per_image(preds: Predictions, by: str | None) -> tuple[Predictions, list[str]]:
    """With ``by`` (``--dedupe path``) one row per image and a note of what was dropped; without, a note when
    a ``path`` column shows that rows repeat images (a sample drawn with replacement)."""
    from fairscan.schema import dedupe, repeated_images

    repeats = repeated_images(preds, by=by or "path")
    if by is None:
        return preds, [repeats.note()] if repeats else []
    return dedupe(preds, by), [repeats.deduped_note()] if repeats else []


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
        preds, repeats = _one_row_per_image(preds, cfg.dedupe)
        self.p, self.cfg, self.progress, self.thr_source = preds, cfg, progress, thresholds_from
        self.notes: list[str] = list(preds.notes) + repeats
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
        tree = Trees(self.attrs, valid, used, with_auc)
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
        zipped = Zip(point_tree, reps_tree, centre_tree, self.level, self.min_count)
        rates = {lab: thresholds.metrics(u, rate_boot.get(lab), self.attrs, zipped.ci) for lab, u in rate_units.items()}
        layout = Layout(self, data, counts, zipped, draw_tree, delong, rates, tree)
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


