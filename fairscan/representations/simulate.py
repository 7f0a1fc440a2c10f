"""Simulated features tables with a known answer: the fixtures of the probe's and inspect's tests, benchmarks
and calibration.

Each patient has sex, race, an age and 1-``max_images`` images; each image's features are::

    x = u_patient + e_image + shift * [race == shifted] * direction,   u ~ N(0, patient_sd^2 I), e ~ N(0, image_sd^2 I)

so images of one patient are correlated (as in real data), and ``shift = 0`` makes the features independent
of every attribute (the null). ``direction`` is feat_0 (``shift_dims = 1``) or the first ``shift_dims``
features, scaled so the shifted group's mean moves by ``shift`` total standard deviations. Labels are drawn
per image with their own prevalence, independently of the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RACES = ("White", "Asian", "Black")


def simulate_features(
    *,
    patients: int = 300,
    max_images: int = 3,
    dim: int = 16,
    shift: float = 0.0,
    shifted: str = "Black",
    shift_dims: int = 1,
    race_shares: tuple[float, float, float] = (0.6, 0.25, 0.15),
    patient_sd: float = 1.0,
    image_sd: float = 0.5,
    labels: dict[str, float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A features table (``fairscan.representations.features`` layout) as a DataFrame."""
    rng = np.random.default_rng(seed)
    labels = {"no_finding": 0.2, "pleural_effusion": 0.35} if labels is None else labels
    race = rng.choice(RACES, size=patients, p=np.asarray(race_shares) / sum(race_shares))
    sex = rng.choice(["Male", "Female"], size=patients, p=[0.55, 0.45])
    base_age = rng.uniform(20, 85, size=patients)
    counts = rng.integers(1, max_images + 1, size=patients)
    pid = np.repeat(np.arange(patients), counts)
    n = len(pid)
    u = rng.normal(0.0, patient_sd, size=(patients, dim))
    x = u[pid] + rng.normal(0.0, image_sd, size=(n, dim))
    total_sd = np.hypot(patient_sd, image_sd)
    k = max(1, min(shift_dims, dim))
    x[:, :k] += (race[pid] == shifted)[:, None] * shift * total_sd / np.sqrt(k)
    frame = pd.DataFrame(
        {
            "image_id": [f"img{i:06d}" for i in range(n)],
            "patient_id": [f"patient{p:05d}" for p in pid],
            "sex": sex[pid],
            "age": np.round(base_age[pid] + rng.uniform(0, 3, size=n), 1),
            "race": race[pid],
        }
    )
    for lab, prevalence in labels.items():
        frame[f"label_{lab}"] = (rng.random(n) < prevalence).astype(np.float64)
    features = pd.DataFrame(x, columns=[f"feat_{j}" for j in range(dim)])
    return pd.concat([frame, features], axis=1)
