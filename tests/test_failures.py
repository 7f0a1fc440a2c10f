"""Bad input a user meets, each exiting 2 with a message naming the file and what to do: a corrupt image (in
finetune and predict, in this process, a data-loading worker or a launched process), damaged weights, hub weights
that cannot be had offline, a ViT size that is not a whole number of patches, REMEDIS inputs, a planted effect
on a group nobody belongs to."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests._finetune_fixtures import TINY_ARGS, finetuned_run, synthetic_manifest

torch = pytest.importorskip("torch")
RUN = ["--model", "mae", "--init", "random", "--epochs", "1", "--batch-size", "8", *TINY_ARGS]


pytestmark = pytest.mark.usefixtures("single_thread")


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A synthetic CheXpert whose first train image and first test image are not JPEGs any more."""
    from fairscan.data.images import resolve_image_path
    from fairscan.data.synthetic import prepare_synthetic_manifest

    root = tmp_path_factory.mktemp("damaged")
    prepare_synthetic_manifest(root, patients=20, image_size=32, seed=0)
    df = pd.read_parquet(root / "manifest.parquet")
    bad = {}
    for split in ("train", "test"):
        path = resolve_image_path(root, df.loc[df["split"] == split, "path"].iloc[0])
        path.write_bytes(path.read_bytes()[:40])  # a download cut short
        bad[split] = path
    return root, bad


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_in_finetune_names_the_file(damaged, run_cli, tmp_path, workers):
    root, bad = damaged
    code, _, err = run_cli(
        "finetune",
        *RUN,
        "--workers",
        workers,
        "--batch-size",
        "4",
        "--manifest",
        root,
        "--out",
        tmp_path / "run",
    )  # every training image is read: 20 in batches of 4
    err = _one_line(err)
    assert code == 2, err
    assert f"cannot be decoded: {bad['train']}" in err and "--check-images" in err and "Traceback" not in err


def test_a_corrupt_image_in_predict_names_the_file_and_writes_nothing(
    damaged, tmp_path_factory, run_cli, tmp_path
):
    root, bad = damaged
    run = finetuned_run(tmp_path_factory, run_cli)
    out = tmp_path / "preds.parquet"
    code, _, err = run_cli("predict", run, "--manifest", root, "-o", out, "--cpu", "--workers", "0")
    assert code == 2 and f"cannot be decoded: {bad['test']}" in _one_line(err)
    assert not out.exists()


@pytest.mark.slow
def test_a_corrupt_image_found_by_a_launched_process_comes_back_as_its_error(damaged, tmp_path_factory, run_cli,
                                                                               tmp_path, monkeypatch):  # fmt: skip
    root, bad = damaged
    run = finetuned_run(tmp_path_factory, run_cli)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, _, err = run_cli("predict", run, "--manifest", root, "-o", tmp_path / "p.parquet", "--cpu", "--procs", "2",
                           "--workers", "0")  # fmt: skip
    assert code == 2 and f"cannot be decoded: {bad['test']}" in _one_line(err)


def test_predict_with_damaged_weights_names_the_file(tmp_path_factory, run_cli, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finetuned_run(tmp_path_factory, run_cli), run)
    (run / "model.safetensors").write_bytes(b"\x00" * 64)
    manifest = synthetic_manifest(tmp_path_factory)
    code, _, err = run_cli("predict", run, "--manifest", manifest, "-o", tmp_path / "p.parquet", "--cpu")
    err = _one_line(err)
    assert code == 2 and f"{run / 'model.safetensors'}: not a readable safetensors file" in err
    assert "re-run `fairscan finetune`" in err


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "the hub is offline"),
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot be reached"),
    ],
)
def test_hub_weights_without_a_cache_or_a_network_fail_at_once_naming_weights_file(tmp_path_factory, tmp_path,
                                                                                    env, why):  # fmt: skip
    """`--init pretrained` (the default) with nothing cached: no retries against a hub that cannot answer."""
    manifest = synthetic_manifest(tmp_path_factory)
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    done = subprocess.run(
        [sys.executable, "-m", "fairscan", "finetune", "--model", "mae", "--manifest", str(manifest),
         "--out", str(tmp_path / "run"), *TINY_ARGS],
        env={**clean, "HF_HOME": str(tmp_path / "empty-cache"), **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    err = _one_line(done.stderr)
    assert done.returncode == 2, err
    assert (
        "vit_base_patch16_224.mae are not in the local cache" in err
        and why in err
        and "--weights FILE" in err
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--model", "mae", "--init", "random", "--arch", "fairscan_vit_micro"],
        ["pretrain", "--method", "mae", "--arch", "vit_tiny_patch16_224", "--batch-size", "8"],
    ],
)
def test_an_image_size_that_is_not_whole_patches_is_refused(command, run_cli, tmp_path_factory, tmp_path):
    manifest = synthetic_manifest(tmp_path_factory)
    code, _, err = run_cli(*command, "--image-size", "33", "--epochs", "1", "--cpu", "--workers", "0",
                           "--manifest", manifest, "--out", tmp_path / "run")  # fmt: skip
    err = _one_line(err)
    assert code == 2 and "--image-size 33 is not a multiple of" in err and "16-pixel patches" in err
    assert "use 32 or 48" in err and not (tmp_path / "run").exists()


def test_convert_remedis_refuses_a_missing_or_broken_input(run_cli, tmp_path):
    code, _, err = run_cli("models", "convert-remedis", tmp_path / "absent.npz", tmp_path / "out.safetensors")
    assert code == 2 and f"{tmp_path / 'absent.npz'}: no such file or folder" in _one_line(err)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    code, _, err = run_cli("models", "convert-remedis", tmp_path / "broken.npz", tmp_path / "out.safetensors")
    assert code == 2 and "broken.npz: not a readable .npz of arrays" in _one_line(err)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_planted_effect_on_a_group_nobody_belongs_to_is_refused(run_cli, tmp_path):
    code, _, err = run_cli(
        "prepare", "synthetic", "--effect-group", "race:Martian", "--out", tmp_path / "syn"
    )
    err = _one_line(err)
    assert code == 2 and "no synthetic patient has race 'Martian'" in err and "White, Asian, Black" in err
    assert not (tmp_path / "syn").exists()


def test_a_worker_error_keeps_its_message():
    """An error raised in a data-loading worker reaches the user as its own message and hint."""
    from torch.utils.data import DataLoader

    from fairscan.errors import InputError

    class Broken:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise InputError(f"image {i} cannot be decoded: /data/{i}.jpg", hint="replace the file")

    with pytest.raises(InputError) as info:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert (info.value.message, info.value.hint) == (
        "image 0 cannot be decoded: /data/0.jpg",
        "replace the file",
    )
