"""Run folders (``fairscan.runs`` and the stage lifecycle): one run at a time, clean restarts, runs that resume
wherever they are, 0.1 folders, and checkpoints that cannot be resumed exactly. Real processes, real runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._finetune_fixtures import TINY_ARGS

torch = pytest.importorskip("torch")

RUN = ["--model", "mae", "--init", "random", "--batch-size", "8", "--lr", "1e-3", "--warmup-epochs", "0.5",
       *TINY_ARGS]  # fmt: skip


pytestmark = pytest.mark.usefixtures("single_thread")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _record(out: Path) -> dict:
    return json.loads((out / "stage.json").read_text())


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 180) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"the process ended ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
            )
        if time.time() - t0 > seconds:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.1)


def _interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C during training step ``step`` (the run stops with exit 130, as a user's interrupt does)."""
    from fairscan.train import supervised

    real, calls = supervised.Supervised.loss, {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(supervised.Supervised, "loss", loss)


# ------------------------------------------------------------------------------------------------ the lock


def test_a_second_run_into_a_folder_in_use_exits_2_naming_the_first(run_cli, manifest, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "fairscan", "finetune", *map(str, RUN), "--epochs", "500", "--save-every", "0",
         "--manifest", str(manifest), "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(out / "stage.json", first)
        code, _, err = run_cli(
            "finetune", *RUN, "--epochs", "1", "--seed", "1", "--manifest", manifest, "--out", out
        )
        err = _one_line(err)
        assert code == 2, err
        assert f"is in use by another run (process {first.pid} on {socket.gethostname()} since" in err
        assert "fairscan finetune" in err and "--break-lock" in err
        assert (
            _record(out)["seed"] == 0 and first.poll() is None
        )  # the first run is untouched and still running
    finally:
        first.kill()
        first.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_foreign_one_needs_break_lock(
    run_cli, manifest, tmp_path
):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fairscan.runs import RunFolder\n"
         "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == b"held"
    holder.send_signal(signal.SIGKILL)  # dies holding the lock: no clean-up runs
    holder.wait()
    assert (out / "run.lock").exists()
    code, _, err = run_cli("finetune", *RUN, "--epochs", "1", "--manifest", manifest, "--out", out)
    assert code == 0, err
    assert f"taking over {out}" in _one_line(err) and "its process has ended" in err
    assert not (out / "run.lock").exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "run.lock").write_text(json.dumps({"host": "another-machine", "pid": 1, "started": "then"}))
    code, _, err = run_cli("finetune", *RUN, "--epochs", "1", "--manifest", manifest, "--out", other)
    assert code == 2 and "process 1 on another-machine" in _one_line(err) and "--break-lock" in err
    code, _, err = run_cli(
        "finetune", *RUN, "--epochs", "1", "--manifest", manifest, "--out", other, "--break-lock"
    )
    assert code == 0 and "(--break-lock)" in _one_line(err)
    assert _record(other)["status"] == "complete"


# ------------------------------------------------------------------------------------------- clean restarts


def test_a_run_killed_before_its_first_checkpoint_starts_again(run_cli, manifest, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = [*RUN, "--epochs", "1", "--manifest", manifest, "--out", out]
    _interrupt_at(monkeypatch, 3)
    assert run_cli("finetune", *args)[0] == 130
    assert _record(out)["status"] == "running" and not (out / "state").exists()
    # what a kill leaves behind: a half-written model and an unfinished checkpoint
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"half a model")
    (out / "state.next").mkdir()
    monkeypatch.undo()
    code, _, err = run_cli("finetune", *args)
    assert code == 0, err
    assert "stopped before its first checkpoint; starting it again" in _one_line(err)
    assert _record(out)["status"] == "complete"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "model.json", "model.safetensors",
                                                     "stage.json", "state"]  # fmt: skip

    again = (
        tmp_path / "again"
    )  # the same with --resume: it starts from the beginning, with the recorded settings
    _interrupt_at(monkeypatch, 3)
    assert run_cli("finetune", *args[:-1], again)[0] == 130
    monkeypatch.undo()
    code, _, err = run_cli("finetune", "--out", again, "--resume")
    assert code == 0, err
    assert "no checkpoint yet; starting the run from the beginning" in _one_line(err)
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------------- runs that move, and 0.1


@pytest.fixture
def interrupted(tmp_path, manifest, monkeypatch, run_cli):
    """A run started in a working directory with relative paths, interrupted after its first checkpoint."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copytree(manifest, work / "data" / "cx", symlinks=True)
    monkeypatch.chdir(work)
    _interrupt_at(monkeypatch, 9)  # epoch 2 of 2 (6 steps each): the epoch-end checkpoint is at step 6
    code, _, _ = run_cli("finetune", *RUN, "--epochs", "2", "--save-every", "0", "--manifest", "data/cx",
                         "--out", "runs/a")  # fmt: skip
    assert code == 130
    monkeypatch.undo()
    return work / "runs" / "a", work / "data" / "cx"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_copied_run_resumes_from_anywhere_and_never_writes_to_the_original(interrupted, tmp_path, run_cli,
                                                                                 monkeypatch):  # fmt: skip
    run, _ = interrupted
    before = _snapshot(run)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run, copy)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(
        tmp_path / "cwd"
    )  # another working directory: the run's relative paths mean nothing here
    code, stdout, err = run_cli("finetune", "--out", copy, "--resume")
    assert code == 0, err
    assert stdout.strip() == str(copy / "model.safetensors")
    record = _record(copy)
    assert record["status"] == "complete" and record["result"]["resumed_from_step"] == 6
    assert record["outputs"]["model"]["path"] == "model.safetensors" and "out" not in record["settings"]
    assert _snapshot(run) == before  # the original is as the kill left it


def test_a_moved_run_with_a_moved_manifest_resumes_when_given_the_same_file(interrupted, tmp_path, run_cli,
                                                                              monkeypatch):  # fmt: skip
    run, data = interrupted
    moved, moved_data = tmp_path / "moved" / "run", tmp_path / "moved" / "cx"
    moved.parent.mkdir()
    shutil.move(run, moved)
    shutil.move(data, moved_data)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, _, err = run_cli("finetune", "--out", moved, "--resume")
    err = _one_line(err)
    assert code == 2 and "the run's manifest is not where it was" in err and "give --manifest PATH" in err
    other = synthetic_manifest_copy(moved_data, tmp_path / "other", seed=3)
    code, _, err = run_cli("finetune", "--out", moved, "--resume", "--manifest", other)
    assert code == 2 and "is not the input this run was trained on" in _one_line(err)
    code, _, err = run_cli("finetune", "--out", moved, "--resume", "--manifest", moved_data)
    assert code == 0, err
    record = _record(moved)
    assert record["inputs"]["manifest"]["path"] == str(moved_data / "manifest.parquet")
    assert record["settings"]["manifest"] == str(moved_data)


def synthetic_manifest_copy(source: Path, dest: Path, seed: int) -> Path:
    """The same layout with other rows: a different file at a plausible path."""
    import pandas as pd

    dest.mkdir()
    df = pd.read_parquet(source / "manifest.parquet").sample(frac=1.0, random_state=seed)
    df.to_parquet(dest / "manifest.parquet", index=False)
    shutil.copy(source / "prepare.json", dest / "prepare.json")
    return dest


def _as_written_by_0_1(run: Path, manifest_as_given: str, out_as_given: str) -> None:
    """Rewrite a run's stage.json as fairscan 0.1 wrote it: no schema, settings with ``out`` and ``trackers``,
    input and output paths as given on its command line (relative to the folder it ran in)."""
    record = _record(run)
    settings = {**record["settings"], "out": out_as_given, "manifest": manifest_as_given}
    settings["trackers"] = settings.pop("log_with")
    record = {k: v for k, v in record.items() if k not in ("schema",)}
    record["settings"] = settings
    record["inputs"] = {
        "manifest": {**record["inputs"]["manifest"], "path": f"{manifest_as_given}/manifest.parquet"}
    }
    (run / "stage.json").write_text(json.dumps(record, indent=2))


def test_a_0_1_run_resumes_where_its_paths_still_hold_and_says_what_to_do_elsewhere(interrupted, tmp_path,
                                                                                     run_cli, monkeypatch):  # fmt: skip
    run, data = interrupted
    _as_written_by_0_1(run, "data/cx", "runs/a")
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, _, err = run_cli("finetune", "--out", copy, "--resume")
    err = _one_line(err)
    assert (
        code == 2
        and "fairscan 0.1 recorded it as data/cx/manifest.parquet relative to the folder it ran in" in err
    )
    assert "give --manifest PATH" in err
    code, _, err = run_cli("finetune", "--out", copy, "--resume", "--manifest", data)
    assert code == 0, err
    assert _record(copy)["schema"] == "fairscan.run/2" and _record(copy)["settings"]["log_with"] == []
    monkeypatch.chdir(data.parent.parent)  # where it ran: its relative paths hold, nothing to add
    code, _, err = run_cli("finetune", "--out", "runs/a", "--resume")
    assert code == 0, err
    assert (run / "model.safetensors").read_bytes() == (copy / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------- damaged checkpoints


def test_a_damaged_checkpoint_is_named_and_a_lost_random_state_needs_consent(interrupted, tmp_path, run_cli):
    run, _ = interrupted
    good = tmp_path / "good"
    shutil.copytree(run, good)
    optimizer = run / "state" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # cut by a full disk, say
    code, _, err = run_cli("finetune", "--out", run, "--resume")
    err = _one_line(err)
    assert code == 2 and f"{optimizer}: the checkpoint is damaged" in err and "restore" in err

    rng = good / "state" / "random_states_0.pkl"
    rng.write_bytes(b"not a pickle")
    code, _, err = run_cli("finetune", "--out", good, "--resume")
    err = _one_line(err)
    assert code == 2 and f"{rng}: the random-number state cannot be read" in err
    assert "would not end where an uninterrupted run does" in err and "--allow-inexact-resume" in err
    code, _, err = run_cli("finetune", "--out", good, "--resume", "--allow-inexact-resume")
    assert code == 0, err
    assert "resuming inexactly" in _one_line(err)
    resume = _record(good)["resume"]
    assert resume["exact"] is False and resume["why"][0].startswith("random_states_0.pkl: ")


# --------------------------------------------------------------------------------- an outside launcher


@pytest.mark.slow
def test_under_accelerate_launch_only_the_first_process_locks(manifest, tmp_path):
    """The documented multi-machine route: `accelerate launch ... -m fairscan finetune` with the plain command."""
    out = tmp_path / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--machine_rank", "0", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fairscan", "finetune", *map(str, RUN),
           "--epochs", "1", "--manifest", str(manifest), "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = _record(out)
    assert record["processes"] == 2 and record["status"] == "complete" and not (out / "run.lock").exists()
    assert done.stdout.strip() == str(out / "model.safetensors")  # printed once, by the first process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
