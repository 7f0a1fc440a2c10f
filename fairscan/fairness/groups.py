"""Group features of an audit: each attribute's subgroups per image, and the patients they belong to.

Every image keeps its own group (a patient whose recorded sex differs between images, or whose age bin
changes between visits, contributes each image to that image's group); resampling is always by patient (the
unit that makes images correlated), never by image unless asked. A patient's bootstrap stratum is the
combination of its first image's groups, which keeps subgroup sizes nearly fixed across replicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fairscan.errors import InputError
from fairscan.schema import RACES, SEXES

if TYPE_CHECKING:
    import pandas as pd

INTERSECT = "+"  # "sex+race" audits the intersectional groups of sex and race
NUMERIC_LEVELS = 12  # a numeric column with more distinct values than this is binned (age)


@dataclass
class Attribute:
    """One audited attribute: its subgroups, a group code per image (-1 = missing) and its segments' offset
    (segment 0 is the whole population, then each attribute's groups in turn)."""

    name: str
    groups: list[str]
    codes: np.ndarray
    offset: int = 0
    patients_varying: int = 0  # patients whose images fall in more than one group (or some in none)

    @property
    def segments(self) -> range:
        return range(self.offset, self.offset + len(self.groups))


@dataclass
class Units:
    """The resampling units (patients, or images with ``--resample image``) and their bootstrap strata."""

    of_row: np.ndarray  # int32 unit per image
    count: int
    strata: np.ndarray  # per unit
    n_patients: int | None


def group_order(values: list[str]) -> list[str]:
    """Canonical orders for sex and race (the paper's), sorted otherwise."""
    for canon in (SEXES, RACES):
        if set(values) <= set(canon):
            return [g for g in canon if g in values]
    return sorted(values)


def bin_ages(age: np.ndarray, edges: list[float]) -> tuple[np.ndarray, list[str]]:
    edges = sorted(edges)
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]:g}"]
    codes = np.where(np.isnan(age), -1, np.searchsorted(edges, age, side="right"))
    return codes.astype(np.int32), names


def _column(frame: pd.DataFrame, name: str, age_bins: list[float], source: str) -> tuple[np.ndarray, list[str]]:
    """Group codes (-1 = missing) and group names of one plain attribute column."""
    import pandas as pd

    if name not in frame.columns:
        cols = [c for c in frame.columns if not c.startswith(("label_", "prob_", "logit_"))]
        raise InputError(
            f"{source}: unknown attribute {name!r}",
            hint=f"attribute columns in this file: {', '.join(cols) or '(none)'}",
        )
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col) and col.nunique() > NUMERIC_LEVELS:
        return bin_ages(col.to_numpy(dtype="float64"), age_bins)
    text = col.astype("string")
    present = sorted(set(text.dropna()) - {""})
    if not present:
        raise InputError(
            f"{source}: attribute {name!r} has no values",
            hint="fill the column, or audit other attributes (--attrs)",
        )
    order = group_order(present)
    lookup = {g: i for i, g in enumerate(order)}
    codes = np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in text.tolist()], dtype=np.int32)
    return codes, order


def build_attributes(frame: pd.DataFrame, names: list[str], age_bins: list[float], source: str) -> list[Attribute]:
    attrs: list[Attribute] = []
    for name in names:
        parts = name.split(INTERSECT)
        coded = [_column(frame, p.strip(), age_bins, source) for p in parts]
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
        attrs.append(Attribute(name=name, groups=groups, codes=codes))
    offset = 1  # segment 0 is the whole population
    for a in attrs:
        a.offset = offset
        offset += len(a.groups)
    return attrs


def units(patient_ids, attrs: list[Attribute], *, by_image: bool) -> Units:
    """Resampling units and strata; also sets each attribute's count of patients whose group varies."""
    import pandas as pd

    if patient_ids is not None:
        of_patient, uniq = pd.factorize(patient_ids, sort=True)
        n_patients = len(uniq)
    else:
        of_patient, n_patients = np.arange(len(attrs[0].codes) if attrs else 0), None
    of_patient = np.asarray(of_patient, dtype=np.int32)
    n = int(of_patient.max()) + 1 if len(of_patient) else 0
    first = np.full(n, -1, dtype=np.int64)  # each patient's first image
    first[of_patient[::-1]] = np.arange(len(of_patient))[::-1]
    first_codes = {}
    for a in attrs:
        pc = a.codes[first]
        a.patients_varying = len(np.unique(of_patient[pc[of_patient] != a.codes]))
        first_codes[a.name] = pc
    of_row = np.arange(len(of_patient), dtype=np.int32) if by_image else of_patient
    count = len(of_row) if by_image else n
    strata = np.zeros(count, dtype=np.int64)
    for a in attrs:
        if INTERSECT not in a.name:
            codes = a.codes if by_image else first_codes[a.name]
            strata = strata * (len(a.groups) + 1) + (codes + 1)
    return Units(of_row=of_row, count=count, strata=strata, n_patients=n_patients)
