"""Running a library function on several processes through Accelerate's own launcher (no process-group code here).

``launch(fn, kwargs, processes=N)`` is fairscan's ``notebook_launcher``: it writes ``fn``'s name and its keyword
arguments (plain JSON) to a job file and starts ``accelerate launch --multi_gpu --num_processes N -m
fairscan.train.launch JOB``; each process imports ``fn`` and calls it with the process group the launcher set up
(gloo on CPU, NCCL on GPUs). The caller has already checked the inputs and resolved every setting. A process
that fails on a fairscan error writes it to the job folder, and ``launch`` raises the same error here, so a bad
input found by a worker still exits 2 with its own message.

Several machines: run ``accelerate launch`` yourself on each machine with its own options (``--num_machines``,
``--machine_rank``, ``--main_process_ip``, or a config file from ``accelerate config``) and the plain fairscan
command after ``-m fairscan``; a command started under a launcher (``WORLD_SIZE`` set) runs in-process.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairscan import errors
from fairscan.errors import FairscanError, RunError

JOB, ERROR = "job.json", "error-{rank}.json"


def under_launcher() -> bool:
    """True inside a process started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn: Callable[..., Any], kwargs: dict[str, Any], *, processes: int, debug: bool = False) -> None:
    """Call ``fn(**kwargs)`` in ``processes`` processes under Accelerate's launcher; re-raise a worker's error."""
    target = f"{fn.__module__}:{fn.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="fairscan-launch-") as tmp:
        job = Path(tmp) / JOB
        job.write_text(json.dumps({"target": target, "kwargs": kwargs, "debug": debug}, default=str))
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
            "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "fairscan.train.launch", str(job),
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
        rc = _run(cmd, env)
        if rc != 0:
            worker_error = _worker_error(Path(tmp), processes)
            if worker_error is not None:
                raise worker_error
            raise RunError(
                f"{target.split(':')[-1]} on {processes} processes failed (launcher exit code {rc})",
                hint="the failing process printed its error above",
            )


def _run(cmd: list[str], env: dict[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    if _has_fileno(sys.stdout) and _has_fileno(sys.stderr):
        return subprocess.run(cmd, env=env).returncode
    # in-process test runners swap the streams for buffers: pass the children's output through
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def _worker_error(folder: Path, processes: int) -> FairscanError | None:
    for rank in range(processes):
        path = folder / ERROR.format(rank=rank)
        if path.exists():
            d = json.loads(path.read_text())
            cls = getattr(errors, d["type"], FairscanError)
            return cls(d["message"], hint=d["hint"])
    return None


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def main(job_file: str) -> int:
    """A launched process: call the job's function; a fairscan error goes back to the launching process."""
    job = json.loads(Path(job_file).read_text())
    module, _, name = job["target"].partition(":")
    fn = getattr(importlib.import_module(module), name)
    try:
        fn(**job["kwargs"])
    except FairscanError as exc:
        rank = int(os.environ.get("RANK", "0"))
        record = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        (Path(job_file).parent / ERROR.format(rank=rank)).write_text(json.dumps(record))
        if job.get("debug"):
            raise
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
