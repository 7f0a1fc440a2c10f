"""`fairscan finetune` end to end on a synthetic CheXpert manifest with tiny models (CPU)."""

from __future__ import annotations

import json
import math

import pytest

from tests._finetune_fixtures import (
    TINY_ARGS,
    VIT,
    mae_checkpoint,
    mocov3_checkpoint,
    vit_encoder,
)

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("single_thread")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_finetune_from_mae_weights_writes_the_run_folder_and_the_loss_falls(run_cli, manifest, tmp_path):
    from fairscan.io import sha256_file

    weights = mae_checkpoint(tmp_path / "mae.pth", vit_encoder())
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "finetune", "--model", "medical-mae", "--weights", weights, "--manifest", manifest, "--out", out,
        "--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--warmup-epochs", "0.5", "--seed", "3", *TINY_ARGS,
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip().endswith("model.safetensors")
    assert "effective batch 8 = 1 process(es) x 8 x 1 accumulation" in err
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "stage.json",
        "state",
    }

    stage = json.loads((out / "stage.json").read_text())
    assert stage["status"] == "complete" and stage["seed"] == 3
    assert stage["weights"]["format"] == "mae" and stage["weights"]["sha256"] == sha256_file(weights)
    assert stage["settings"]["layer_decay"] == 0.55 and stage["settings"]["optimizer"] == "adamw"
    assert stage["inputs"]["manifest"]["sha256"] == sha256_file(manifest / "manifest.parquet")
    info = json.loads((out / "model.json").read_text())
    assert info["pooling"] == "avg" and info["mean"] == [0.5056] * 3 and len(info["labels"]) == 14

    epochs = [r for r in _lines(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 3
    # a tiny run's loss trajectory differs between machines; what holds everywhere is that it is finite
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in epochs), epochs
    best = max(epochs, key=lambda r: r["val_mean_auc"])
    assert stage["result"]["best_val_mean_auc"] == pytest.approx(best["val_mean_auc"])


def test_supervised_loss_falls_along_its_gradient():
    import timm

    from fairscan.train.supervised import masked_bce
    from tests._descent import descends

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3).eval()
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    before, after = descends(model, lambda: masked_bce(model(x), y))
    assert after < before


def test_resumed_run_ends_where_an_uninterrupted_one_does(run_cli, manifest, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from fairscan.train import supervised

    args = ["--model", "mae", "--init", "random", "--manifest", manifest, "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--warmup-epochs", "1", "--save-every", "3", *TINY_ARGS]  # fmt: skip
    code, _, err = run_cli("finetune", *args, "--out", tmp_path / "a")
    assert code == 0, err

    calls = {"n": 0}
    real = supervised.Supervised.loss

    def killed_at_step_20(self, model, batch):  # a kill between checkpoints: steps 19-20 are lost
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(supervised.Supervised, "loss", killed_at_step_20)
    code, _, _ = run_cli("finetune", *args, "--out", tmp_path / "b")
    assert code == 130
    progress = json.loads((tmp_path / "b" / "state" / "progress.json").read_text())
    assert (progress["epoch"], progress["batch"], progress["step"]) == (1, 6, 18)  # mid-epoch
    monkeypatch.setattr(supervised.Supervised, "loss", real)

    code, _, err = run_cli("finetune", "--out", tmp_path / "b", "--resume")
    assert code == 0, err
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    stage = json.loads((tmp_path / "b" / "stage.json").read_text())
    assert stage["result"]["resumed_from_step"] == 18


def test_linear_probe_leaves_the_backbone_bit_identical(run_cli, manifest, tmp_path):
    from safetensors.torch import load_file

    enc = vit_encoder()
    weights = mocov3_checkpoint(tmp_path / "vit-b-300ep.pth.tar", enc)
    out = tmp_path / "lp"
    code, _, err = run_cli(
        "finetune", "--model", "mocov3", "--weights", weights, "--linear-probe", "--manifest", manifest,
        "--out", out, "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "0.5", *TINY_ARGS,
    )  # fmt: skip
    assert code == 0, err
    stage = json.loads((out / "stage.json").read_text())
    assert stage["linear_probe"]["identical"] is True
    assert stage["settings"]["optimizer"] == "lars" and stage["settings"]["weight_decay"] == 0.0
    saved = load_file(out / "model.safetensors")
    for k, v in enc.state_dict().items():
        assert torch.equal(saved[k], v), k
    assert {
        "head.0.running_mean",
        "head.1.weight",
    } <= saved.keys()  # BatchNorm (no affine) before the linear head
    assert "head.0.weight" not in saved


def _manifest_variant(manifest, tmp_path, edit):
    import pandas as pd

    df = pd.read_parquet(manifest / "manifest.parquet")
    df = edit(df)
    (tmp_path / "m").mkdir()
    df.to_parquet(tmp_path / "m" / "manifest.parquet", index=False)
    return tmp_path / "m"


def test_bad_inputs_exit_2_with_clear_messages(run_cli, manifest, tmp_path):
    common = ["--model", "mae", "--init", "random", "--epochs", "1", "--batch-size", "8", *TINY_ARGS]

    no_race = _manifest_variant(manifest, tmp_path, lambda df: df.drop(columns=["race"]))
    code, _, err = run_cli("finetune", *common, "--manifest", no_race, "--out", tmp_path / "r1")
    assert code == 2 and "manifest lacks column(s) race" in err

    (tmp_path / "e").mkdir()
    code, _, err = run_cli("finetune", *common, "--manifest", tmp_path / "e", "--out", tmp_path / "r2")
    assert code == 2 and "no such file" in err

    code, _, err = run_cli(
        "finetune", *common, "--manifest", manifest, "--out", tmp_path / "r3", "--labels", "edema,flu"
    )
    assert code == 2 and "no label column(s) for flu" in err

    resnet_weights = tmp_path / "resnet.pth"
    from fairscan.models import build_model

    torch.save(
        build_model("fairscan_resnetv2_tiny", num_classes=0, pooling="avg", image_size=32).state_dict(),
        resnet_weights,
    )
    code, _, err = run_cli(
        "finetune", "--model", "mae", "--weights", resnet_weights, "--manifest", manifest, "--out", tmp_path / "r4",
        *TINY_ARGS,
    )  # fmt: skip
    assert code == 2 and f"does not fit {VIT}" in err and not (tmp_path / "r4").exists()

    code, _, err = run_cli(
        "finetune", *common, "--manifest", manifest, "--out", tmp_path / "r5", "--arch", "resnetv2_18"
    )
    assert code == 2 and "is a resnet but mae is a vit" in err


def test_empty_validate_split_and_existing_run(run_cli, manifest, tmp_path):
    common = ["--model", "mae", "--init", "random", "--epochs", "1", "--batch-size", "8", *TINY_ARGS]

    def no_validate(df):
        df = df.copy()
        df.loc[df["split"] == "validate", "split"] = "test"
        return df

    code, _, err = run_cli("finetune", *common, "--manifest", _manifest_variant(manifest, tmp_path, no_validate),
                           "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "the validate split is empty" in err

    out = tmp_path / "run"
    assert run_cli("finetune", *common, "--manifest", manifest, "--out", out)[0] == 0
    before = (out / "model.safetensors").read_bytes()
    code, _, err = run_cli("finetune", *common, "--manifest", manifest, "--out", out)
    assert code == 2 and "already holds a run (finished)" in err and "choose another --out" in err
    assert (out / "model.safetensors").read_bytes() == before


def test_tensorboard_gets_the_run_and_a_missing_or_unknown_tracker_is_refused(run_cli, manifest, tmp_path):
    import importlib.util

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["--model", "mae", "--init", "random", "--manifest", manifest, "--epochs", "2", "--batch-size", "8",
              *TINY_ARGS]  # fmt: skip
    out = tmp_path / "tb"
    code, _, err = run_cli("finetune", *common, "--out", out, "--log-with", "tensorboard")
    assert code == 0, err
    scalars = {}
    for events in out.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        scalars |= {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert {"train/loss", "train/lr", "train_loss", "val_mean_auc", "val_loss"} <= set(scalars)
    epochs = [r for r in _lines(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert scalars["val_mean_auc"] == pytest.approx([r["val_mean_auc"] for r in epochs])

    code, _, err = run_cli("finetune", *common, "--out", tmp_path / "foo", "--log-with", "foo")
    assert code == 2 and "--log-with foo: not a tracker Accelerate knows" in err
    assert not (tmp_path / "foo").exists()
    if importlib.util.find_spec("wandb") is None:  # asked for and missing: an error, not a run without logs
        code, _, err = run_cli("finetune", *common, "--out", tmp_path / "wb", "--log-with", "wandb")
        assert code == 2 and "the wandb package is not installed" in err


def test_non_finite_loss_exits_1_and_keeps_the_last_checkpoint(run_cli, manifest, tmp_path, monkeypatch):
    from fairscan.train import supervised

    calls = {"n": 0}
    real = supervised.Supervised.loss

    def nan_at_step_5(self, model, batch):
        calls["n"] += 1
        loss = real(self, model, batch)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(supervised.Supervised, "loss", nan_at_step_5)
    out = tmp_path / "nan"
    code, _, err = run_cli("finetune", "--model", "mae", "--init", "random", "--manifest", manifest, "--out", out,
                           "--epochs", "2", "--batch-size", "8", "--save-every", "2", *TINY_ARGS)  # fmt: skip
    assert code == 1
    assert "non-finite loss (nan) at step 5 (epoch 0, process 0); batch image ids: train/patient" in err
    assert json.loads((out / "state" / "progress.json").read_text())["step"] == 4


@pytest.mark.slow
def test_two_cpu_processes_train_and_predict_every_image_once(run_cli, manifest, tmp_path, monkeypatch):
    """`--cpu --procs 2` relaunches through Accelerate's launcher (gloo); predictions cover each image once."""
    import pandas as pd

    from fairscan.schema import read_manifest, read_predictions

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "ddp"
    code, _, err = run_cli("finetune", "--model", "mae", "--init", "random", "--manifest", manifest, "--out", out,
                           "--epochs", "1", "--batch-size", "8", "--procs", "2", *TINY_ARGS)  # fmt: skip
    assert code == 0, err[-3000:]
    stage = json.loads((out / "stage.json").read_text())
    assert stage["processes"] == 2 and stage["batch"]["per_process"] == 4 and stage["status"] == "complete"

    preds = tmp_path / "preds.parquet"
    code, _, err = run_cli("predict", out, "--manifest", manifest, "-o", preds, "--procs", "2", "--cpu",
                           "--batch-size", "4")  # fmt: skip
    assert code == 0, err[-3000:]
    got = read_predictions(preds)
    test = read_manifest(manifest, split="test")
    assert (
        len(test) % 8 != 0
    )  # so Accelerate pads the last batches and gather_for_metrics must drop the repeats
    assert got.frame["image_id"].tolist() == test["image_id"].tolist()
    assert got.provenance["processes"] == 2

    single = tmp_path / "single.parquet"
    code, _, err = run_cli("predict", out, "--manifest", manifest, "-o", single, "--cpu")
    assert code == 0, err
    one = pd.read_parquet(single)
    probs = [c for c in one.columns if c.startswith("prob_")]
    assert (abs(one[probs].to_numpy() - got.frame[probs].to_numpy()) < 1e-5).all()
