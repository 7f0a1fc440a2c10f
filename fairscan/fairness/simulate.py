"""Simulated predictions with known subgroup AUCs: what the calibration study and the tests audit.

``simulate(...)`` draws a predictions table (the format ``fairscan audit`` reads) in which every subgroup's true
AUC is set exactly, so a test's error rate and an interval's coverage can be measured against the truth. It is
also a way to see, before collecting data, how small a gap an audit of a given size can find.

The model (binormal, per label): a negative image scores ``u_p + e``, a positive ``u_p + d_c + e``, with a
patient effect ``u_p ~ N(0, patient_sd^2)`` shared by the patient's images (so images of one patient are
correlated) and ``e ~ N(0, 1)``. Within a cell ``c`` (one group of every attribute) the AUC is
``Phi(d_c / sqrt(2 (1 + patient_sd^2)))``, and ``d_c`` is set from the cell's AUC: the label's base AUC minus
each attribute's shift for the cell's group. Because negatives score alike in every cell, a subgroup's AUC is
the average of its cells' AUCs weighted by their share of the subgroup's positives; with attributes drawn
independently and prevalence depending on at most one attribute, each attribute's true gap is exactly the
range of its shifts, label by label and for the mean over labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# CheXpert's 14 labels with prevalences near the paper's test set (U-zeros) and AUCs near Table 1's models.
CHEXPERT_LIKE = {
    "no_finding": (0.10, 0.88), "enlarged_cardiomediastinum": (0.05, 0.66), "cardiomegaly": (0.12, 0.84),
    "lung_opacity": (0.47, 0.74), "lung_lesion": (0.04, 0.78), "edema": (0.25, 0.84),
    "consolidation": (0.07, 0.72), "pneumonia": (0.03, 0.74), "atelectasis": (0.15, 0.70),
    "pneumothorax": (0.09, 0.86), "pleural_effusion": (0.39, 0.88), "pleural_other": (0.016, 0.80),
    "fracture": (0.04, 0.74), "support_devices": (0.52, 0.90),
}  # fmt: skip
PAPER_GROUPS = {"sex": (("Male", "Female"), (0.59, 0.41)), "race": (("White", "Asian", "Black"), (0.78, 0.15, 0.07))}


@dataclass
class Scenario:
    """What to simulate. ``shift[attr][group]`` lowers that group's AUC (fraction); ``prevalence_by`` names the
    one attribute whose groups change prevalence, by ``prevalence_factor[group]`` (times the label's)."""

    patients: int = 2000
    labels: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(CHEXPERT_LIKE))
    groups: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = field(default_factory=lambda: dict(PAPER_GROUPS))
    shift: dict[str, dict[str, float]] = field(default_factory=dict)
    prevalence_by: str | None = None
    prevalence_factor: dict[str, float] = field(default_factory=dict)
    images_per_patient: float = 1.0  # mean; 1 + Poisson(mean - 1) images each
    patient_sd: float = 0.0
    flip: dict[str, float] = field(default_factory=dict)  # share of images whose recorded group is redrawn
    ages: bool = False  # an age column that changes between a patient's visits
    logits: bool = False

    def true_gap(self, attr: str) -> float:
        s = self.shift.get(attr, {})
        values = [s.get(g, 0.0) for g in self.groups[attr][0]]
        return max(values) - min(values)


def simulate(sc: Scenario, seed: int, *, models: int = 1, model_sd: float = 0.0) -> list:
    """``models`` predictions tables of the same images (DataFrames); each model adds its own
    ``N(0, model_sd^2)`` noise to every score, on top of the shared noise, at the same true AUCs."""
    import pandas as pd
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    n_img_per = 1 + (rng.poisson(sc.images_per_patient - 1, sc.patients) if sc.images_per_patient > 1 else 0)
    pat = np.repeat(np.arange(sc.patients), n_img_per)
    n = len(pat)
    base = {"image_id": [f"img{seed}-{i:06d}" for i in range(n)], "patient_id": [f"p{seed}-{p:06d}" for p in pat]}
    codes = {}
    for attr, (names, shares) in sc.groups.items():
        per_patient = rng.choice(len(names), sc.patients, p=np.asarray(shares) / np.sum(shares))
        c = per_patient[pat]
        if sc.flip.get(attr):
            redraw = rng.random(n) < sc.flip[attr]
            c = np.where(redraw, rng.choice(len(names), n, p=np.asarray(shares) / np.sum(shares)), c)
        codes[attr] = c
        base[attr] = np.asarray(names, dtype=object)[c]
    if sc.ages:
        age0 = rng.uniform(20, 85, sc.patients)
        base["age"] = np.round(age0[pat] + rng.uniform(0, 6, n), 1)
    frames = [pd.DataFrame(base) for _ in range(models)]
    u = rng.normal(0, sc.patient_sd, sc.patients)[pat] if sc.patient_sd > 0 else np.zeros(n)
    scale = np.sqrt(2 * (1 + sc.patient_sd**2 + model_sd**2))
    for lab, (prev, auc) in sc.labels.items():
        p = np.full(n, prev)
        if sc.prevalence_by:
            names = sc.groups[sc.prevalence_by][0]
            p = p * np.array([sc.prevalence_factor.get(g, 1.0) for g in names])[codes[sc.prevalence_by]]
        y = (rng.random(n) < np.clip(p, 0, 1)).astype(float)
        cell_auc = np.full(n, auc)
        for attr, shifts in sc.shift.items():
            names = sc.groups[attr][0]
            cell_auc = cell_auc - np.array([shifts.get(g, 0.0) for g in names])[codes[attr]]
        d = scale * norm.ppf(np.clip(cell_auc, 1e-6, 1 - 1e-6))
        shared = u + d * y + rng.normal(size=n)
        for df in frames:
            z = shared + (rng.normal(0, model_sd, n) if model_sd > 0 else 0.0)
            df[f"label_{lab}"] = y
            if sc.logits:
                df[f"logit_{lab}"] = z
            else:
                df[f"prob_{lab}"] = 1.0 / (1.0 + np.exp(-z))
    return frames
