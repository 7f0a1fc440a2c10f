"""The audit's result: computed once, read many ways (as fairlearn's MetricFrame), and the CI gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from fairscan.fairness.audit import AuditConfig


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

    def worst(self, attr: str) -> float | None:
        """Mean AUC of an attribute's worst subgroup (fraction)."""
        return self._dict["summary"]["attrs"].get(attr, {}).get("worst_group_auc")

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
