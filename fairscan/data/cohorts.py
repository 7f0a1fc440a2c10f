"""Manifests made from manifests: pre-training pools (with the leakage check) and the balanced fine-tuning set.

Pool (METHOD.md §1, Tables 2 and 5): rows of several prepared manifests, optionally only some of their splits and
a seeded fraction of each source's patients (whole patients; Table 5 uses 30% of CheXpert). Ids are prefixed with
the source's dataset name (``chexpert/patient00001``) so they stay unique; paths become absolute; every row is
``train`` (the source's split is kept in ``source_split``). Leakage: a pool patient who is in the validate or test
split of an evaluation manifest of the same dataset -- each source itself, and any ``evaluation`` manifest --
is counted and warned about (the public Medical MAE checkpoint saw every CheXpert training patient, test
patients of the published split included).

Balanced fine-tuning set (paper §4.3): in the train split, every race keeps as many images as the smallest race
has; the larger races are undersampled without replacement (seeded), taking half of each race's quota from each
sex as far as the images allow, which makes the result more balanced by sex too (the majority, White, is the most
unbalanced). Images without a race are left out of the train split; validate and test are kept as they are.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.data.manifest import DropLog, Prepared, manifest_dir_of, read_record
from fairscan.errors import InputError
from fairscan.schema import LABEL_PREFIX, MANIFEST_COLUMNS, RACES, SEXES, read_manifest

if TYPE_CHECKING:
    import pandas as pd

HELD_OUT = ("validate", "test")


def _dataset_name(manifest_dir: Path) -> str:
    return str(read_record(manifest_dir).get("dataset") or manifest_dir.name)


def _sample_patients(df: pd.DataFrame, fraction: float, rng) -> pd.DataFrame:
    import numpy as np

    patients = np.sort(df["patient_id"].unique())
    keep = rng.choice(patients, size=round(fraction * len(patients)), replace=False)
    return df[df["patient_id"].isin(keep)]


def make_pool(
    manifests,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    splits=None,
    evaluation=(),
) -> Prepared:
    """A pre-training pool from prepared manifest folders (see the module docstring)."""
    import numpy as np
    import pandas as pd

    from fairscan.data.images import resolve_image_paths

    if not 0.0 < fraction <= 1.0:
        raise InputError(
            f"--fraction {fraction} is outside (0, 1]", hint="e.g. --fraction 0.3 for 30% of patients"
        )
    dirs = [manifest_dir_of(m) for m in manifests]
    if not dirs:
        raise InputError(
            "a pool needs at least one manifest", hint="fairscan prepare pool DIR [DIR ...] --out DIR"
        )
    names = [_dataset_name(d) for d in dirs]
    if len(set(names)) < len(names):
        raise InputError(
            f"the pool lists the dataset {max(names, key=names.count)!r} twice",
            hint="a pool takes each dataset once (its images would repeat); pick one manifest per dataset",
        )
    parts, sources, inputs, read = [], [], {}, {}
    for name, folder in zip(names, dirs, strict=True):
        df = read[folder.resolve()] = read_manifest(folder)
        before = (len(df), int(df["patient_id"].nunique()))
        if splits:
            df = df[df["split"].isin(splits)]
        if fraction < 1.0:  # seeded per source, so the order of the sources does not matter
            df = _sample_patients(df, fraction, np.random.default_rng([seed, zlib.crc32(name.encode())]))
        if df.empty:
            raise InputError(f"{folder}: nothing left for the pool", hint="check --splits and --fraction")
        df = df.assign(
            path=[str(p.absolute()) for p in resolve_image_paths(folder, df["path"])],
            source=name,
            source_split=df["split"],
            split="train",
            **{c: name + "/" + df[c].astype(str) for c in ("image_id", "patient_id", "study_id")},
        )
        parts.append(df)
        inputs[f"manifest_{name}"] = folder / "manifest.parquet"
        sources.append(
            {"dataset": name, "manifest": str(folder), "images_before": before[0], "patients_before": before[1],
             "images": len(df), "patients": int(df["patient_id"].nunique())}
        )  # fmt: skip
    pool = pd.concat(parts, ignore_index=True)
    labels = [c for c in pool.columns if c.startswith(LABEL_PREFIX)]
    pool = pool[[*MANIFEST_COLUMNS, *labels, "source", "source_split"]]
    leakage = find_leakage(pool, [*dirs, *(manifest_dir_of(e) for e in evaluation)], already_read=read)
    warnings = [
        f"leakage: {leak['patients']} pool patient(s) ({leak['images']} images) of {leak['dataset']} are in the "
        f"validate/test split of {leak['evaluation']}; a model pre-trained on this pool has seen them"
        for leak in leakage
    ]
    options = {"fraction": fraction, "seed": seed, "splits": list(splits) if splits else "all"}
    return Prepared(
        manifest=pool,
        dataset="pool",
        image_root=None,
        options=options,
        inputs=inputs,
        warnings=warnings,
        extra={"sources": sources, "leakage": leakage},
        extra_columns=("source", "source_split"),
    )


def find_leakage(
    pool: pd.DataFrame, evaluation_dirs, already_read: dict | None = None
) -> list[dict[str, Any]]:
    """Per evaluation manifest: the pool's patients (same dataset) that are in its validate or test split.
    ``already_read`` maps resolved manifest folders to manifests the caller has read (not read again)."""
    already_read = already_read or {}
    out, seen = [], set()
    for folder in evaluation_dirs:
        folder = Path(folder)
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        name = _dataset_name(folder)
        ev = already_read[folder.resolve()] if folder.resolve() in already_read else read_manifest(folder)
        held = set(name + "/" + ev.loc[ev["split"].isin(HELD_OUT), "patient_id"].astype(str))
        leaked = pool["patient_id"].isin(held)
        if leaked.any():
            out.append(
                {"dataset": name, "evaluation": str(folder), "patients": int(pool.loc[leaked, "patient_id"].nunique()),
                 "images": int(leaked.sum())}
            )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- balancing


def _sex_quota(available: dict[str, int], n: int) -> dict[str, int]:
    """How many images to take from each sex (Female, Male, then missing) to total ``n``, as even as possible."""
    quota = {sex: 0 for sex in available}
    remaining = n
    order = [s for s in ("Female", "Male") if s in available]
    for k, sex in enumerate(order):  # half each (Female gets the odd one), capped by what there is
        share = -(-remaining // (len(order) - k))
        quota[sex] = min(available[sex], share)
        remaining -= quota[sex]
    for sex in available:  # whatever one sex lacked comes from the other, then from missing sex
        extra = min(available[sex] - quota[sex], remaining)
        quota[sex] += extra
        remaining -= extra
    return quota


def balance_training_set(manifest: str | os.PathLike, *, seed: int = 0) -> Prepared:
    """The balanced fine-tuning set of the manifest in ``manifest`` (see the module docstring)."""
    import numpy as np
    import pandas as pd

    folder = manifest_dir_of(manifest)
    df = read_manifest(folder)
    record = read_record(folder)
    log = DropLog(str(folder / "manifest.parquet"))
    train, rest = df[df["split"] == "train"], df[df["split"] != "train"]
    hint = "balancing needs race (White/Asian/Black) in the train split: prepare the dataset with race"
    train = log.keep(
        train, train["race"].isin(RACES), "train images without a race", values=train["race"], hint=hint
    )
    counts = train["race"].value_counts()
    missing = [r for r in RACES if r not in counts.index]
    if missing:
        raise InputError(f"{folder}: the train split has no {', '.join(missing)} images", hint=hint)
    n = int(counts.min())
    rng = np.random.default_rng(seed)
    sex = train["sex"].astype("string").fillna("missing")
    keep = []
    for race in RACES:
        rows = train.index[train["race"] == race]
        by_sex = {s: rows[sex.loc[rows] == s] for s in (*SEXES, "missing") if (sex.loc[rows] == s).any()}
        quota = _sex_quota({s: len(r) for s, r in by_sex.items()}, n)
        for s, r in by_sex.items():
            keep.extend(rng.choice(r, size=quota[s], replace=False) if quota[s] < len(r) else r)
    balanced = pd.concat([train.loc[sorted(keep)], rest])
    balanced = balanced.loc[df.index.intersection(balanced.index)]  # the manifest's own row order
    report = {
        "per_race": n,
        "seed": seed,
        "before": _race_sex(train),
        "after": _race_sex(balanced[balanced["split"] == "train"]),
    }
    return Prepared(
        manifest=balanced,
        dataset=str(record.get("dataset") or folder.name),
        image_root=Path(record["image_root"]) if record.get("image_root") else None,
        options={"balanced": "race (sex as evenly as possible)", "seed": seed, "source": str(folder)},
        inputs={"manifest": folder / "manifest.parquet"},
        dropped=log.entries,
        extra={"balance": report},
    )


def _race_sex(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    sex = df["sex"].astype("string").fillna("missing")
    table = df.groupby([df["race"].astype("string"), sex]).size()
    out: dict[str, dict[str, int]] = {}
    for (race, s), k in table.items():
        out.setdefault(str(race), {})[str(s)] = int(k)
    return out
