"""Small predictions tables for audit tests, with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_preds(
    n_images: int = 600,
    labels: tuple[str, ...] = ("cardiomegaly", "edema", "effusion"),
    seed: int = 0,
    gap: float = 0.0,
    images_per_patient: int = 3,
    prevalence: float = 0.3,
    ties: bool = False,
) -> pd.DataFrame:
    """Patients with sex and race; positives separate from negatives less well for Female and Black by `gap`."""
    rng = np.random.default_rng(seed)
    n_pat = max(1, n_images // images_per_patient)
    sex = rng.choice(["Male", "Female"], n_pat, p=[0.55, 0.45])
    race = rng.choice(["White", "Asian", "Black"], n_pat, p=[0.6, 0.25, 0.15])
    age = rng.integers(20, 90, n_pat).astype(float)
    pat = np.repeat(np.arange(n_pat), images_per_patient)[:n_images]
    df = pd.DataFrame(
        {
            "image_id": [f"i{i:05d}" for i in range(len(pat))],
            "patient_id": [f"p{p:05d}" for p in pat],
            "sex": sex[pat],
            "race": race[pat],
            "age": age[pat],
        }
    )
    sep = 1.2 - gap * ((df["sex"] == "Female").to_numpy() + (df["race"] == "Black").to_numpy())
    for lab in labels:
        y = (rng.random(len(df)) < prevalence).astype(float)
        z = rng.normal(size=len(df)) + sep * y
        p = 1 / (1 + np.exp(-z))
        if ties:
            p = np.round(p, 1)
        df[f"label_{lab}"] = y
        df[f"prob_{lab}"] = p
    return df
