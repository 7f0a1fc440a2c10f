"""Every preset's quick variant runs, in-process, on one shared synthetic dataset (the CI step of the presets).

All quick variants share ``data/`` (the synthetic CheXpert, ChestX-ray14 and MIMIC layouts, each made once) and
``runs/``: a run that several presets need (an ensemble's members, a shared pre-training) is made once, as in a
real study. Marked ``slow``: about a minute per ten presets on 2 CPU cores; CI may run it as a step of its own
(``pytest -m slow``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fairscan.config import load_preset, preset_names
from fairscan.studies import load_study, run_study

RUNNABLE = [n for n in preset_names() if load_preset(n).stage != "audit"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    return {"data": str(root / "data"), "runs": str(root / "runs"), "studies": str(root / "studies")}


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNABLE)
def test_quick_variant_runs(name, shared):
    preset = load_preset(f"{name}:quick", paths=shared)
    written = run_study(f"{name}:quick", paths=shared)
    if preset.stage == "pretrain":
        assert not written and (Path(preset.pretrain.out) / "model.safetensors").exists()
        return
    d = load_study(written["json"])
    assert d["quick"] and d["rows"]
    for row in d["rows"]:
        assert row["metrics"]["mean_auc"]["mean"] is not None, row["preset"]
    assert written["html"].exists()


def test_every_stage_has_a_quick_run():
    stages = {load_preset(n).stage for n in RUNNABLE}
    assert stages == {"pretrain", "finetune", "ensemble", "study"}
