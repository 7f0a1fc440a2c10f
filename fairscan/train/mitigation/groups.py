"""The subgroups a mitigation method or a fairness-aware selection uses, read from the manifest.

Groups come from one manifest attribute, coded as the audit codes them (``fairscan.fairness.groups``): ``race``,
``sex``, an intersection such as ``sex+race`` (every combination that occurs), or a numeric column such as
``age`` cut at ``age_bins``. The codes are computed over the train and validate rows together, so both splits
share one list of subgroups.

The rule for a row whose group is missing (an empty attribute, or any part of an intersection empty): a
mitigation method cannot balance, weight or adversarially hide a group it does not know, so such rows are
**left out of the training split** whenever the method is not ``erm`` (their count is recorded in
``stage.json``). ``erm`` trains on every row, as without ``--group-attr``. On validation every row counts
towards the mean AUC; the per-subgroup AUCs of the selection use the rows with a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fairscan.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

ERR_NO_ATTRIBUTE = "{manifest}: --group-attr {attr}: the manifest has no column {column!r}"
ERR_GROUP_NOT_IN_TRAIN = (
    "{manifest}: --group-attr {attr}: subgroup(s) {groups} appear in the validate split but not in the train "
    "split, so --mitigation {method} cannot balance them"
)
ERR_TOO_FEW_GROUPS = (
    "{manifest}: --group-attr {attr} has {n} subgroup(s) among the training rows; {what} needs two"
)


@dataclass
class TrainingGroups:
    """Subgroup codes of the training and validation rows (-1: missing), and the subgroups' names."""

    attr: str
    names: list[str]
    train: np.ndarray  # int64 per training row (after rows with a missing group were dropped, if they were)
    validate: np.ndarray  # int64 per validation row
    dropped: int = 0  # training rows left out for a missing group

    @property
    def count(self) -> int:
        return len(self.names)

    def train_sizes(self) -> np.ndarray:
        return np.bincount(self.train[self.train >= 0], minlength=self.count)

    def summary(self) -> dict:
        return {
            "attr": self.attr, "groups": self.names, "train_sizes": self.train_sizes().tolist(),
            "validate_sizes": np.bincount(self.validate[self.validate >= 0], minlength=self.count).tolist(),
            "train_rows_dropped_missing_group": self.dropped,
        }  # fmt: skip


def training_groups(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    *,
    attr: str,
    age_bins: list[float],
    method: str,
    manifest: str,
) -> tuple[pd.DataFrame, TrainingGroups]:
    """The training rows to use (rows without a group left out unless ``method`` is erm) and their groups.

    Refuses, with exit 2: an attribute the manifest lacks, fewer than two subgroups among the training rows,
    and (for a method other than erm) a subgroup of the validate split that no training row has.
    """
    import pandas as pd

    from fairscan.fairness.groups import INTERSECT, build_attributes

    for column in (c.strip() for c in attr.split(INTERSECT)):
        if column not in train_df.columns:
            raise InputError(
                ERR_NO_ATTRIBUTE.format(manifest=manifest, attr=attr, column=column),
                hint="use an attribute column of the manifest: sex, race, age, or an intersection such as sex+race",
            )
    both = pd.concat([train_df, val_df], ignore_index=True)
    (coded,) = build_attributes(both, [attr], age_bins, f"{manifest}: --group-attr")
    codes = coded.codes.astype(np.int64)
    train_codes, val_codes = codes[: len(train_df)], codes[len(train_df) :]
    what = "--mitigation " + method if method != "erm" else "a per-subgroup selection"
    present = sorted(set(train_codes[train_codes >= 0].tolist()))
    if len(present) < 2:
        raise InputError(
            ERR_TOO_FEW_GROUPS.format(manifest=manifest, attr=attr, n=len(present), what=what),
            hint="choose an attribute with at least two subgroups among the training rows",
        )
    absent = [coded.groups[g] for g in range(len(coded.groups)) if g not in present]
    if absent and method != "erm":
        raise InputError(
            ERR_GROUP_NOT_IN_TRAIN.format(
                manifest=manifest, attr=attr, groups=", ".join(absent), method=method
            ),
            hint="put rows of every subgroup in the train split, or choose another --group-attr",
        )
    dropped = 0
    if method != "erm":
        keep = train_codes >= 0
        dropped = int((~keep).sum())
        train_df, train_codes = train_df[keep].reset_index(drop=True), train_codes[keep]
    groups = TrainingGroups(attr=attr, names=list(coded.groups), train=train_codes, validate=val_codes,
                            dropped=dropped)  # fmt: skip
    return train_df, groups
