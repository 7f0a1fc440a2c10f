"""Write an example features table (the layout `fairscan embed` writes) with a known, planted race shift.

    python examples/make_example_features.py example-out/feats.parquet [--patients 1500] [--dim 64] [--shift 0.8]

Gaussian features with a patient effect (1-3 images per patient) in which Black patients' images are shifted
by ``--shift`` total standard deviations along the first feature (``--shift 0``: independent of every
attribute); sex, age, race and two labels drawn independently of the features. See
``fairscan.representations.simulate``.
"""

from __future__ import annotations

import argparse

from fairscan.representations.features import write_features
from fairscan.representations.simulate import simulate_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--shift", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frame = simulate_features(patients=args.patients, dim=args.dim, shift=args.shift, seed=args.seed)
    provenance = {
        "example": "make_example_features.py",
        "shift": args.shift,
        "shifted": "Black",
        "seed": args.seed,
    }
    print(
        write_features(frame, args.out, provenance=provenance), f"{len(frame):,} images x {args.dim} features"
    )


if __name__ == "__main__":
    main()
