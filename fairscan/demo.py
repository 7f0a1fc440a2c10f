"""``fairscan demo``: the whole pipeline on a fresh machine, with no data and no weights, in a few minutes.

It is the ``demo`` study preset run into one folder: a synthetic CheXpert (the real layout, with a race gap
planted in the images: Black patients' findings are fainter and noisier, see ``fairscan.data.synthetic``) is
generated and prepared; a tiny MAE is pre-trained briefly on its train split; two tiny models are fine-tuned,
a ViT from that MAE and a ResNet from scratch; both predict the test split and are ensembled; and the three
are audited together (sex and race, balanced test sets, paired patient bootstrap). The report shows the race
gap with Black as the worst subgroup -- the planted effect, found by the audit. Then where the bias lives: each
fine-tuned model's test features (its head's input, ``fairscan embed``) are probed for race and their PCA modes
tested by race and sex (``fairscan probe``, ``fairscan inspect``), in a table beside the audit's FG and one KS
table per model.

Run it again and finished steps are skipped; ``quick`` shrinks it to seconds (the tests use it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DEMO_PRESET = "demo"
DEFAULT_OUT = "fairscan-demo"


def demo_paths(out: str | os.PathLike) -> dict[str, str]:
    """The demo's folders, all under ``out``: data/ (manifests), runs/ (models, predictions), the report."""
    out = Path(out)
    return {"data": str(out / "data"), "runs": str(out / "runs"), "studies": str(out)}


def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    quick: bool = False,
    overrides: list[str] | None = None,
    console=None,
    progress=None,
    debug: bool = False,
) -> dict[str, Path]:
    """Run the demo into ``out``; returns the report's paths (``html``, ``markdown``, ``json``, ``audit_html``)."""
    from fairscan.studies import plan_study, run_study

    t0 = time.time()
    sets = list(overrides or [])
    if console is not None:
        steps = plan_study(DEMO_PRESET, quick=quick, overrides=sets, paths=demo_paths(out), out=out).steps
        console.print(
            f"[bold]fairscan demo[/]{' (quick)' if quick else ''}: {len(steps)} steps into {out} -- a synthetic "
            "CheXpert with a planted race gap, a tiny MAE, two tiny models (a ViT from the MAE, a ResNet from "
            "scratch), their ensemble, the audit, and the race probe and KS tests of both models' features",
            highlight=False,
            soft_wrap=True,
        )
    paths = run_study(
        DEMO_PRESET, quick=quick, overrides=sets, paths=demo_paths(out), out=out, console=console,
        progress=progress, debug=debug,
    )  # fmt: skip
    if console is not None:
        console.print(f"demo finished in {time.time() - t0:.0f} s", highlight=False)
    return paths
