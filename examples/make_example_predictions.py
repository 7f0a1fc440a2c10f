"""Write an example predictions file with a known, planted fairness gap.

    python examples/make_example_predictions.py example-out/preds.parquet [--images 8000] [--seed 0]

Scores are drawn so that each label's AUC is lower for Female and for Black patients (a planted gap),
with several images per patient and CheXpert's 14 label ids, in fairscan's predictions format. A second
file with ``--no-gap`` has the same labels and no planted gap, for comparisons.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fairscan.schema import CHEXPERT_LABELS, write_predictions

PREVALENCE = [0.10, 0.05, 0.12, 0.45, 0.04, 0.25, 0.07, 0.03, 0.15, 0.08, 0.38, 0.02, 0.04, 0.50]


def make(n_images: int, seed: int, gap: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_patients = max(1, n_images // 3)
    sex = rng.choice(["Male", "Female"], size=n_patients, p=[0.59, 0.41])
    race = rng.choice(["White", "Asian", "Black"], size=n_patients, p=[0.78, 0.15, 0.07])
    age = rng.integers(18, 91, size=n_patients).astype(float)
    patient = rng.integers(0, n_patients, size=n_images)
    frame = {
        "image_id": [f"img{i:06d}" for i in range(n_images)],
        "patient_id": [f"patient{p:05d}" for p in patient],
        "sex": sex[patient],
        "race": race[patient],
        "age": age[patient],
    }
    # Separation of positives from negatives, in standard deviations; smaller = lower AUC.
    separation = np.full(n_images, 1.3)
    if gap:
        separation -= 0.25 * (frame["sex"] == "Female") + 0.35 * (frame["race"] == "Black")
    for lab, prev in zip(CHEXPERT_LABELS, PREVALENCE):
        y = (rng.random(n_images) < prev).astype(float)
        z = rng.normal(size=n_images) + separation * y + np.log(prev / (1 - prev))
        frame[f"label_{lab}"] = y
        frame[f"prob_{lab}"] = 1 / (1 + np.exp(-z))
    return pd.DataFrame(frame)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-gap", action="store_true", help="no planted gap")
    args = ap.parse_args()
    df = make(args.images, args.seed, gap=not args.no_gap)
    write_predictions(
        df, args.out, provenance={"made_by": "examples/make_example_predictions.py", "seed": args.seed}
    )
    print(args.out)


if __name__ == "__main__":
    main()
