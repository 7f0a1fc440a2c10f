"""The fairness audit: computed once, read many ways (as fairlearn's MetricFrame).

``audit(preds, attrs=[...])`` returns an :class:`AuditResult`. Every AUC (overall and per subgroup) comes
from one sweep of score-sorted rows per label (``kernels.segment_aucs``); the same sweep runs for the point
estimate (unit weights) and for every patient-bootstrap replicate (count weights), and one function
(:func:`_derive`) turns a vector of segment AUCs into gaps, deltas and means, for the point estimate and for
each replicate alike. Intervals are percentiles over replicates.

Terms (METHOD section 5): the per-label *gap* of an attribute is the best minus the worst subgroup AUC; the
headline *FG* is the gap of the subgroups' mean AUCs over labels, using only labels with an AUC in every
subgroup. *delta_vs_group_mean* compares a subgroup with the mean over subgroups (Fig. 3),
*delta_vs_population* with the whole population's AUC (Figs. 5 and 6). All values are fractions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.fairness import kernels
from fairscan.fairness.resample import (
    BALANCE_STREAM,
    balanced_rows,
    bootstrap_counts,
    permuted_codes,
    rng_for,
)
from fairscan.io import TABLE_SUFFIXES
from fairscan.schema import AUDIT_SCHEMA, RACES, SEXES, Predictions, read_predictions

if TYPE_CHECKING:
    import pandas as pd

INTERSECT = "+"  # "sex+race" audits the intersectional groups of sex and race


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
    permutations: int = Field(1000, ge=0)
    min_pos: int = Field(10, ge=1)
    min_neg: int = Field(10, ge=1)
    age_bins: list[float] = Field(default_factory=lambda: [40.0, 60.0, 80.0])
    target_fpr: float = Field(0.2, gt=0, lt=1)
    tune_thresholds_on_test: bool = False
    ece_bins: int = Field(10, ge=2)

    @field_validator("attrs")
    @classmethod
    def _some_attrs(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one attribute (e.g. sex race)")
        return v


# ----------------------------------------------------------------------------------------------- groups


@dataclass
class _Attr:
    name: str
    groups: list[str]
    codes: np.ndarray  # per row: group index or -1 (missing)
    offset: int = 0  # first segment of this attribute
    varies_within_patient: bool = False


def _group_order(values: list[str]) -> list[str]:
    for canon in (SEXES, RACES):
        if set(values) <= set(canon):
            return [g for g in canon if g in values]
    return sorted(values)


def _bin_ages(age: np.ndarray, edges: list[float]) -> tuple[np.ndarray, list[str]]:
    edges = sorted(edges)
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]:g}"]
    codes = np.where(np.isnan(age), -1, np.searchsorted(edges, age, side="right"))
    return codes.astype(np.int32), names


def _attribute(
    frame: pd.DataFrame, name: str, age_bins: list[float], source: str
) -> tuple[np.ndarray, list[str]]:
    """Group codes (-1 = missing) and group names of one plain attribute column."""
    import pandas as pd

    if name not in frame.columns:
        cols = [c for c in frame.columns if not c.startswith(("label_", "prob_", "logit_"))]
        raise InputError(
            f"{source}: unknown attribute {name!r}",
            hint=f"attribute columns in this file: {', '.join(cols) or '(none)'}",
        )
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col) and col.nunique() > 12:
        return _bin_ages(col.to_numpy(dtype="float64"), age_bins)
    text = col.astype("string")
    present = sorted(set(text.dropna()) - {""})
    if not present:
        raise InputError(f"{source}: attribute {name!r} has no values")
    order = _group_order(present)
    lookup = {g: i for i, g in enumerate(order)}
    codes = np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in text.tolist()], dtype=np.int32)
    return codes, order


def _build_attrs(frame: pd.DataFrame, names: list[str], age_bins: list[float], source: str) -> list[_Attr]:
    attrs: list[_Attr] = []
    for name in names:
        parts = name.split(INTERSECT)
        coded = [_attribute(frame, p.strip(), age_bins, source) for p in parts]
        if len(coded) == 1:
            codes, groups = coded[0]
        else:  # intersectional: every combination that occurs, in the parts' orders
            combos = np.stack([c for c, _ in coded], axis=1)
            missing = (combos < 0).any(axis=1)
            seen = sorted({tuple(r) for r in combos[~missing].tolist()})
            lookup = {k: i for i, k in enumerate(seen)}
            codes = np.array(
                [-1 if m else lookup[tuple(r)] for r, m in zip(combos.tolist(), missing)], np.int32
            )
            groups = [INTERSECT.join(coded[j][1][k] for j, k in enumerate(key)) for key in seen]
        attrs.append(_Attr(name=name, groups=groups, codes=codes))
    offset = 1  # segment 0 is the whole population
    for a in attrs:
        a.offset = offset
        offset += len(a.groups)
    return attrs


@dataclass
class _Rows:
    """One label's audited rows (those with a label), sorted by score, with their segment memberships."""

    scores: np.ndarray
    y: np.ndarray  # int8 0/1
    pat: np.ndarray  # resampling unit (patient or image) per row
    seg: np.ndarray  # (rows, 1 + attributes): segment ids; n_seg = none
    tied: np.ndarray
    order: np.ndarray  # row positions in the predictions table
    balanced: dict[str, dict[str, int]]


# ------------------------------------------------------------------------------------------- derivation


def _nan_gap(x: np.ndarray) -> np.ndarray:
    """max - min over the last axis; NaN if any entry is NaN (a replicate that lost a subgroup)."""
    return x.max(axis=-1) - x.min(axis=-1)


def _derive(aucs: np.ndarray, attrs: list[_Attr], valid: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-label statistics from segment AUCs of shape (R, segments); R = 1 for the point estimate.

    ``valid[attr]`` masks the groups that have an AUC in the point estimate; the others are left out of
    gaps and means everywhere so that replicates and point estimate describe the same quantity.
    """
    out: dict[str, Any] = {"overall": aucs[:, 0], "attrs": {}}
    for a in attrs:
        g = aucs[:, a.offset : a.offset + len(a.groups)]
        keep = valid[a.name]
        kept = g[:, keep]
        if keep.sum() >= 2:
            gap = _nan_gap(kept)
            mean = kept.mean(axis=1)
        else:
            gap = np.full(len(g), np.nan)
            mean = kept.mean(axis=1) if keep.any() else np.full(len(g), np.nan)
        masked = np.where(keep[None, :], g, np.nan)
        out["attrs"][a.name] = {
            "groups": masked,
            "gap": gap,
            "delta_vs_group_mean": masked - mean[:, None],
            "delta_vs_population": masked - aucs[:, :1],
        }
    return out


def _summarise(
    per_label: dict[str, dict], labels: list[str], attrs: list[_Attr], used: dict
) -> dict[str, Any]:
    """Summary statistics across labels, from per-label derivations (point or replicates alike)."""
    overall = np.stack([per_label[lab]["overall"] for lab in labels], axis=-1)
    out: dict[str, Any] = {"mean_auc": overall.mean(axis=-1), "attrs": {}}
    for a in attrs:
        labs = used[a.name]
        if not labs:
            continue
        g = np.stack([per_label[lab]["attrs"][a.name]["groups"] for lab in labs], axis=-1)  # (R, G, L)
        # Labels used have an AUC in every subgroup, so a NaN here is a replicate that lost a class.
        group_mean = g.mean(axis=-1)
        pop_mean = np.stack([per_label[lab]["overall"] for lab in labs], axis=-1).mean(axis=-1)
        label_gaps = np.stack([per_label[lab]["attrs"][a.name]["gap"] for lab in labs], axis=-1)
        out["attrs"][a.name] = {
            "group_mean_auc": group_mean,
            "gap": _nan_gap(group_mean) if group_mean.shape[1] >= 2 else np.full(len(group_mean), np.nan),
            "delta_vs_group_mean": group_mean - group_mean.mean(axis=1, keepdims=True),
            "delta_vs_population": group_mean - pop_mean[:, None],
            "mean_label_gap": label_gaps.mean(axis=-1),
            "max_label_gap": label_gaps.max(axis=-1),
        }
    return out


# ----------------------------------------------------------------------------------------------- result


@dataclass
class AuditResult:
    """An audit computed once. Read it as a dict (:meth:`to_dict`, the JSON schema ``fairscan.audit/1``),
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

    def by_label(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for lab, d in self._dict["labels"].items():
            row = {"label": lab, "n": d["n"], "n_pos": d["n_pos"], "auc": d["auc"], **_ci_cols(d["ci"])}
            for attr, ad in d["attrs"].items():
                row[f"gap_{attr}"] = ad["gap"]
                row[f"worst_{attr}"] = ad["worst_group"]
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
                            "label": lab,
                            "attr": attr,
                            "group": g,
                            "n": gd["n"],
                            "n_pos": gd["n_pos"],
                            "auc": gd["auc"],
                            **_ci_cols(gd["ci"]),
                            "delta_vs_group_mean": gd["delta_vs_group_mean"],
                            "delta_vs_population": gd["delta_vs_population"],
                        }
                    )
        return pd.DataFrame(rows)


def _ci_cols(ci) -> dict[str, float | None]:
    return {"ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None}


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
    cfg = _resolve_config(config, attrs, settings)
    p = _as_predictions(preds)
    return _Auditor(p, cfg, thresholds_from, name, progress).run()


def _resolve_config(config: AuditConfig | None, attrs, settings) -> AuditConfig:
    from pydantic import ValidationError

    base = (config or AuditConfig()).model_dump()
    if attrs is not None:
        base["attrs"] = list(attrs)
    base.update(settings)
    try:
        return AuditConfig(**base)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(f"audit setting {where}: {first['msg']}") from exc


def _as_predictions(obj) -> Predictions:
    import pandas as pd

    from fairscan.schema import validate_predictions

    if isinstance(obj, Predictions):
        return obj
    if isinstance(obj, pd.DataFrame):
        return validate_predictions(obj, "DataFrame")
    return read_predictions(obj)


class _Auditor:
    """The audit's computation, step by step; ``run`` returns the AuditResult."""

    def __init__(self, preds: Predictions, cfg: AuditConfig, thresholds_from, name, progress):
        self.p, self.cfg, self.progress = preds, cfg, progress
        self.notes: list[str] = []
        self.name = name or _stem(preds.source)
        frame = preds.frame
        self.labels = self._select_labels()
        self.attrs = _build_attrs(frame, cfg.attrs, cfg.age_bins, preds.source)
        self.n_seg = 1 + sum(len(a.groups) for a in self.attrs)
        self._patients()
        if thresholds_from is not None and cfg.tune_thresholds_on_test:
            raise InputError("--thresholds-from and --tune-thresholds-on-test exclude each other")
        self.thr_source = thresholds_from

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

    def _patients(self) -> None:
        import pandas as pd

        frame = self.p.frame
        needs_patients = self.cfg.intervals == "bootstrap" or self.cfg.permutations > 0
        if self.p.has_patients:
            self.pat, uniq = pd.factorize(frame["patient_id"], sort=True)
            self.n_patients = len(uniq)
        elif needs_patients and self.cfg.resample != "image":
            raise InputError(
                f"{self.p.source}: no patient_id column (or it has blanks); intervals resample patients",
                hint="add patient_id, or pass --resample image to resample images instead (intervals then "
                "ignore that one patient's images are correlated), or --intervals none --permutations 0",
            )
        else:
            self.pat, self.n_patients = np.arange(len(frame)), None
        if self.cfg.resample == "image":
            if self.p.has_patients:
                self.notes.append("resampling images, not patients, as asked (--resample image)")
            else:
                self.notes.append("no patient_id: intervals resample images, not patients (--resample image)")
            self.pat = np.arange(len(frame))
        self.pat = np.asarray(self.pat, dtype=np.int32)
        n_units = int(self.pat.max()) + 1 if len(self.pat) else 0
        # A patient's group is its first image's group; strata are the combinations over attributes.
        first = np.full(n_units, -1, dtype=np.int64)
        first[self.pat[::-1]] = np.arange(len(self.pat))[::-1]
        self.patient_codes = {}
        for a in self.attrs:
            pc = a.codes[first]
            a.varies_within_patient = bool((pc[self.pat] != a.codes).any())
            self.patient_codes[a.name] = pc.astype(np.int32)
        strata = np.zeros(n_units, dtype=np.int64)
        for a in self.attrs:
            if INTERSECT not in a.name:
                strata = strata * (len(a.groups) + 1) + (self.patient_codes[a.name] + 1)
        self.strata = strata
        self.n_units = n_units

    # -- per label

    def _label_data(self, lab: str) -> _Rows:
        """Rows with a label, sorted by score, and their segment membership."""
        y_all, p_all = self.p.y(lab), self.p.p(lab)
        rows = np.flatnonzero(~np.isnan(y_all))
        order = rows[np.argsort(p_all[rows], kind="mergesort")]
        y = y_all[order].astype(np.int8)
        seg = np.full((len(order), 1 + len(self.attrs)), -1, dtype=np.int32)
        seg[:, 0] = 0
        balanced = {}
        for j, a in enumerate(self.attrs, start=1):
            codes = a.codes[order]
            member = codes >= 0
            if self.cfg.balanced_test:
                rng = rng_for(self.cfg.seed, BALANCE_STREAM, self.labels.index(lab), j)
                member = balanced_rows(y, codes, len(a.groups), rng)
                n_per = int(member.sum()) // max(len(a.groups), 1)
                balanced[a.name] = {
                    "n_per_group": n_per,
                    "n_pos_per_group": int((member & (y == 1)).sum()) // max(len(a.groups), 1),
                }
            seg[member, j] = a.offset + codes[member]
        scores = p_all[order].astype(np.float64)
        seg = kernels.segments(seg, self.n_seg)
        return _Rows(scores, y, self.pat[order], seg, kernels.ties(scores), order, balanced)

    def _counts(self, y: np.ndarray, seg: np.ndarray):
        n = np.bincount(seg.ravel(), minlength=self.n_seg + 1)[: self.n_seg]
        pos = np.bincount(seg[y == 1].ravel(), minlength=self.n_seg + 1)[: self.n_seg]
        return n, pos

    # -- main

    def run(self) -> AuditResult:
        cfg = self.cfg
        data = {lab: self._label_data(lab) for lab in self.labels}
        point, counts, valid_seg = {}, {}, {}
        ones = np.ones((1, self.n_units))
        for lab, r in data.items():
            point[lab] = kernels.segment_aucs(r.y, r.pat, r.seg, r.tied, self.n_seg, ones)[0]
            n, pos = self._counts(r.y, r.seg)
            counts[lab] = (n, pos)
            ok = (pos >= cfg.min_pos) & (n - pos >= cfg.min_neg)
            ok[0] = pos[0] > 0 and n[0] - pos[0] > 0
            valid_seg[lab] = ok
            point[lab] = np.where(ok, point[lab], np.nan)
        self._note_small_groups(counts, valid_seg)
        valid = self._valid_groups(valid_seg)
        per_label_point = {lab: _derive(point[lab][None, :], self.attrs, valid[lab]) for lab in self.labels}
        used = self._labels_used(valid)
        summary_point = _summarise(per_label_point, self._labels_with_auc(point), self.attrs, used)

        thresholds = self._thresholds(data)
        rate_units = {lab: self._rate_units(r, thresholds["values"].get(lab)) for lab, r in data.items()
                      if thresholds and thresholds["values"].get(lab) is not None}  # fmt: skip
        boot, rate_boot = (None, {})
        if cfg.intervals == "bootstrap":
            boot, rate_boot = self._bootstrap(data, valid_seg, rate_units)
        per_label_boot = summary_boot = None
        if boot is not None:
            per_label_boot = {lab: _derive(boot[lab], self.attrs, valid[lab]) for lab in self.labels}
            summary_boot = _summarise(per_label_boot, self._labels_with_auc(point), self.attrs, used)
        delong = self._delong(data, valid_seg) if cfg.intervals == "delong" else None
        p_values = self._permutation_test(data, used, summary_point) if cfg.permutations > 0 else {}
        rates = {lab: self._threshold_metrics(u, rate_boot.get(lab)) for lab, u in rate_units.items()}

        d = self._assemble(
            data, counts, point, per_label_point, per_label_boot, summary_point, summary_boot,
            delong, p_values, thresholds, rates, used,
        )  # fmt: skip
        replicates = {}
        if summary_boot is not None:
            replicates["mean_auc"] = summary_boot["mean_auc"]
            for a, sd in summary_boot["attrs"].items():
                replicates[f"gap:{a}"] = sd["gap"]
        return AuditResult(
            name=self.name,
            source=self.p.source,
            config=cfg,
            labels=self.labels,
            attrs=[a.name for a in self.attrs],
            groups={a.name: a.groups for a in self.attrs},
            n_images=len(self.p.frame),
            n_patients=self.n_patients,
            notes=self.notes,
            _dict=d,
            replicates=replicates,
            provenance=self.p.provenance,
        )

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
                            f"(fewer than {self.cfg.min_pos}/{self.cfg.min_neg}): AUC left missing"
                        )

    def _valid_groups(self, valid_seg) -> dict[str, dict[str, np.ndarray]]:
        return {
            lab: {a.name: valid_seg[lab][a.offset : a.offset + len(a.groups)] for a in self.attrs}
            for lab in self.labels
        }

    def _labels_with_auc(self, point) -> list[str]:
        labs = [lab for lab in self.labels if not np.isnan(point[lab][0])]
        if not labs:
            raise InputError(
                f"{self.p.source}: no label has both positives and negatives, so there is no AUC to audit"
            )
        return labs

    def _labels_used(self, valid) -> dict[str, list[str]]:
        used = {}
        for a in self.attrs:
            labs = [lab for lab in self.labels if valid[lab][a.name].all()]
            left = [lab for lab in self.labels if lab not in labs]
            if left:
                self.notes.append(
                    f"{a.name}: label(s) {', '.join(left)} lack an AUC in some subgroup and are left out of "
                    f"the subgroup means and the headline gap"
                )
            if not labs:
                self.notes.append(
                    f"{a.name}: no label has an AUC in every subgroup, so there is no headline gap"
                )
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
        for w in bootstrap_counts(self.strata, cfg.n_boot, cfg.seed):
            for lab, r in data.items():
                out[lab][done : done + len(w)] = kernels.segment_aucs(
                    r.y, r.pat, r.seg, r.tied, self.n_seg, w
                )
            for lab, u in rate_units.items():  # weighted sums of each unit's counts: one small matmul
                rate_out[lab][done : done + len(w)] = (w @ u.reshape(len(u), -1)).reshape(
                    len(w), *u.shape[1:]
                )
            done += len(w)
            if task is not None:
                self.progress.update(task, completed=done)
        for lab in self.labels:
            out[lab][:, ~valid_seg[lab]] = np.nan
        return out, rate_out

    def _delong(self, data, valid_seg) -> dict[str, np.ndarray]:
        out = {}
        for lab, r in data.items():
            ci = np.full((self.n_seg, 2), np.nan)
            for k in np.flatnonzero(valid_seg[lab]):
                rows = (r.seg == k).any(axis=1)
                _, lo, hi = kernels.delong_ci(r.y[rows], r.scores[rows], self.cfg.ci_level)
                ci[k] = lo, hi
            out[lab] = ci
        self.notes.append("DeLong intervals cover single AUCs only; gaps, deltas and means have no interval")
        return out

    def _permutation_test(self, data, used, summary_point) -> dict[str, float | None]:
        """p-value of each headline gap: patients' group labels shuffled, the gap recomputed (METHOD 7).

        All attributes are permuted independently but share one sweep per label and permutation. An
        attribute that varies within patients (age bins across visits) is permuted between images instead.
        """
        cfg = self.cfg
        p_values: dict[str, float | None] = {a.name: None for a in self.attrs}
        observed = {}
        for a in self.attrs:
            gap = summary_point["attrs"].get(a.name, {}).get("gap")
            if used[a.name] and gap is not None and not np.isnan(gap[0]):
                observed[a.name] = gap[0]
        tested = [a for a in self.attrs if a.name in observed]
        for a in tested:
            if a.varies_within_patient:
                self.notes.append(f"{a.name} varies within patients: its permutation test shuffles images")
        if cfg.balanced_test and tested:
            p_values.update(self._permute_balanced(data, used, observed, tested))
            return p_values
        for by_image in (False, True):
            attrs = [a for a in tested if a.varies_within_patient == by_image]
            if attrs:
                p_values.update(self._permute(data, used, observed, attrs, by_image))
        return p_values

    def _permute_balanced(self, data, used, observed, attrs: list[_Attr]) -> dict[str, float]:
        """Permutations for gaps measured on balanced test sets.

        Each permutation shuffles the groups (between patients, or between images for an attribute that
        varies within patients), draws every label's balanced sets again from the shuffled groups and
        recomputes the gap: the null distribution goes through the same subsampling as the observed gap.
        (Shuffling on the full test set instead would compare a small-sample gap with a large-sample null
        and give p-values that are too small.) One sweep per label and permutation, so it costs about as
        many label sweeps as the bootstrap.
        """
        cfg = self.cfg
        codes = [a.codes if a.varies_within_patient else self.patient_codes[a.name] for a in attrs]
        streams = [
            permuted_codes(c, cfg.permutations, cfg.seed, self.attrs.index(a)) for c, a in zip(codes, attrs)
        ]
        rng = rng_for(cfg.seed, BALANCE_STREAM, len(self.labels))  # the observed sets use (label, attr) keys
        ones = np.ones((1, self.n_units))
        labs = [lab for lab in self.labels if any(lab in used[a.name] for a in attrs)]
        # per label: segment ids to refill each permutation (n_seg = none), and each attribute's row index
        # into its shuffled codes (the row's patient, or the row itself for codes shuffled between images)
        segs = {lab: np.full((len(data[lab].y), 1 + len(attrs)), self.n_seg, dtype=np.int32) for lab in labs}
        for seg in segs.values():
            seg[:, 0] = 0  # every row is in the overall segment
        index = {
            lab: [data[lab].order if a.varies_within_patient else data[lab].pat for a in attrs]
            for lab in labs
        }
        exceed = dict.fromkeys((a.name for a in attrs), 0)
        counted = dict.fromkeys((a.name for a in attrs), 0)
        task = self.progress.add_task("permutations", total=cfg.permutations) if self.progress else None
        for chunk in zip(*streams):
            for k in range(len(chunk[0])):
                sums = {a.name: np.zeros(len(a.groups)) for a in attrs}
                for lab in labs:
                    r, seg = data[lab], segs[lab]
                    for j, (a, c, at) in enumerate(zip(attrs, chunk, index[lab]), start=1):
                        codes = c[k][at]
                        member = balanced_rows(r.y, codes, len(a.groups), rng)
                        seg[:, j] = self.n_seg
                        seg[member, j] = a.offset + codes[member]
                    aucs = kernels.segment_aucs(r.y, r.pat, seg, r.tied, self.n_seg, ones)[0]
                    for a in attrs:
                        if lab in used[a.name]:
                            sums[a.name] += aucs[a.offset : a.offset + len(a.groups)]
                for a in attrs:
                    means = sums[a.name] / len(used[a.name])
                    # a shuffle that leaves some group without an AUC has no gap and is not counted
                    if not np.isnan(means).any():
                        counted[a.name] += 1
                        exceed[a.name] += int(means.max() - means.min() >= observed[a.name] - 1e-12)
            if task is not None:
                self.progress.update(task, advance=len(chunk[0]))
        return {name: (1 + exceed[name]) / (1 + counted[name]) for name in exceed}

    def _permute(self, data, used, observed, attrs: list[_Attr], by_image: bool) -> dict[str, float]:
        cfg = self.cfg
        offsets = np.cumsum([0] + [len(a.groups) for a in attrs])
        n_seg = int(offsets[-1])
        codes = [a.codes if by_image else self.patient_codes[a.name] for a in attrs]
        streams = [
            permuted_codes(c, cfg.permutations, cfg.seed, self.attrs.index(a)) for c, a in zip(codes, attrs)
        ]
        labs = [lab for lab in self.labels if any(lab in used[a.name] for a in attrs)]
        exceed = dict.fromkeys((a.name for a in attrs), 0)
        total = 0
        for chunk in zip(*streams):
            unit_seg = np.stack(
                [np.where(c >= 0, c + off, n_seg) for c, off in zip(chunk, offsets[:-1])], axis=2
            ).astype(np.int32)
            sums = np.zeros((len(chunk[0]), n_seg))
            for lab in labs:
                r = data[lab]
                units = r.order.astype(np.int32) if by_image else r.pat
                sums += kernels.permuted_segment_aucs(r.y, units, r.tied, unit_seg, n_seg) * np.repeat(
                    [lab in used[a.name] for a in attrs], np.diff(offsets)
                )
            for j, a in enumerate(attrs):
                means = sums[:, offsets[j] : offsets[j + 1]] / len(used[a.name])
                gaps = means.max(axis=1) - means.min(axis=1)
                exceed[a.name] += int((gaps >= observed[a.name] - 1e-12).sum())
            total += len(chunk[0])
        return {name: (1 + k) / (1 + total) for name, k in exceed.items()}

    def _thresholds(self, data) -> dict[str, Any] | None:
        """Per-label thresholds at a global FPR, from validation predictions (or the audited file if asked)."""
        cfg = self.cfg
        if self.thr_source is None and not cfg.tune_thresholds_on_test:
            return None
        if self.thr_source is not None:
            val = _as_predictions(self.thr_source)
            source = val.source
        else:
            val, source = self.p, "test (tuned on the audited file)"
            self.notes.append(
                "thresholds were tuned on the audited file itself: threshold metrics are optimistic"
            )
        values = {}
        for lab in self.labels:
            if lab not in val.labels:
                raise InputError(f"{val.source}: no label_{lab}/prob_{lab} to take its threshold from")
            y, p = val.y(lab), val.p(lab)
            neg = p[y == 0]
            if len(neg) == 0:
                values[lab] = None
                continue
            # Smallest threshold whose FPR (share of negatives scored >= it) does not exceed the target.
            srt = np.sort(neg)
            k = int(np.floor(cfg.target_fpr * len(srt)))
            t = srt[-k] if k > 0 else np.nextafter(srt[-1], np.inf)
            if (neg >= t).sum() > k:  # ties at the cut would overshoot the target FPR
                t = np.nextafter(t, np.inf)
            values[lab] = float(t)
        return {"source": str(source), "target_fpr": cfg.target_fpr, "values": values}

    # -- output

    def _ci(self, reps: np.ndarray | None) -> list[float] | None:
        return percentile_ci(reps, self.cfg.ci_level, min_count=boot_min_count(self.cfg.n_boot))

    def _assemble(self, data, counts, point, plp, plb, sp, sb, delong, p_values, thresholds, rates, used):
        cfg = self.cfg

        def num(x) -> float | None:
            x = float(x)
            return None if np.isnan(x) else x

        def boot(getter) -> list[float] | None:
            return self._ci(getter(plb)) if plb is not None else None

        labels_out = {}
        for lab in self.labels:
            r = data[lab]
            n, pos = counts[lab]
            ci0 = boot(lambda b, lab=lab: b[lab]["overall"])
            if delong is not None:
                ci0 = _nan_list(delong[lab][0])
            thr = rates.get(lab)
            attrs_out = {}
            for a in self.attrs:
                pa = plp[lab]["attrs"][a.name]
                groups_out = {}
                col = r.seg[:, 1 + self.attrs.index(a)]
                for gi, g in enumerate(a.groups):
                    k = a.offset + gi
                    in_group = col == k
                    gci = boot(lambda b, lab=lab, a=a, gi=gi: b[lab]["attrs"][a.name]["groups"][:, gi])
                    if delong is not None:
                        gci = _nan_list(delong[lab][k])
                    groups_out[g] = {
                        "n": int(n[k]),
                        "n_pos": int(pos[k]),
                        "auc": num(point[lab][k]),
                        "ci": gci if num(point[lab][k]) is not None else None,
                        "delta_vs_group_mean": num(pa["delta_vs_group_mean"][0, gi]),
                        "delta_vs_group_mean_ci": boot(
                            lambda b, lab=lab, a=a, gi=gi: b[lab]["attrs"][a.name]["delta_vs_group_mean"][
                                :, gi
                            ]
                        ),
                        "delta_vs_population": num(pa["delta_vs_population"][0, gi]),
                        "delta_vs_population_ci": boot(
                            lambda b, lab=lab, a=a, gi=gi: b[lab]["attrs"][a.name]["delta_vs_population"][
                                :, gi
                            ]
                        ),
                        "threshold": thr[a.name]["groups"][g] if thr else None,
                        "ece": _ece(r.y[in_group], r.scores[in_group], cfg.ece_bins),
                        "note": None if num(point[lab][k]) is not None else _why_missing(n[k], pos[k], cfg),
                    }
                best, worst = _best_worst(pa["groups"][0], a.groups)
                attrs_out[a.name] = {
                    "groups": groups_out,
                    "gap": num(pa["gap"][0]),
                    "gap_ci": boot(lambda b, lab=lab, a=a: b[lab]["attrs"][a.name]["gap"]),
                    "best_group": best,
                    "worst_group": worst,
                    "balanced": r.balanced.get(a.name),
                    "threshold_gaps": thr[a.name]["gaps"] if thr else None,
                }
            labels_out[lab] = {
                "n": int(n[0]),
                "n_pos": int(pos[0]),
                "auc": num(point[lab][0]),
                "ci": ci0 if num(point[lab][0]) is not None else None,
                "ece": _ece(r.y, r.scores, cfg.ece_bins),
                "threshold": thr["overall"] if thr else None,
                "attrs": attrs_out,
            }

        def sboot(getter):
            return self._ci(getter(sb)) if sb is not None else None

        summary_attrs = {}
        for a in self.attrs:
            if a.name not in sp["attrs"]:
                summary_attrs[a.name] = {"groups": a.groups, "gap": None, "labels_used": [], "p_value": None,
                                         "labels_left_out": list(self.labels)}  # fmt: skip
                continue
            spa = sp["attrs"][a.name]
            gm = spa["group_mean_auc"][0]
            best, worst = _best_worst(gm, a.groups)
            label_gaps = {lab: plp[lab]["attrs"][a.name]["gap"][0] for lab in used[a.name]}
            max_lab = max(label_gaps, key=lambda k: -np.inf if np.isnan(label_gaps[k]) else label_gaps[k])

            def per_group(key, ci=False, a=a, spa=spa):
                vals = {}
                for gi, g in enumerate(a.groups):
                    if ci:
                        vals[g] = sboot(lambda b, key=key, gi=gi: b["attrs"][a.name][key][:, gi])
                    else:
                        vals[g] = num(spa[key][0, gi])
                return vals

            summary_attrs[a.name] = {
                "groups": a.groups,
                "group_mean_auc": per_group("group_mean_auc"),
                "group_mean_auc_ci": per_group("group_mean_auc", ci=True),
                "gap": num(spa["gap"][0]),
                "gap_ci": sboot(lambda b, a=a: b["attrs"][a.name]["gap"]),
                "p_value": p_values.get(a.name),
                "permutations": cfg.permutations,
                "best_group": best,
                "worst_group": worst,
                "delta_vs_group_mean": per_group("delta_vs_group_mean"),
                "delta_vs_group_mean_ci": per_group("delta_vs_group_mean", ci=True),
                "delta_vs_population": per_group("delta_vs_population"),
                "delta_vs_population_ci": per_group("delta_vs_population", ci=True),
                "labels_used": used[a.name],
                "labels_left_out": [lab for lab in self.labels if lab not in used[a.name]],
                "mean_label_gap": num(spa["mean_label_gap"][0]),
                "mean_label_gap_ci": sboot(lambda b, a=a: b["attrs"][a.name]["mean_label_gap"]),
                "max_label_gap": num(spa["max_label_gap"][0]),
                "max_label_gap_ci": sboot(lambda b, a=a: b["attrs"][a.name]["max_label_gap"]),
                "max_label_gap_label": max_lab,
            }
        if sb is not None:
            dropped = int(np.isnan(sb["mean_auc"]).sum())
            if dropped:
                self.notes.append(
                    f"{dropped} of {cfg.n_boot} bootstrap replicates lost a class in some label"
                )
        settings = cfg.model_dump()
        settings["labels"] = self.labels
        return {
            "schema": AUDIT_SCHEMA,
            "fairscan_version": __version__,
            "model": self.name,
            "source": self.p.source,
            "provenance": self.p.provenance,
            "units": "fraction",
            "settings": settings,
            "notes": self.notes,
            "n_images": len(self.p.frame),
            "n_patients": self.n_patients,
            "labels": labels_out,
            "summary": {
                "mean_auc": num(sp["mean_auc"][0]),
                "mean_auc_ci": sboot(lambda b: b["mean_auc"]),
                "labels": self._labels_with_auc(point),
                "attrs": summary_attrs,
            },
            "thresholds": thresholds,
            "gate": None,
        }

    def _rate_units(self, r: _Rows, t: float | None) -> np.ndarray | None:
        """Image counts per resampling unit, (units, 4, segments): true positives, positives, false positives
        and negatives at threshold ``t``. Any weighting of the units (1 each, or a bootstrap replicate's
        counts) turns them into the weighted counts behind TPR and FPR with one matrix product."""
        if t is None:
            return None
        pred = r.scores >= t
        pos = r.y == 1
        kinds = np.select([pos & pred, pos, ~pos & pred], [0, 1, 2], 3)  # tp, fn (a positive), fp, tn
        slots = 4 * (self.n_seg + 1)  # + the "no segment" slot, dropped below
        units = np.zeros(self.n_units * slots)
        for col in r.seg.T:
            units += np.bincount(
                r.pat.astype(np.int64) * slots + kinds * (self.n_seg + 1) + col, minlength=len(units)
            )
        units = units.reshape(self.n_units, 4, self.n_seg + 1)[:, :, : self.n_seg]
        tp, fn, fp, tn = (units[:, k] for k in range(4))
        return np.stack([tp, tp + fn, fp, fp + tn], axis=1)

    def _threshold_metrics(self, units: np.ndarray, boot: np.ndarray | None) -> dict[str, Any]:
        """TPR, FPR and FNR per subgroup at the label's threshold, and their gaps (largest minus smallest
        subgroup rate), each with a patient-bootstrap interval when the audit runs a bootstrap."""

        def rates(c: np.ndarray) -> dict[str, np.ndarray]:  # c: (..., 4, segments) weighted counts
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr = np.where(c[..., 1, :] > 0, c[..., 0, :] / c[..., 1, :], np.nan)
                fpr = np.where(c[..., 3, :] > 0, c[..., 2, :] / c[..., 3, :], np.nan)
            return {"tpr": tpr, "fpr": fpr, "fnr": 1.0 - tpr}

        point = rates(units.sum(axis=0))
        reps = rates(boot) if boot is not None else None

        def entry(cols: list[int] | int, gap: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for m, v in point.items():
                if gap:  # over the subgroups with a rate; a replicate missing one of them has no gap
                    have = [k for k in cols if not np.isnan(v[k])]
                    value = float(v[have].max() - v[have].min()) if len(have) >= 2 else None
                    rep = reps[m][:, have].max(axis=1) - reps[m][:, have].min(axis=1) if reps else None
                else:
                    value = None if np.isnan(v[cols]) else float(v[cols])
                    rep = reps[m][:, cols] if reps else None
                out[m] = value
                out[f"{m}_ci"] = self._ci(rep) if value is not None and rep is not None else None
            return out

        out: dict[str, Any] = {"overall": entry(0)}
        for a in self.attrs:
            cols = [a.offset + gi for gi in range(len(a.groups))]
            out[a.name] = {"groups": {g: entry(k) for g, k in zip(a.groups, cols, strict=True)},
                           "gaps": entry(cols, gap=True)}  # fmt: skip
        return out


def percentile_ci(reps: np.ndarray | None, level: float, *, min_count: float = 10) -> list[float] | None:
    """Percentile interval over the replicates that are not NaN; None with fewer than ``min_count`` of them."""
    if reps is None:
        return None
    reps = reps[~np.isnan(reps)]
    if len(reps) < min_count:
        return None
    lo = 100 * (1 - level) / 2
    a, b = np.percentile(reps, [lo, 100 - lo])
    return [float(a), float(b)]


def boot_min_count(n_boot: int) -> float:
    """An interval needs at least half the bootstrap replicates (and 10) to be defined."""
    return max(10, 0.5 * n_boot)


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
    return f"too few positives or negatives ({pos}/{n - pos}; minimum {cfg.min_pos}/{cfg.min_neg})"


def _ece(y: np.ndarray, p: np.ndarray, bins: int) -> float | None:
    """Expected calibration error with equal-width probability bins."""
    if len(y) == 0:
        return None
    idx = np.minimum((p * bins).astype(int), bins - 1)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y.astype(float), minlength=bins)
    return float(np.abs(acc - conf).sum() / len(y))


def _stem(source: str) -> str:
    name = os.path.basename(str(source))
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "predictions"
