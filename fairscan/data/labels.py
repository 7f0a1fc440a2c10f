"""Label policies: how CheXpert-coded observations (1 positive, 0 negative, -1 uncertain, blank = not mentioned)
become the manifest's ``label_<id>`` columns (1.0, 0.0, or NaN = masked out of the loss and the metrics).

- ``u-zeros`` (default; the reference scripts'): uncertain -> 0.
- ``u-ones``: uncertain -> 1.
- ``ignore``: uncertain -> masked.
- ``mixed`` (LibAUC): uncertain -> 1 for Edema and Atelectasis, -> 0 for every other label.

Blanks follow ``blank``: ``zero`` (default, as the reference scripts) or ``mask``.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from fairscan.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

LABEL_POLICIES = ("u-zeros", "u-ones", "ignore", "mixed")
BLANK_POLICIES = ("zero", "mask")
MIXED_U_ONES = ("edema", "atelectasis")  # LibAUC's U-Ones labels; every other label is U-Zeros
CODED_VALUES = (1.0, 0.0, -1.0)


def check_policy(policy: str, blank: str) -> None:
    if policy not in LABEL_POLICIES:
        raise InputError(f"unknown label policy {policy!r}", hint=f"use one of {', '.join(LABEL_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise InputError(f"unknown blank policy {blank!r}", hint=f"use one of {', '.join(BLANK_POLICIES)}")


def coded_labels(df: pd.DataFrame, columns: dict[str, str], source) -> pd.DataFrame:
    """The observations as floats (1, 0, -1, NaN), one column per label id; any other value is an InputError.

    ``columns`` maps label id -> the column's spelling in ``df``.
    """
    import pandas as pd

    out = {}
    for lab, col in columns.items():
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = (raw.notna() & values.isna()) | (values.notna() & ~values.isin(CODED_VALUES))
        if bad.any():
            pos = int(bad.to_numpy().argmax())
            raise InputError(
                f"{source}: column {col!r} has the unknown value {str(raw.iloc[pos])!r} at line "
                f"{_line(df, pos)} ({int(bad.sum())} unknown value(s) in that column)",
                hint="observations must be 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank; "
                "fix the value or blank it",
            )
        out[lab] = values.to_numpy()
    return pd.DataFrame(out, index=df.index)


def _line(df: pd.DataFrame, pos: int) -> int:
    """The file line of a row of a frame read with read_csv (header = line 1), while its index is intact."""
    label = df.index[pos]
    return int(label) + 2 if isinstance(label, numbers.Integral) else pos + 2


def apply_label_policy(coded: pd.DataFrame, policy: str = "u-zeros", blank: str = "zero") -> pd.DataFrame:
    """``label_<id>`` columns (1.0 / 0.0 / NaN) from coded observations (see :func:`coded_labels`)."""
    import numpy as np
    import pandas as pd

    check_policy(policy, blank)
    out = {}
    for lab in coded.columns:
        x = coded[lab].to_numpy(dtype="float64", copy=True)
        uncertain, missing = x == -1.0, np.isnan(x)
        if policy == "u-ones" or (policy == "mixed" and lab in MIXED_U_ONES):
            x[uncertain] = 1.0
        elif policy == "ignore":
            x[uncertain] = np.nan
        else:  # u-zeros, and mixed for the other labels
            x[uncertain] = 0.0
        x[missing] = 0.0 if blank == "zero" else np.nan
        out[f"label_{lab}"] = x
    return pd.DataFrame(out, index=coded.index)
