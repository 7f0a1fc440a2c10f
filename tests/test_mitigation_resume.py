"""A run of each mitigation method killed mid-epoch and resumed ends byte-identical to an uninterrupted one
(the setup of test_finetune's resume test: 50 images, batch 4, checkpoints every 3 steps, a kill at step 20)."""

from __future__ import annotations

import json

import pytest

from tests._finetune_fixtures import TINY_ARGS, synthetic_manifest

torch = pytest.importorskip("torch")

METHOD_ARGS = {
    "erm": ["--select", "dto"],  # erm's loss, with dto's candidate weights kept across the kill
    "resample": ["--resample-by", "group-label", "--select", "val_worst_group_auc"],
    "reweight": [],
    "groupdro": ["--groupdro-c", "1"],
    "adversarial": [],
}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_resume_mid_epoch_is_byte_identical(method, run_cli, tmp_path_factory, tmp_path, monkeypatch):
    from fairscan.train.mitigation.objective import Mitigated

    manifest = synthetic_manifest(tmp_path_factory)
    args = ["--model", "mae", "--init", "random", "--manifest", manifest, "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--warmup-epochs", "1", "--save-every", "3", "--mitigation", method,
            "--group-attr", "race", *METHOD_ARGS[method], *TINY_ARGS]  # fmt: skip
    code, _, err = run_cli("finetune", *args, "--out", tmp_path / "a")
    assert code == 0, err

    calls = {"n": 0}
    real = Mitigated.loss

    def killed_at_step_20(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(Mitigated, "loss", killed_at_step_20)
    code, _, _ = run_cli("finetune", *args, "--out", tmp_path / "b")
    assert code == 130
    progress = json.loads((tmp_path / "b" / "state" / "progress.json").read_text())
    assert (progress["epoch"], progress["batch"], progress["step"]) == (1, 6, 18)
    monkeypatch.setattr(Mitigated, "loss", real)

    code, _, err = run_cli("finetune", "--out", tmp_path / "b", "--resume")
    assert code == 0, err
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    sa, sb = json.loads((a / "stage.json").read_text()), json.loads((b / "stage.json").read_text())
    assert sa["selection"] == sb["selection"] and sa["mitigation"] == sb["mitigation"]
    assert sb["result"]["resumed_from_step"] == 18
