"""Every output path is checked before any work: an unwritable one (a read-only folder, an existing file, a file
as a parent, a folder where a file goes) exits 2 naming the path and what to do, in every command that writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fairscan.schema import write_predictions
from tests._finetune_fixtures import TINY_ARGS, finetuned_run, synthetic_manifest
from tests._preds import make_preds

FOLDER_OUTPUTS = ("audit", "prepare", "finetune", "pretrain", "demo")
FILE_OUTPUTS = ("predict", "embed", "ensemble")


@pytest.fixture
def inputs(tmp_path_factory, run_cli):
    preds = tmp_path_factory.mktemp("preds")
    for name, seed in (("a", 0), ("b", 1)):
        write_predictions(make_preds(200, ("edema",), seed=seed), preds / f"{name}.parquet")
    return {
        "manifest": synthetic_manifest(tmp_path_factory),
        "run": finetuned_run(tmp_path_factory, run_cli),
        "a": preds / "a.parquet",
        "b": preds / "b.parquet",
    }


def _command(name: str, out: Path, inputs: dict) -> list:
    """``fairscan NAME ...`` writing to ``out``."""
    return {
        "audit": ["audit", inputs["a"], "--attrs", "sex", "--intervals", "none", "--permutations", "0", "--out", out],
        "prepare": ["prepare", "synthetic", "--patients", "10", "--out", out],
        "finetune": ["finetune", "--model", "mae", "--init", "random", "--epochs", "1", "--batch-size", "8",
                     "--manifest", inputs["manifest"], "--out", out, *TINY_ARGS],
        "pretrain": ["pretrain", "--method", "mae", "--manifest", inputs["manifest"], "--out", out, "--epochs", "1",
                     "--batch-size", "8", "--arch", "vit_tiny_patch16_224", "--image-size", "32", "--cpu"],
        "demo": ["demo", "--quick", "--out", out],
        "predict": ["predict", inputs["run"], "--manifest", inputs["manifest"], "-o", out, "--cpu"],
        "embed": ["embed", inputs["run"], "--manifest", inputs["manifest"], "-o", out, "--cpu"],
        "ensemble": ["ensemble", inputs["a"], inputs["b"], "-o", out],
    }[name]  # fmt: skip


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write in: permissions, and for root (whom permissions do not stop) the immutable flag."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user can write in any folder here (root without chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _refused(run_cli, command, *needles):
    code, _, err = run_cli(*command)
    text = " ".join(err.split())
    assert code == 2, err
    assert "Error:" in text and "hint:" in text and "unexpected" not in text, text
    for needle in needles:
        assert str(needle) in text, (needle, text)


@pytest.mark.parametrize("name", [*FOLDER_OUTPUTS, *FILE_OUTPUTS])
def test_a_read_only_folder(name, run_cli, inputs, read_only):
    out = read_only / ("out.parquet" if name in FILE_OUTPUTS else "out")
    _refused(run_cli, _command(name, out, inputs), out, f"the folder {read_only} is not writable")
    assert not out.exists()


@pytest.mark.parametrize("name", FOLDER_OUTPUTS)
def test_an_existing_file_where_a_folder_goes(name, run_cli, inputs, tmp_path):
    out = tmp_path / "taken"
    out.write_text("someone's notes")
    _refused(run_cli, _command(name, out, inputs), f"{out} is a file, not a folder")
    assert out.read_text() == "someone's notes"


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_an_existing_read_only_file(name, run_cli, inputs, tmp_path):
    out = tmp_path / "kept.parquet"
    shutil.copy(inputs["a"], out)
    out.chmod(0o444)
    if os.access(out, os.W_OK):  # root: make it immutable as well
        subprocess.run(["chattr", "+i", str(out)], capture_output=True)
    if os.access(out, os.W_OK):
        pytest.skip("cannot make a file read-only for this user")
    try:
        _refused(run_cli, _command(name, out, inputs), f"{out} exists and is read-only")
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)


@pytest.mark.parametrize("name", [*FOLDER_OUTPUTS, *FILE_OUTPUTS])
def test_a_file_as_a_parent(name, run_cli, inputs, tmp_path):
    parent = tmp_path / "a-file"
    parent.write_text("x")
    out = parent / "sub" / ("out.parquet" if name in FILE_OUTPUTS else "out")
    _refused(run_cli, _command(name, out, inputs), f"{parent} is a file, so nothing can be written under it")


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_a_folder_where_a_file_goes(name, run_cli, inputs, tmp_path):
    out = tmp_path / "a-folder.parquet"
    out.mkdir()
    _refused(run_cli, _command(name, out, inputs), f"{out} is a folder")
    assert out.is_dir() and not any(out.iterdir())
