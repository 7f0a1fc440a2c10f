"""Fairness-aware checkpoint selection among a run's epochs, always on the validation split (never test).

- ``val_mean_auc`` (the default): the epoch whose mean AUC over the labels is highest;
- ``val_worst_group_auc``: the epoch whose worst subgroup's mean AUC (each subgroup's mean over the labels with
  both classes among its validation images) is highest;
- ``dto``: MEDFAIR's distance to the optimal point (Zong et al. 2023): each epoch's per-subgroup mean AUCs,
  each divided by its maximum over the epochs, and the epoch nearest (Euclidean) to ``(1, ..., 1)``; ties go to
  the earlier epoch. MEDFAIR selects among runs (hyperparameter settings); fairscan selects among one run's
  epochs. A subgroup without an AUC (no validation image with both classes of any label) takes no part.

``dto`` cannot be decided until the last epoch (the maxima move), so every epoch that could still win is kept in
``selection/`` beside the run: an epoch whose subgroup AUCs are all at most another's can never be nearer to the
optimal point than that one (each coordinate's distance is at least as large), so only the non-dominated epochs'
weights are kept, and the chosen one becomes ``model.safetensors`` when the run ends.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

CANDIDATES = "selection"
CANDIDATE = "epoch_{epoch:04d}.safetensors"


def group_mean_aucs(
    probs: np.ndarray, targets: np.ndarray, codes: np.ndarray, names: list[str], labels: list[str]
):
    """{subgroup: mean AUC over its labels with both classes} (None where none has), and the worst of them."""
    from fairscan.train.supervised import label_aucs

    out: dict[str, float | None] = {}
    for g, name in enumerate(names):
        rows = codes == g
        present = [v for v in label_aucs(probs[rows], targets[rows], labels).values() if v is not None]
        out[name] = float(np.mean(present)) if present else None
    known = [v for v in out.values() if v is not None]
    return out, (min(known) if known else None)


def _vector(record: dict, names: list[str]) -> np.ndarray:
    aucs = record.get("val_group_mean_auc") or {}
    return np.array([np.nan if aucs.get(n) is None else float(aucs[n]) for n in names], dtype=np.float64)


def dto_distances(vectors: np.ndarray) -> np.ndarray:
    """Each row's distance to (1, ..., 1) after dividing every column by its maximum (columns all NaN dropped)."""
    keep = ~np.isnan(vectors).all(axis=0)
    v = vectors[:, keep]
    if v.size == 0:
        return np.full(len(vectors), np.nan)
    top = np.nanmax(v, axis=0)
    with np.errstate(
        divide="ignore", invalid="ignore"
    ):  # a subgroup at AUC 0 in every epoch: no one is nearer
        scaled = np.where(top > 0, v / top, 1.0)
    return np.sqrt(np.nansum((1.0 - scaled) ** 2, axis=1))


def epoch_records(metrics: Path) -> list[dict]:
    """The evaluated epochs of a run, from its ``metrics.jsonl`` (whole after a resume, unlike one process's
    history)."""
    out = []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "epoch" and "val_mean_auc" in rec:
            out.append(rec)
    return out


def choose(
    records: list[dict], select: str, names: list[str] | None
) -> tuple[int | None, list[dict[str, Any]]]:
    """The chosen epoch and every candidate epoch's values under each criterion."""
    if not records:
        return None, []
    mean = np.array([_nan(r.get("val_mean_auc")) for r in records])
    worst = np.array([_nan(r.get("val_worst_group_auc")) for r in records])
    dto = (
        dto_distances(np.stack([_vector(r, names) for r in records]))
        if names
        else np.full(len(records), np.nan)
    )
    score = {"val_mean_auc": mean, "val_worst_group_auc": worst, "dto": -dto}[select]
    pick = None if np.isnan(score).all() else int(np.nanargmax(score))  # first of ties: the earlier epoch
    table = []
    for i, r in enumerate(records):
        row = {"epoch": r["epoch"], "val_mean_auc": _none(mean[i])}
        if names:
            row.update(val_group_mean_auc=r.get("val_group_mean_auc"), val_worst_group_auc=_none(worst[i]),
                       dto=_none(dto[i]))  # fmt: skip
        table.append(row)
    return (records[pick]["epoch"] if pick is not None else None), table


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def keep_candidate(out: Path, epoch: int, current: dict, names: list[str], state: dict) -> None:
    """Keep this epoch's weights in ``selection/`` unless an earlier epoch dominates it; drop the earlier epochs
    it strictly dominates. Main process only."""
    from fairscan.train.checkpoint import write_weights

    folder = out / CANDIDATES
    folder.mkdir(exist_ok=True)
    v = _vector(current, names)
    known = ~np.isnan(v)
    for rec in epoch_records(out / "metrics.jsonl"):
        if rec["epoch"] >= epoch:
            continue
        w = _vector(rec, names)
        if (w[known] >= v[known]).all():
            return  # weakly dominated: it can at best tie, and ties go to the earlier epoch
        path = folder / CANDIDATE.format(epoch=rec["epoch"])
        if path.exists() and (v[known] >= w[known]).all() and (v[known] > w[known]).any():
            path.unlink()
    write_weights(folder / CANDIDATE.format(epoch=epoch), state)


def finish_dto(out: Path, epoch: int) -> None:
    """The chosen epoch's weights become ``model.safetensors``; ``selection/`` goes."""
    from fairscan.runs import MODEL_WEIGHTS

    chosen = out / CANDIDATES / CANDIDATE.format(epoch=epoch)
    if chosen.exists():  # absent: a run killed after this move is being finished again
        os.replace(chosen, out / MODEL_WEIGHTS)
    shutil.rmtree(out / CANDIDATES, ignore_errors=True)
