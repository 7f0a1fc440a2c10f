"""`fairscan embed`: a run's head input (the head gives predict's logits), a frozen model's pooled features,
the features table, every image once on two processes, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests._finetune_fixtures import (
    SIZE,
    VIT,
    mae_checkpoint,
    vit_encoder,
)

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("single_thread")


def _head_logits(run, feats: np.ndarray) -> np.ndarray:
    """The run's classifier applied to the features (a Linear, or a 1x1 conv on (N, C, 1, 1))."""
    from fairscan.models import classifier, load_run_model

    model, _ = load_run_model(run)
    head = classifier(model)
    x = torch.from_numpy(feats.astype(np.float32))
    with torch.no_grad():
        out = head(x) if isinstance(head, torch.nn.Linear) else head(x[:, :, None, None]).flatten(1)
    return out.double().numpy()


def test_a_runs_features_are_its_heads_input(run_cli, run, manifest, tmp_path):
    from fairscan.io import sha256_file
    from fairscan.representations.features import read_features
    from fairscan.schema import read_manifest, read_predictions

    feats, preds = tmp_path / "feats.parquet", tmp_path / "preds.parquet"
    code, stdout, err = run_cli(
        "embed", run, "--manifest", manifest, "-o", feats, "--cpu", "--batch-size", "8"
    )
    assert code == 0, err
    assert stdout.strip() == str(feats)
    assert run_cli("predict", run, "--manifest", manifest, "-o", preds, "--cpu")[0] == 0

    got = read_features(feats)
    test = read_manifest(manifest, split="test")
    assert got.frame["image_id"].tolist() == test["image_id"].tolist()  # every image once, in manifest order
    assert got.frame["patient_id"].tolist() == test["patient_id"].tolist()
    for col in ("sex", "race", "age"):
        assert got.frame[col].astype(str).tolist() == test[col].astype(str).tolist()
    labels = [c for c in test.columns if c.startswith("label_")]
    assert got.frame[labels].equals(test[labels].astype(np.float64).reset_index(drop=True))
    assert got.columns == [f"feat_{k}" for k in range(64)]  # fairscan_vit_micro is 64 wide

    p = read_predictions(preds)
    expected = np.column_stack([np.log(p.p(lab)) - np.log1p(-p.p(lab)) for lab in p.labels])
    np.testing.assert_allclose(_head_logits(run, got.matrix()), expected, atol=1e-5, rtol=0)

    prov = got.provenance
    assert prov["schema"] == "fairscan.features/1" and prov["stage"] == "embed"
    assert prov["features_of"] == "head input" and prov["weights_sha256"] == sha256_file(
        run / "model.safetensors"
    )
    assert prov["split"] == "test" and prov["images"] == len(test) and prov["dtype"] == "float32"
    assert prov["manifest"]["sha256"] == sha256_file(manifest / "manifest.parquet")


def _images(manifest, mean, std):
    """The split's evaluation tensors, as embed's loader makes them."""
    from fairscan.data.dataset import ImageDataset, build_transform, load_size, open_cache
    from fairscan.data.device_input import DeviceInput
    from fairscan.schema import read_manifest

    ds = ImageDataset(
        read_manifest(manifest, split="test"), labels=[], manifest_dir=manifest, decode_size=load_size(SIZE),
        cache=open_cache(manifest), transform=build_transform(SIZE, train=False, mean=mean),
    )  # fmt: skip
    return DeviceInput(mean, std)(torch.stack([ds[i]["image"] for i in range(len(ds))]))


def test_a_frozen_model_pools_as_its_recipe(run_cli, manifest, tmp_path):
    """MAE averages the patch tokens (under the encoder's final norm), --pool token takes the class token; both
    recomputed here from the encoder itself."""
    import pandas as pd

    from fairscan.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from fairscan.representations.features import read_features

    torch.manual_seed(0)
    encoder = vit_encoder(pooling="token")
    with torch.no_grad():  # a final norm that is not the identity, so that using it shows
        encoder.norm.weight.uniform_(0.5, 1.5)
        encoder.norm.bias.uniform_(-0.5, 0.5)
    ckpt = mae_checkpoint(tmp_path / "mae.pth", encoder)
    common = ["--model", "mae", "--weights", ckpt, "--arch", VIT, "--image-size", str(SIZE),
              "--manifest", manifest, "--cpu", "--workers", "0"]  # fmt: skip
    avg, token, half = tmp_path / "avg.parquet", tmp_path / "token.csv", tmp_path / "half.parquet"
    assert run_cli("embed", *common, "-o", avg)[0] == 0
    assert run_cli("embed", *common, "--pool", "token", "-o", token)[0] == 0
    assert run_cli("embed", *common, "--float16", "-o", half)[0] == 0

    x = _images(manifest, IMAGENET_MEAN, IMAGENET_STD)
    encoder.eval()
    with torch.no_grad():
        cls = encoder(x).numpy()  # timm: the class token after the final norm
        norm, encoder.norm = encoder.norm, torch.nn.Identity()
        tokens = encoder.forward_features(x)[:, encoder.num_prefix_tokens :].mean(1)
        mean_tokens = torch.nn.functional.layer_norm(tokens, (64,), norm.weight, norm.bias, norm.eps).numpy()

    got_avg = read_features(avg)
    assert got_avg.provenance["pooling"] == "avg" and got_avg.provenance["features_of"] == "frozen encoder"
    assert got_avg.provenance["weights"]["format"] == "mae"
    np.testing.assert_allclose(got_avg.matrix(), mean_tokens, atol=1e-5, rtol=0)
    np.testing.assert_allclose(read_features(token).matrix(), cls, atol=1e-5, rtol=0)
    stored = pd.read_parquet(half)
    assert stored["feat_0"].dtype == np.float16 and read_features(half).provenance["dtype"] == "float16"
    np.testing.assert_allclose(read_features(half).matrix(), mean_tokens, atol=2e-2, rtol=1e-2)


def test_a_finetune_preset_names_a_frozen_model(run_cli, run, manifest, tmp_path):
    """`--preset`: the preset's model, weights or init, architecture and image size, used frozen."""
    from fairscan.representations.features import read_features

    out = tmp_path / "preset.parquet"
    code, _, err = run_cli("embed", "--preset", "mae:quick", "--manifest", manifest, "-o", out, "--cpu")
    assert code == 0, err
    prov = read_features(out).provenance
    assert (prov["model"], prov["init"], prov["arch"], prov["image_size"]) == (
        "mae",
        "random",
        "vit_tiny_patch16_224",
        32,
    )
    assert prov["pooling"] == "avg" and prov["settings"]["manifest"] == str(manifest)  # typed options win
    code, _, err = run_cli("embed", run, "--preset", "mae", "--manifest", manifest, "-o", out)
    assert code == 2 and "a run folder is already a model" in err
    code, _, err = run_cli("embed", "--preset", "demo", "--manifest", manifest, "-o", out)
    assert code == 2 and "preset demo is a study preset" in err


def test_embed_bad_inputs(run_cli, run, manifest, tmp_path):
    out = tmp_path / "f.parquet"
    cases = [
        (("embed", "--manifest", manifest, "-o", out), "name what to embed with: a run folder or --model"),
        (("embed", run, "--model", "mae", "--manifest", manifest, "-o", out), "name a run folder or --model, not both"),
        (("embed", run, "--pool", "avg", "--manifest", manifest, "-o", out), "--pool applies to a frozen --model"),
        (("embed", tmp_path, "--manifest", manifest, "-o", out), "no model.json"),
        (("embed", run, "--init", "random", "--manifest", manifest, "-o", out), "--init applies to a frozen --model"),
        (("embed", run, "--manifest", manifest, "-o", tmp_path / "f.txt"), "unsupported table type"),
        (("embed", run, "--manifest", manifest, "-o", tmp_path), "is a folder"),
        (("embed", run, "--manifest", manifest, "--split", "tset", "-o", out), "--split: Input should be"),
        (("embed", "--model", "nope", "--manifest", manifest, "-o", out), "unknown model 'nope'"),
        (("embed", "--model", "medical-mae", "--manifest", manifest, "-o", out), "needs pre-trained weights"),
        (("embed", "--model", "mae", "--arch", "fairscan_resnetv2_tiny", "--weights", tmp_path / "x.pth",
          "--manifest", manifest, "-o", out), "is a resnet but mae is a vit"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = run_cli(*args)
        assert code == 2 and message in err, (args, err)
    wrong = mae_checkpoint(tmp_path / "wide.pth", vit_encoder())  # a 64-wide encoder given to a 192-wide arch
    code, _, err = run_cli("embed", "--model", "mae", "--weights", wrong, "--arch", "vit_tiny_patch16_224",
                           "--image-size", "32", "--manifest", manifest, "-o", out, "--cpu")  # fmt: skip
    assert code == 2 and "shape mismatch" in err, err
    assert not out.exists()


@pytest.mark.slow
def test_two_cpu_processes_embed_every_image_once(run_cli, run, manifest, tmp_path, monkeypatch):
    """`--cpu --procs 2` under Accelerate's launcher: the rows the padding of the last batch repeats are dropped."""
    from fairscan.representations.features import read_features
    from fairscan.schema import read_manifest

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two, one = tmp_path / "two.parquet", tmp_path / "one.parquet"
    code, _, err = run_cli("embed", run, "--manifest", manifest, "-o", two, "--cpu", "--procs", "2",
                           "--batch-size", "4", "--workers", "0")  # fmt: skip
    assert code == 0, err[-3000:]
    assert run_cli("embed", run, "--manifest", manifest, "-o", one, "--cpu")[0] == 0
    test = read_manifest(manifest, split="test")
    assert len(test) % 8 != 0  # so the last batches are padded
    got, ref = read_features(two), read_features(one)
    assert got.frame["image_id"].tolist() == test["image_id"].tolist()
    assert got.provenance["processes"] == 2
    np.testing.assert_allclose(got.matrix(), ref.matrix(), atol=1e-5, rtol=0)
