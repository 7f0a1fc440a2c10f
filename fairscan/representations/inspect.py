"""Glocker et al.'s bias inspection (Radiology: AI 2023): do a model's features differ between subgroups?

The features are projected on their first principal components (``pca``, default 4; centred, not scaled, as
the paper) or read from components already in the file (``components="PCA Mode {i}"``). For every mode, a
two-sample Kolmogorov-Smirnov test (scipy's ``ks_2samp``, two-sided, its default exact/asymptotic choice)
compares the mode's marginal distribution between every pair of subgroups of each attribute and, with
``label``, between the rows where the label is 1 and where it is 0 (other values are left out of that test).
The p-values of the whole table are corrected together (``correction``, default Benjamini-Yekutieli as the
paper, through :func:`fairscan.fairness.multitest.adjust`).

The KS test assumes independent rows; several images of one patient are not, so ``per_patient="first"``
keeps each patient's first image, and ``dedupe`` keeps one row per image where a sample repeats images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fairscan.errors import InputError
from fairscan.fairness.multitest import adjust
from fairscan.representations.features import (
    Features,
    dedupe_features,
    first_per_patient,
    read_features,
    resolve_settings,
    subgroups,
)
from fairscan.schema import LABEL_PREFIX

INSPECT_SCHEMA = "fairscan.inspect/1"
LABEL_ATTR = "label"  # the ``attr`` of a label's tests in the JSON


class InspectSettings(BaseModel):
    """Every setting of an inspection; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    attrs: list[str] = Field(default_factory=lambda: ["sex", "race"])
    label: str | None = None
    pca: int = Field(4, ge=1)
    components: str | None = None
    modes: int | None = Field(None, ge=1)
    correction: Literal["fdr_by", "fdr_bh", "holm", "none"] = "fdr_by"
    per_patient: Literal["all", "first"] = "all"
    dedupe: str | None = None
    tsne: bool = False
    seed: int = 0
    age_bins: list[float] = Field(default_factory=lambda: [40.0, 60.0, 80.0])


@dataclass
class Grouping:
    """The rows' subgroups for one attribute (or the label: groups "1" and "0")."""

    attr: str  # attribute name, or LABEL_ATTR
    column: str
    groups: list[str]
    codes: np.ndarray  # group index per row, -1 = left out

    def pairs(self) -> list[tuple[int, int]]:
        return [(0, 1)] if self.attr == LABEL_ATTR else list(combinations(range(len(self.groups)), 2))


@dataclass
class KSTest:
    mode: int
    attr: str
    a: str
    b: str
    n_a: int
    n_b: int
    ks: float
    p: float
    p_adjusted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = ("mode", "attr", "a", "b", "ks", "p", "p_adjusted")
        return {k: getattr(self, k) for k in keys}


@dataclass
class InspectResult:
    """The test table and what the report draws: the projections and each row's subgroups."""

    source: str
    correction: str
    tests: list[KSTest]
    mode_names: list[str]
    projection: np.ndarray  # (rows, modes)
    groupings: list[Grouping]
    explained_variance: list[float] | None  # PCA's variance ratio per mode; None for given components
    tsne: np.ndarray | None = None
    label_left_out: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def modes(self) -> int:
        return len(self.mode_names)

    @property
    def rows(self) -> int:
        return len(self.projection)

    def to_dict(self) -> dict[str, Any]:
        """The JSON (``fairscan.inspect/1``): the modes, the correction and the test table."""
        return {
            "schema": INSPECT_SCHEMA,
            "modes": self.modes,
            "correction": self.correction,
            "tests": [t.to_dict() for t in self.tests],
        }

    def _repr_html_(self) -> str:
        """How a notebook shows the result: the test table (``fairscan.representations.report``)."""
        from fairscan.representations.report import inspect_fragment

        return inspect_fragment(self)

    def table(self):
        """The tests as a DataFrame (one row per test, with the subgroups' sizes)."""
        import pandas as pd

        return pd.DataFrame([vars(t) for t in self.tests])


def _label_grouping(f: Features, label: str) -> tuple[Grouping, int]:
    """Rows where the label (``label_<id>`` for an id, else the column as named) is 1 and where it is 0."""
    import pandas as pd

    frame = f.frame
    column = LABEL_PREFIX + label if LABEL_PREFIX + label in frame.columns else label
    if column not in frame.columns:
        ids = [c[len(LABEL_PREFIX) :] for c in frame.columns if str(c).startswith(LABEL_PREFIX)]
        raise InputError(
            f"{f.source}: no label column {LABEL_PREFIX + label!r} or {label!r}",
            hint=f"label ids here: {', '.join(ids) or '(none)'}; or name any 1/0 column as it is spelled",
        )
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    codes = np.where(values == 1, 0, np.where(values == 0, 1, -1))
    for code, name in ((0, "1"), (1, "0")):
        if not (codes == code).any():
            raise InputError(
                f"{f.source}: column {column} has no rows with {name}, so its test cannot run",
                hint="the label test compares the rows where it is 1 with those where it is 0",
            )
    return Grouping(LABEL_ATTR, column, ["1", "0"], codes), int((codes < 0).sum())


def _attr_grouping(f: Features, attr: str, age_bins: list[float]) -> Grouping:
    codes, groups = subgroups(f, attr, age_bins)
    present = sorted(set(codes[codes >= 0].tolist()))
    if len(present) < 2:
        raise InputError(
            f"{f.source}: {attr} has {len(present)} subgroup(s) ({', '.join(groups[i] for i in present) or 'none'})"
            ", so there is nothing to compare",
            hint="inspect attributes with two subgroups or more",
        )
    remap = np.full(len(groups) + 1, -1)
    remap[present] = np.arange(len(present))
    return Grouping(attr, attr, [groups[i] for i in present], remap[codes])


def _projection(f: Features, s: InspectSettings) -> tuple[np.ndarray, list[str], list[float] | None]:
    """The modes: the components given in the file, or the features' first principal components."""
    X = f.matrix()
    if s.components is not None:
        return X, list(f.columns), None
    from sklearn.decomposition import PCA

    if s.pca > min(X.shape):
        raise InputError(
            f"{f.source}: --pca {s.pca} asks for more modes than the table allows ({min(X.shape)}: rows or features)",
            hint=f"use --pca {min(X.shape)} or fewer",
        )
    pca = PCA(n_components=s.pca, random_state=s.seed).fit(X)
    return (
        pca.transform(X),
        [f"PCA mode {i + 1}" for i in range(s.pca)],
        pca.explained_variance_ratio_.tolist(),
    )


def ks_table(projection: np.ndarray, groupings: list[Grouping], correction: str) -> list[KSTest]:
    """Every mode's KS tests, in the order mode, then grouping, then pair; p-values corrected together."""
    from scipy.stats import ks_2samp

    tests = []
    for m in range(projection.shape[1]):
        x = projection[:, m]
        for g in groupings:
            for i, j in g.pairs():
                a, b = x[g.codes == i], x[g.codes == j]
                res = ks_2samp(a, b)
                tests.append(
                    KSTest(
                        m + 1,
                        g.attr,
                        g.groups[i],
                        g.groups[j],
                        len(a),
                        len(b),
                        float(res.statistic),
                        float(res.pvalue),
                    )
                )
    for t, q in zip(tests, adjust([t.p for t in tests], correction)):
        t.p_adjusted = q
    return tests


def _read(features, s: InspectSettings) -> Features:
    if isinstance(features, Features):
        return features
    if s.components is not None:
        return read_features(features, pattern=s.components, count=s.modes, flag="--components")
    return read_features(features, flag="--components")


def inspect(
    features: Features | str,
    attrs: list[str] | None = None,
    *,
    settings: InspectSettings | None = None,
    **overrides: Any,
) -> InspectResult:
    """Glocker et al.'s inspection of a features table (a path or :class:`Features`); see the module's
    docstring. Every input is checked before the PCA and the tests."""
    s = resolve_settings(InspectSettings, settings, "attrs", attrs, overrides, "inspect")
    f = _read(features, s)
    if s.dedupe is not None:
        f = dedupe_features(f, s.dedupe)
    if s.per_patient == "first":
        f = first_per_patient(f)
    groupings, left_out = [], 0
    if s.label is not None:
        g, left_out = _label_grouping(f, s.label)
        groupings.append(g)
    groupings += [_attr_grouping(f, a, s.age_bins) for a in s.attrs]
    notes = list(f.notes)
    if left_out:
        notes.append(f"{groupings[0].column}: {left_out:,} row(s) neither 1 nor 0 are left out of its tests")
    notes += _repeat_notes(f, s)
    projection, names, explained = _projection(f, s)
    tests = ks_table(projection, groupings, s.correction)
    tsne = _tsne(f.matrix(), s.seed) if s.tsne else None
    return InspectResult(
        f.source, s.correction, tests, names, projection, groupings, explained, tsne, left_out, notes
    )


def _repeat_notes(f: Features, s: InspectSettings) -> list[str]:
    from fairscan.schema import repeated_images

    notes = []
    path = next((c for c in f.frame.columns if str(c).lower() == "path"), None)  # "Path" in CheXpert's CSVs
    if s.dedupe is None and path is not None:
        repeats = repeated_images(f.frame, path)
        if repeats is not None:
            notes.append(repeats.note())
    if s.per_patient == "all" and f.has_patients and f.frame["patient_id"].duplicated().any():
        n = f.frame["patient_id"].nunique()
        notes.append(
            f"{len(f.frame):,} rows come from {n:,} patients: the KS test takes rows as independent "
            "(--per-patient first keeps one row per patient)"
        )
    return notes


def _tsne(X: np.ndarray, seed: int) -> np.ndarray:
    """A seeded two-dimensional t-SNE of the rows (scikit-learn), for the report's pictures only."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(X)
