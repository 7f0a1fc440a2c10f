"""Running a command on several processes through Accelerate's own launcher (fairscan has no process-group code).

``--gpus N`` / ``--procs N`` re-run the same fairscan command under ``accelerate launch --multi_gpu
--num_processes N -m fairscan <command> --launched-config FILE``: the parent has already validated the inputs
and resolved every setting into ``FILE``; each child reads it and runs in-process, with the process group that
the launcher set up (gloo on CPU, NCCL on GPUs). Several machines: run ``accelerate launch`` yourself on each
machine with its own options (``--num_machines``, ``--machine_rank``, ``--main_process_ip``, or a config file
from ``accelerate config``) and the plain fairscan command after ``-m fairscan``; a command started under a
launcher (``WORLD_SIZE`` set) always runs in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from fairscan.errors import RunError


def under_launcher() -> bool:
    """True inside a process started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relaunch(command: str, config: dict, *, processes: int, debug: bool = False) -> None:
    """Run ``fairscan <command> --launched-config`` on ``processes`` processes; raise RunError if any fails."""
    with tempfile.TemporaryDirectory(prefix="fairscan-launch-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config, default=str))
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
            "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "fairscan", *(["--debug"] if debug else []), command, "--launched-config", str(path),
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
        sys.stdout.flush()
        sys.stderr.flush()
        if _has_fileno(sys.stdout) and _has_fileno(sys.stderr):
            rc = subprocess.run(cmd, env=env).returncode
        else:  # in-process test runners swap the streams for buffers: pass the children's output through
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            rc = done.returncode
    if rc != 0:
        raise RunError(
            f"`fairscan {command}` on {processes} processes failed (launcher exit code {rc})",
            hint="the failing process printed its error above",
        )


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
