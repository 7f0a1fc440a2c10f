"""Aligning several prediction tables row by row, for ensembles and paired comparisons.

Two tables can be combined only if they describe the same images of the same patients with the same
labels and attributes; any difference is an error that names the first few differences.
"""

from __future__ import annotations

from fairscan.errors import InputError
from fairscan.schema import LABEL_PREFIX, Predictions


def _first(items, k: int = 3) -> str:
    items = sorted(map(str, items))
    more = f" (and {len(items) - k} more)" if len(items) > k else ""
    return ", ".join(items[:k]) + more


def align(preds: list[Predictions], labels: list[str] | None = None) -> list[Predictions]:
    """Return the tables reordered to the first one's image order, after checking that they match."""
    if len(preds) < 2:
        raise InputError("give at least two prediction files")
    ref = preds[0]
    ref_ids = ref.frame["image_id"]
    ref_set = set(ref_ids)
    want = labels or ref.labels
    out = [ref]
    for other in preds[1:]:
        ids = set(other.frame["image_id"])
        if ids != ref_set:
            only_ref, only_other = ref_set - ids, ids - ref_set
            raise InputError(
                f"{other.source} and {ref.source} do not hold the same images: "
                + (f"{len(only_ref)} only in the first ({_first(only_ref)})" if only_ref else "")
                + ("; " if only_ref and only_other else "")
                + (f"{len(only_other)} only in the second ({_first(only_other)})" if only_other else ""),
                hint="predict every model on the same manifest split",
            )
        missing = [lab for lab in want if lab not in other.labels]
        extra = [] if labels else [lab for lab in other.labels if lab not in ref.labels]
        if missing or extra:
            raise InputError(
                f"{other.source} and {ref.source} have different labels: "
                + ", ".join(
                    filter(
                        None, [missing and f"missing {_first(missing)}", extra and f"extra {_first(extra)}"]
                    )
                ),
                hint="choose the common ones with --labels",
            )
        frame = other.frame.set_index("image_id").loc[ref_ids].reset_index()
        for col in ["patient_id", *[a for a in ref.attribute_columns if a in frame.columns]] + [
            LABEL_PREFIX + lab for lab in want
        ]:
            if col not in frame.columns:
                continue
            a, b = ref.frame[col].reset_index(drop=True), frame[col].reset_index(drop=True)
            differs = ~((a == b).fillna(False) | (a.isna() & b.isna()))
            if differs.any():
                i = int(differs.to_numpy().argmax())
                raise InputError(
                    f"{other.source} and {ref.source} disagree on column {col} for {int(differs.sum())} image(s), "
                    f"first image_id {ref_ids.iloc[i]}: {a.iloc[i]!r} vs {b.iloc[i]!r}",
                    hint="the files must come from the same manifest",
                )
        out.append(
            Predictions(frame=frame, labels=other.labels, source=other.source, provenance=other.provenance)
        )
    return out
