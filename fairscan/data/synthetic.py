"""Synthetic chest X-ray datasets in the exact layouts of CheXpert-v1.0-small, NIH ChestX-ray14 and
MIMIC-CXR-JPG, with a planted, documented subgroup effect: the fixtures of the tests and the README's first command.

Population. Patients get sex 59/41 (Male/Female) and race 78/15/7 (White/Asian/Black) by default, the paper's
CheXpert shares. About 12% of patients get demographics the cohort rules must drop (PRIMARY_RACE Other, Unknown,
Patient Refused, Native American ...; a Hispanic ethnicity; no row in the demographics file at all), written
with the real files' spellings. Each patient has 1-4 studies, each with one frontal image (AP or PA) and, for a
quarter of them, a lateral view as well.

Findings. Each label is present in a study with a fixed prevalence (CheXpert's, floored at 8% so that small
datasets have positives everywhere), independently of sex and race, so subgroups differ only by the planted
effect. ``No Finding`` is present when no other finding (Support Devices aside) is. CheXpert and MIMIC record a
present finding as 1.0 (or -1.0, uncertain, 10% of the time) and an absent one as blank (65%), 0.0 (30%) or
-1.0 (5%); CheXpert's ``valid.csv`` and NIH record the truth (1/0).

Image model (pixel values in [0, 1]; ``image_size`` wide, 1.2x as tall, like CheXpert-small's portrait images)::

    x = anatomy + sum_k y_k * A * pattern_k + N(0, sigma^2),   A = 0.08, sigma = 0.04

``anatomy`` is a body outline with two dark lung fields, mediastinum and spine, heart, ribs, clavicles and, for
female patients, breast shadows, each varied per patient (size, darkness) and per study (brightness, contrast,
a shift of a few pixels). ``pattern_k`` is finding k's own smooth mark at its own place: a brighter heart for
Cardiomegaly, blunted costophrenic angles for Pleural Effusion, a dark apex for Pneumothorax, a line and a
pacemaker for Support Devices, and so on (``PATTERNS``). A study's lateral view carries no findings.

Subgroup effect (the planted gap). For images of the affected group (``effect_group``, default ``race:Black``;
``sex:Female`` for NIH, which records no race) and an effect strength ``e`` in [0, 1]::

    A -> A * (1 - 0.5 e)        (findings have less contrast)
    sigma -> sigma * (1 + 2 e)   (more acquisition noise)

so every finding's signal-to-noise ratio in that group drops by (1 - 0.5e) / (1 + 2e) (1/6 at e = 1). The
gap is a property of the images, not of a model: any classifier -- a linear probe on pixels, a small CNN or
ViT -- has a lower AUC on the affected group, and ``e = 0`` plants no gap at all. Profiles: ``default`` (400
patients, e = 0.5: quick, for the README's first command) and ``test`` (1,500 patients with race shares
50/25/25 so every group is large, e = 1: a model fine-tuned on it shows the gap with an interval excluding 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairscan.data.synthetic_layouts import (
    DEMO_NAME,
    MIMIC_IV,
    ROOT_NAMES,
    write_chexpert,
    write_mimic,
    write_nih,
)
from fairscan.errors import InputError
from fairscan.schema import CHEXPERT_LABELS, NIH_LABELS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

LAYOUTS = ("chexpert", "nih", "mimic")
PROFILES: dict[str, dict[str, Any]] = {
    "default": {"patients": 400, "effect": 0.5, "race_shares": (0.78, 0.15, 0.07)},
    "test": {"patients": 1500, "effect": 1.0, "race_shares": (0.50, 0.25, 0.25)},
}
SEX_SHARES = (0.59, 0.41)  # Male, Female
AMPLITUDE, NOISE = 0.08, 0.04

# A finding's mark: Gaussian components (centre x, centre y, sd x, sd y, weight) in units of the image's width and
# height; weight < 0 darkens.
PATTERNS: dict[str, list[tuple[float, float, float, float, float]]] = {
    "enlarged_cardiomediastinum": [(0.50, 0.36, 0.07, 0.10, 1.0)],
    "cardiomegaly": [(0.57, 0.66, 0.11, 0.07, 1.0)],
    "lung_opacity": [(0.30, 0.62, 0.07, 0.08, 1.0)],
    "lung_lesion": [(0.68, 0.36, 0.03, 0.03, 1.0)],
    "edema": [(0.40, 0.48, 0.05, 0.06, 0.8), (0.62, 0.48, 0.05, 0.06, 0.8)],
    "consolidation": [(0.72, 0.58, 0.05, 0.05, 1.0)],
    "pneumonia": [(0.28, 0.42, 0.045, 0.045, 1.0)],
    "atelectasis": [(0.70, 0.72, 0.08, 0.02, 1.0)],
    "pneumothorax": [(0.76, 0.24, 0.06, 0.07, -1.0)],
    "pleural_effusion": [(0.24, 0.80, 0.07, 0.04, 1.0), (0.78, 0.80, 0.07, 0.04, 1.0)],
    "pleural_other": [(0.15, 0.52, 0.015, 0.12, 1.0)],
    "fracture": [(0.84, 0.44, 0.05, 0.012, 1.0)],
    "support_devices": [(0.46, 0.30, 0.012, 0.18, 1.2), (0.30, 0.20, 0.025, 0.025, 1.0)],
    "mass": [(0.36, 0.30, 0.045, 0.045, 1.0)],
    "emphysema": [(0.30, 0.46, 0.08, 0.15, -0.6), (0.70, 0.46, 0.08, 0.15, -0.6)],
    "fibrosis": [(0.24, 0.27, 0.05, 0.035, 0.8)],
    "hernia": [(0.45, 0.83, 0.06, 0.04, 1.0)],
}
NIH_PATTERNS = {
    "effusion": "pleural_effusion",
    "infiltration": "lung_opacity",
    "nodule": "lung_lesion",
    "pleural_thickening": "pleural_other",
}
PREVALENCE = {  # CheXpert's frontal-image prevalence (positives, U-Zeros), floored at 8%
    "enlarged_cardiomediastinum": 0.08, "cardiomegaly": 0.12, "lung_opacity": 0.47, "lung_lesion": 0.08,
    "edema": 0.24, "consolidation": 0.08, "pneumonia": 0.08, "atelectasis": 0.15, "pneumothorax": 0.09,
    "pleural_effusion": 0.39, "pleural_other": 0.08, "fracture": 0.08, "support_devices": 0.52,
    "infiltration": 0.18, "mass": 0.08, "nodule": 0.08, "emphysema": 0.08, "fibrosis": 0.08,
    "pleural_thickening": 0.08, "hernia": 0.08, "effusion": 0.12,
}  # fmt: skip

# Demographics spellings of the real files; (PRIMARY_RACE, ETHNICITY) pairs.
CHEXPERT_SPELLINGS = {
    "White": ["White", "White, non-Hispanic", "White or Caucasian"],
    "Black": ["Black or African American", "Black, non-Hispanic"],
    "Asian": ["Asian", "Asian, non-Hispanic", "Asian - Historical Conv"],
}
CHEXPERT_KEPT_ETHNICITY = ["Non-Hispanic/Non-Latino", "Not Hispanic"]
CHEXPERT_DROPPED = [  # (PRIMARY_RACE, ETHNICITY, race the patient really has for the image model)
    ("Other", "Non-Hispanic/Non-Latino", None), ("Unknown", "Unknown", None),
    ("Race and Ethnicity Unknown", "Unknown", None), ("Patient Refused", "Patient Refused", None),
    ("Native Hawaiian or Other Pacific Islander", "Non-Hispanic/Non-Latino", None),
    ("American Indian or Alaska Native", "Not Hispanic", None), ("Native American, non-Hispanic", "Not Hispanic", None),
    ("Pacific Islander, non-Hispanic", "Non-Hispanic/Non-Latino", None), ("Other, non-Hispanic", "Not Hispanic", None),
    ("Other, Hispanic", "Hispanic/Latino", None), ("White, Hispanic", "Hispanic/Latino", "White"),
    ("Black, Hispanic", "Hispanic/Latino", "Black"), ("Asian, Hispanic", "Hispanic/Latino", "Asian"),
    ("White", "Hispanic/Latino", "White"), ("White", "Unknown", "White"), ("Black or African American", "Patient Refused", "Black"),
]  # fmt: skip
MIMIC_SPELLINGS = {"White": "WHITE", "Black": "BLACK/AFRICAN AMERICAN", "Asian": "ASIAN"}
MIMIC_DROPPED = ["OTHER", "UNKNOWN", "UNABLE TO OBTAIN", "HISPANIC/LATINO - PUERTO RICAN", "WHITE - OTHER EUROPEAN",
                 "AMERICAN INDIAN/ALASKA NATIVE", "PATIENT DECLINED TO ANSWER"]  # fmt: skip
DROP_SHARE, NO_DEMO_SHARE, LATERAL_SHARE = 0.10, 0.02, 0.25


@dataclass(frozen=True)
class Effect:
    """The planted effect: images of patients whose ``attribute`` equals ``group`` get strength ``strength``."""

    attribute: str
    group: str
    strength: float

    @classmethod
    def parse(cls, spec: str | None, strength: float, layout: str) -> Effect:
        spec = spec or ("sex:Female" if layout == "nih" else "race:Black")
        attribute, _, group = spec.partition(":")
        if attribute not in ("sex", "race") or not group:
            raise InputError(
                f"effect group {spec!r} is not attribute:group", hint="e.g. race:Black or sex:Female"
            )
        if layout == "nih" and attribute == "race":
            raise InputError(
                "the NIH layout records no race", hint="use an effect group on sex, e.g. sex:Female"
            )
        from fairscan.schema import RACES, SEXES

        groups = {"sex": SEXES, "race": RACES}[attribute]
        if group not in groups:
            raise InputError(
                f"effect group {spec!r}: no synthetic patient has {attribute} {group!r}, so nothing would be planted",
                hint=f"{attribute} is one of {', '.join(groups)}, e.g. --effect-group {attribute}:{groups[-1]}",
            )
        if not 0.0 <= strength <= 1.0:
            raise InputError(f"effect strength {strength} is outside [0, 1]")
        return cls(attribute, group, float(strength))


# --------------------------------------------------------------------------------------------- population


def _population(rng: np.random.Generator, n: int, race_shares) -> pd.DataFrame:
    """One row per patient: sex, true race (None for the ones whose demographics will not map), age, the
    demographics strings (CheXpert and MIMIC spellings) and whether they have a demographics row."""
    import numpy as np
    import pandas as pd

    sex = rng.choice(["Male", "Female"], size=n, p=SEX_SHARES)
    race = rng.choice(["White", "Asian", "Black"], size=n, p=np.asarray(race_shares) / sum(race_shares))
    primary = [rng.choice(CHEXPERT_SPELLINGS[r]) for r in race]
    ethnicity = rng.choice(CHEXPERT_KEPT_ETHNICITY, size=n, p=(0.8, 0.2)).tolist()
    mimic = [MIMIC_SPELLINGS[r] for r in race]
    true_race: list[str | None] = list(race)
    for i in np.flatnonzero(rng.random(n) < DROP_SHARE):
        primary[i], ethnicity[i], true_race[i] = CHEXPERT_DROPPED[rng.integers(len(CHEXPERT_DROPPED))]
        mimic[i] = (
            MIMIC_DROPPED[rng.integers(len(MIMIC_DROPPED))] if true_race[i] is None else mimic[i] + "|UNKNOWN"
        )
    return pd.DataFrame(
        {
            "sex": sex,
            "race": true_race,
            "age": np.clip(rng.normal(60, 17, size=n), 18, 88).round(),
            "primary_race": primary,
            "ethnicity": ethnicity,
            "mimic_race": mimic,  # "A|B": two admissions with different races (inconsistent)
            "has_demo": rng.random(n) >= NO_DEMO_SHARE,
        }
    )


def _studies(rng: np.random.Generator, people: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per study: patient, study number, age, view, lateral, and the true finding states."""
    import numpy as np
    import pandas as pd

    n_studies = np.minimum(1 + rng.poisson(0.9, size=len(people)), 4)
    patient = np.repeat(np.arange(len(people)), n_studies)
    number = np.concatenate([np.arange(1, k + 1) for k in n_studies])
    df = pd.DataFrame({"patient": patient, "study": number})
    df["age"] = people["age"].to_numpy()[patient] + (number - 1)
    df["view"] = rng.choice(["AP", "PA"], size=len(df), p=(0.75, 0.25))
    df["lateral"] = rng.random(len(df)) < LATERAL_SHARE
    findings = [lab for lab in labels if lab != "no_finding"]
    truth = rng.random((len(df), len(findings))) < np.array([PREVALENCE[lab] for lab in findings])
    for j, lab in enumerate(findings):
        df[lab] = truth[:, j]
    if "no_finding" in labels:
        others = [lab for lab in findings if lab != "support_devices"]
        df["no_finding"] = ~df[others].any(axis=1)
    return df


# ------------------------------------------------------------------------------------------------- images


class _Renderer:
    """Draws frontal and lateral images from precomputed templates (see the module docstring)."""

    def __init__(self, width: int, labels: list[str]):
        import numpy as np

        self.w, self.h = width, round(width * 1.2)
        self.margin = max(
            1, round(0.03 * width)
        )  # templates are drawn larger, then cropped at a random shift
        m = self.margin
        ys, xs = np.mgrid[-m : self.h + m, -m : self.w + m]
        self.x, self.y = ((xs + 0.5) / self.w).astype(np.float32), ((ys + 0.5) / self.h).astype(np.float32)
        ellipse = self._ellipse
        self.body = ellipse(0.5, 0.56, 0.44, 0.52)
        self.lungs = ellipse(0.31, 0.47, 0.15, 0.28) + ellipse(0.69, 0.47, 0.15, 0.28)
        self.spine = self._blob(0.5, 0.5, 0.04, 0.6)
        self.heart = ellipse(0.58, 0.65, 0.16, 0.11)
        self.ribs = 0.5 * (1 + np.sin(2 * np.pi * self.y * 9)) * self.lungs
        self.clavicles = self._blob(0.32, 0.19, 0.12, 0.012) + self._blob(0.68, 0.19, 0.12, 0.012)
        self.breasts = self._blob(0.30, 0.74, 0.11, 0.07) + self._blob(0.70, 0.74, 0.11, 0.07)
        self.lateral = ellipse(0.5, 0.55, 0.32, 0.5) - 0.6 * ellipse(0.45, 0.45, 0.2, 0.3)
        self.patterns = np.stack([self._pattern(lab) for lab in labels if lab != "no_finding"]).astype(
            np.float32
        )

    def _ellipse(self, cx, cy, rx, ry, edge=0.08):
        import numpy as np

        r = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return 1.0 / (1.0 + np.exp((r - 1.0) / edge))

    def _blob(self, cx, cy, sx, sy):
        import numpy as np

        return np.exp(-0.5 * (((self.x - cx) / sx) ** 2 + ((self.y - cy) / sy) ** 2))

    def _pattern(self, label: str):
        name = NIH_PATTERNS.get(label, label)
        return sum(w * self._blob(cx, cy, sx, sy) for cx, cy, sx, sy, w in PATTERNS[name])

    def frontal(self, rng, *, female: bool, findings, strength: float):
        """``findings``: bool per non-``no_finding`` label; ``strength``: the effect on this image (0 = none)."""
        import numpy as np

        img = (
            0.05
            + 0.50 * self.body
            - rng.uniform(0.28, 0.36) * self.lungs
            + rng.uniform(0.18, 0.26) * self.spine
            + rng.uniform(0.12, 0.22) * self.heart
            + 0.05 * self.ribs
            + 0.12 * self.clavicles
            + (rng.uniform(0.05, 0.1) * self.breasts if female else 0.0)
        )
        amplitude = AMPLITUDE * (1.0 - 0.5 * strength)
        img = img + amplitude * np.tensordot(np.asarray(findings, np.float32), self.patterns, axes=1)
        return self._finish(rng, img, NOISE * (1.0 + 2.0 * strength))

    def lateral_view(self, rng):
        return self._finish(rng, 0.05 + 0.5 * self.lateral, NOISE)

    def _finish(self, rng, img, noise: float):
        import numpy as np

        dy, dx = rng.integers(0, 2 * self.margin + 1, size=2)
        img = img[dy : dy + self.h, dx : dx + self.w]
        img = (
            rng.uniform(0.9, 1.1) * img
            + rng.uniform(-0.04, 0.04)
            + noise * rng.standard_normal(img.shape, np.float32)
        )
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _save(img, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        Image.fromarray(img).save(path)
    else:
        Image.fromarray(img).save(path, quality=92)


# ------------------------------------------------------------------------------------------------ layouts


def make_synthetic(
    out_dir: str | os.PathLike,
    *,
    layout: str = "chexpert",
    patients: int | None = None,
    seed: int = 0,
    image_size: int = 64,
    effect: float | None = None,
    effect_group: str | None = None,
    profile: str = "default",
    race_shares=None,
) -> Path:
    """Write a synthetic dataset in ``layout``'s real layout under ``out_dir``; return its root (the folder the
    adapter reads). Unset ``patients``, ``effect`` and ``race_shares`` come from ``profile``."""
    import numpy as np

    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}", hint=f"use one of {', '.join(LAYOUTS)}")
    if profile not in PROFILES:
        raise InputError(f"unknown synthetic profile {profile!r}", hint=f"use one of {', '.join(PROFILES)}")
    settings = PROFILES[profile]
    patients = settings["patients"] if patients is None else int(patients)
    if patients < 10:
        raise InputError(f"--patients {patients} is too few", hint="use at least 10 patients")
    if image_size < 16:
        raise InputError(f"--image-size {image_size} is too small", hint="use at least 16 pixels")
    fx = Effect.parse(effect_group, settings["effect"] if effect is None else effect, layout)
    rng = np.random.default_rng(seed)
    labels = list(NIH_LABELS if layout == "nih" else CHEXPERT_LABELS)
    people = _population(rng, patients, race_shares or settings["race_shares"])
    studies = _studies(rng, people, labels)
    root = Path(out_dir) / ROOT_NAMES[layout]
    root.mkdir(parents=True, exist_ok=True)
    writer = {"chexpert": write_chexpert, "nih": write_nih, "mimic": write_mimic}[layout]
    table = writer(rng, root, people, studies, labels)
    _render(rng, root, table, people, studies, labels, fx, image_size)
    from fairscan.io import write_json

    write_json(
        root / "synthetic.json",
        {
            "layout": layout, "patients": patients, "seed": seed, "image_size": image_size, "profile": profile,
            "effect": {"attribute": fx.attribute, "group": fx.group, "strength": fx.strength,
                       "amplitude": AMPLITUDE, "noise": NOISE},
        },
    )  # fmt: skip
    return root


def _render(rng, root: Path, table: pd.DataFrame, people, studies, labels, fx: Effect, size: int) -> None:
    """Draw every image listed in ``table`` (columns: file, study_row, lateral)."""
    renderer = _Renderer(size, labels)
    findings = studies[[lab for lab in labels if lab != "no_finding"]].to_numpy()
    affected = (people[fx.attribute] == fx.group).to_numpy()
    female = (people["sex"] == "Female").to_numpy()
    patient_of = studies["patient"].to_numpy()
    for file, row, lateral in table[["file", "study_row", "lateral"]].itertuples(index=False):
        p = patient_of[row]
        if lateral:
            img = renderer.lateral_view(rng)
        else:
            img = renderer.frontal(
                rng, female=female[p], findings=findings[row], strength=fx.strength if affected[p] else 0.0
            )
        _save(img, root / file)


# --------------------------------------------------------------------------------- synthetic -> manifest


def adapter_inputs(root: Path, layout: str) -> dict[str, Any]:
    """The keyword arguments the layout's adapter needs beside the root."""
    if layout == "chexpert":
        return {"demographics": root.parent / DEMO_NAME}
    if layout == "mimic":
        return {"mimic_iv": root.parents[1] / MIMIC_IV}
    return {}


def prepare_synthetic(out_dir: str | os.PathLike, *, layout: str = "chexpert", seed: int = 0, **kw):
    """Generate a synthetic dataset under ``out_dir/raw`` and prepare it with its layout's adapter (CheXpert: the
    paper's cohort and seeded split; NIH and MIMIC: their official lists). Returns the adapter's Prepared."""
    import json

    from fairscan.data.chexpert import prepare_chexpert
    from fairscan.data.mimic import prepare_mimic
    from fairscan.data.nih import prepare_nih

    root = make_synthetic(Path(out_dir) / "raw", layout=layout, seed=seed, **kw)
    adapter = {"chexpert": prepare_chexpert, "nih": prepare_nih, "mimic": prepare_mimic}[layout]
    prepared = adapter(root, seed=seed, **adapter_inputs(root, layout))
    prepared.extra["synthetic"] = json.loads((root / "synthetic.json").read_text())
    prepared.extra["raw_root"] = str(root.resolve())
    return prepared


def prepare_synthetic_manifest(out_dir: str | os.PathLike, **kw) -> Path:
    """One call from nothing to ``out_dir/manifest.parquet`` (see :func:`prepare_synthetic`); returns its path."""
    from fairscan.data.manifest import write_prepared

    return write_prepared(prepare_synthetic(out_dir, **kw), out_dir)
