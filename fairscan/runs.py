"""The run folder of ``finetune`` and ``pretrain``: its files, its lock, its stage record and its state.

A run folder holds ``stage.json`` (the stage record), ``model.safetensors`` and ``model.json`` (the output),
``metrics.jsonl``, ``state/`` (the last checkpoint, for ``--resume``), ``snapshots/`` (pre-training) and, while a
run works in it, ``run.lock``. What it guarantees:

- **One run at a time.** The main process (global rank 0, so a multi-machine ``accelerate launch`` works) holds
  ``run.lock`` for the run's life; it records host, process id and start time. A second run into the folder
  exits 2 at once naming the holder. A lock is stale only when it was taken on this host by a process that has
  died; then it is taken over. Anything else (another host, a live process) is refused until ``--break-lock``.
- **The stage record** (:class:`StageRecord`) is created when a run starts (``status: running``), carried over
  when it resumes, and completed at the end. Settings are recorded without the run's own folder, and every path
  inside the run is relative to it; inputs are recorded with their absolute path and fingerprint. So a run folder
  can be copied or moved and resumed from anywhere (``--out NEW --resume``: it writes only to ``NEW``), and a
  moved input is accepted again when its fingerprint matches. Records written by fairscan 0.1 are read too.
- **State for the study runner**: :func:`state` answers ``todo``, ``resume`` or ``done`` for the settings a plan
  wants, and refuses a folder that holds a run with other settings.
- **Clean restarts.** Temporary files of a killed run (half-written weights, an unfinished checkpoint) are
  removed by the next run; a run killed before its first checkpoint simply starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.io import fingerprint, write_json

RECORD = "stage.json"
LOCK = "run.lock"
METRICS = "metrics.jsonl"
STATE, STATE_NEXT, STATE_PREV = "state", "state.next", "state.prev"
PROGRESS = "progress.json"
MODEL_WEIGHTS, MODEL_JSON = "model.safetensors", "model.json"
SNAPSHOTS = "snapshots"
RECORD_SCHEMA = "fairscan.run/2"
TMP_GLOB = ".*.tmp"  # fairscan.io.atomic_path's temporary files

RUN_EXISTS = "{out} already holds a run ({what})"
IN_USE = "{out} is in use by another run ({holder})"
HINT_BREAK = (
    "wait for that run to end or choose another --out; if it is not running any more, --break-lock takes the "
    "folder over"
)
RUN_CONFLICT = "{out} holds a {stage} run with other settings ({diffs})"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now() -> str:
    return time.strftime(TIME_FORMAT)


def is_main_process() -> bool:
    """Global rank 0 (every process is, outside a launcher)."""
    return int(os.environ.get("RANK", "0")) == 0


class RunFolder:
    """The files of one run folder (it need not exist yet)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def read(self) -> dict[str, Any] | None:
        """The stage record (upgraded from 0.1's layout), or None when the folder holds none."""
        path = self.path / RECORD
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: not a readable stage record ({exc})",
                hint="the run folder is damaged; choose another --out, or delete the folder to start again",
            ) from None
        return _upgrade_record(record)

    def checkpoint(self) -> Path | None:
        """``state/`` when it holds a complete checkpoint (its ``progress.json`` is written last)."""
        state = self.path / STATE
        return state if (state / PROGRESS).is_file() else None

    # -- the lock --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, break_lock: bool = False, say=None) -> Iterator[None]:
        """Hold ``run.lock`` for the block (on the main process; other ranks just run the block).

        The folder is created if need be, and removed again at the end if the run left nothing in it (a run
        refused on bad input leaves no empty folder behind).
        """
        if not is_main_process():
            yield
            return
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        token = _take_lock(self.path / LOCK, break_lock=break_lock, say=say)
        try:
            yield
        finally:
            if _read_lock(self.path / LOCK).get("token") == token:
                (self.path / LOCK).unlink(missing_ok=True)
            if created and not any(self.path.iterdir()):
                self.path.rmdir()

    # -- what a killed run leaves behind ----------------------------------------------------------------------

    def tidy(self) -> None:
        """Remove a killed run's temporary files and finish a checkpoint swap it was killed in."""
        for tmp in self.path.rglob(TMP_GLOB):
            tmp.unlink(missing_ok=True)
        state, nxt, prev = self.path / STATE, self.path / STATE_NEXT, self.path / STATE_PREV
        if not (state / PROGRESS).is_file():
            # killed between the renames: the newest complete checkpoint is state.next, else state.prev
            for candidate in (nxt, prev):
                if (candidate / PROGRESS).is_file():
                    if state.exists():
                        shutil.rmtree(state)
                    os.replace(candidate, state)
                    break
        for leftover in (nxt, prev):
            if leftover.exists():
                shutil.rmtree(leftover)

    def clear(self) -> None:
        """Remove what a run wrote before its first checkpoint, so that it can start again."""
        for name in (RECORD, METRICS, MODEL_WEIGHTS, MODEL_JSON, STATE):
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if (self.path / SNAPSHOTS).is_dir():
            shutil.rmtree(self.path / SNAPSHOTS)


# ---------------------------------------------------------------------------------------------------- lock


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux), so that a reused process id is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _command() -> str:
    """This process's command line, as the user typed it (``python -m fairscan ...`` or ``fairscan ...``)."""
    program = Path(sys.argv[0])
    name = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:]])[:300]


def _lock_info(token: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": now(), "proc_start": _proc_start(pid),
            "command": _command(), "token": token}  # fmt: skip


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _stale(holder: dict[str, Any]) -> bool:
    """Taken on this host by a process that no longer runs (or whose id now names another process)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    start = _proc_start(holder["pid"])
    return start is not None and holder.get("proc_start") not in (None, start)


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "its lock file is being written or is unreadable"
    return (
        f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}: "
        f"{holder.get('command', '?')}"
    )


def _take_lock(path: Path, *, break_lock: bool, say) -> str:
    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    data = json.dumps(_lock_info(token), indent=2) + "\n"
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if attempt == 0 and (break_lock or _stale(holder)):
                if say is not None:
                    why = "--break-lock" if break_lock else "its process has ended"
                    say(f"[yellow]taking over[/] {path.parent} from {_describe(holder)} ({why})")
                path.unlink(missing_ok=True)
                continue
            raise InputError(
                IN_USE.format(out=path.parent, holder=_describe(holder)), hint=HINT_BREAK
            ) from None
        except OSError as exc:
            raise InputError(
                f"{path.parent}: cannot write in the run folder ({exc.strerror})",
                hint="choose an --out you can write to",
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(data)
        return token
    raise AssertionError("unreachable")


# -------------------------------------------------------------------------------------------- stage record


class StageRecord:
    """``stage.json``: what made a run folder. Written on the main process only."""

    def __init__(self, folder: RunFolder, data: dict[str, Any], *, main: bool = True, started: float = 0.0):
        self.folder, self.data, self.main = folder, data, main
        self._started = started or time.time()

    @classmethod
    def start(
        cls,
        folder: RunFolder,
        *,
        stage: str,
        cfg,
        accelerator,
        saved: dict[str, Any] | None = None,
        **facts: Any,
    ) -> StageRecord:
        """The record of a run starting (or resuming: ``saved`` keeps its creation time and seconds)."""
        data = {
            "schema": RECORD_SCHEMA,
            "stage": stage,
            "fairscan_version": __version__,
            "status": "running",
            "created": (saved or {}).get("created") or now(),
            "settings": recorded_settings(cfg),
            "seed": cfg.seed,
            "inputs": input_fingerprints(cfg),
            "processes": accelerator.num_processes,
            "device": accelerator.device.type,
            "mixed_precision": accelerator.mixed_precision,
            **facts,
        }
        data["seconds_before"] = float((saved or {}).get("seconds", 0.0))
        record = cls(folder, data, main=accelerator.is_main_process)
        record.write()
        return record

    def write(self) -> None:
        if self.main:
            write_json(self.folder / RECORD, self.data)

    def complete(self, *, result: dict[str, Any], outputs: dict[str, Path]) -> dict[str, Any]:
        """Mark the run complete: its result, and each output's fingerprint (paths relative to the folder)."""
        before = self.data.pop("seconds_before", 0.0)
        self.data.update(
            status="complete",
            finished=now(),
            seconds=round(time.time() - self._started, 1) + before,
            result=result,
        )
        if self.main:
            self.data["outputs"] = {
                name: {**fingerprint(path), "path": str(Path(path).relative_to(self.folder.path))}
                for name, path in outputs.items()
                if Path(path).exists()
            }
            self.write()
        return self.data


def _upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A 0.1 record in today's layout: settings without ``out``, inputs keyed by setting, outputs relative."""
    if record.get("schema") == RECORD_SCHEMA:
        return record
    record = dict(record)
    settings = dict(record.get("settings") or {})
    old_out = settings.pop("out", None)
    record["settings"] = settings
    inputs = {}
    for key, value in (record.get("inputs") or {}).items():
        if key.startswith("manifest_"):  # pretrain: manifest_0, manifest_1, ...
            key = f"manifests.{key.removeprefix('manifest_')}"
        inputs[key] = value
    record["inputs"] = inputs
    outputs = {}
    for key, value in (record.get("outputs") or {}).items():
        path = Path(value.get("path", ""))
        if old_out is not None:
            with contextlib.suppress(ValueError):
                path = path.relative_to(old_out)
        outputs[key] = {**value, "path": str(path)}
    record["outputs"] = outputs
    record["written_by"] = "fairscan 0.1"
    return record


# --------------------------------------------------------------------------------------- settings and inputs


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return None if value is None else str(Path(value).absolute())


def recorded_settings(cfg) -> dict[str, Any]:
    """A run's settings as its record keeps them: no ``out`` (the folder is wherever the record is), and the
    paths of files outside the run absolute."""
    return absolute_paths(type(cfg), cfg.model_dump(mode="json", exclude={"out"}))


def input_file(path: str | os.PathLike) -> Path:
    """The file behind an input setting (a manifest is given as its folder or its file)."""
    path = Path(path)
    return path / "manifest.parquet" if path.is_dir() else path


def _inputs(cfg) -> dict[str, str]:
    """``{record key: path}`` of each input file setting: ``manifest``, or ``manifests.0``, ``manifests.1``."""
    out = {}
    for name in type(cfg).input_fields:
        value = getattr(cfg, name)
        if isinstance(value, list):
            out.update({f"{name}.{k}": v for k, v in enumerate(value)})
        elif value is not None:
            out[name] = value
    return out


def input_fingerprints(cfg) -> dict[str, Any]:
    return {key: {**fingerprint(input_file(path)), "path": str(input_file(path).absolute())}
            for key, path in _inputs(cfg).items()}  # fmt: skip


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str | None:
    """The file's sha256 (None if it is not there), remembered by path, size and modification time."""
    from fairscan.io import sha256_file

    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def relocate_inputs(
    model, settings: dict[str, Any], record: dict[str, Any], given: dict[str, Any], flag
) -> None:
    """Point each input setting of a saved run at the file it was trained on, wherever that is now.

    Tried in order: the path given now, the path in the settings, the recorded absolute path; the first whose
    fingerprint matches the record's wins. ``flag(name)`` names the option for the hint.
    """
    for name in model.input_fields:
        saved, now_given = settings.get(name), given.get(name)
        if isinstance(saved, list):
            given_list = now_given if isinstance(now_given, list) else [None] * len(saved)
            settings[name] = [
                _relocate(f"{name}.{k}", [g, s], record, flag(name))
                for k, (g, s) in enumerate(zip(given_list, saved))
            ]
        elif saved is not None:
            settings[name] = _relocate(name, [now_given, saved], record, flag(name))


def _relocate(key: str, candidates: list, record: dict[str, Any], flag: str) -> str:
    want = (record.get("inputs") or {}).get(key) or {}
    sha, recorded = want.get("sha256"), want.get("path")
    given = candidates[0]
    for candidate in [*candidates, recorded]:
        if candidate is None:
            continue
        have = _sha256(input_file(candidate))
        if sha is None and have is not None:  # nothing recorded to compare with: a path that exists will do
            return str(Path(candidate).absolute())
        if have is not None and have == sha:
            return str(Path(candidate).absolute())
        if candidate is given and have is not None:
            raise InputError(
                f"{flag} {given} is not the input this run was trained on (sha256 {have[:12]}, the run's "
                f"{sha[:12]})",
                hint=f"give the same file the run used ({recorded}), or start a new run in another --out",
            )
    where = f"; fairscan 0.1 recorded it as {recorded} relative to the folder it ran in" if not Path(
        str(recorded)).is_absolute() else f" ({recorded})"  # fmt: skip
    raise InputError(
        f"the run's {key} is not where it was{where}",
        hint=f"give {flag} PATH with the same file (its sha256 {str(sha)[:12]} is checked)",
    )


# ---------------------------------------------------------------------------------------------------- state


def absolute_paths(model, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the paths of files outside the run made absolute (to compare them)."""
    d = dict(settings)
    for name in model.path_fields:
        if name in d:
            d[name] = _absolute(d[name])
    return json.loads(json.dumps(d))  # tuples -> lists, as a record holds them


def comparable(model, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as they decide a run's result: execution options and the run's own folder left out."""
    return absolute_paths(
        model, {k: v for k, v in settings.items() if k not in model.how_it_runs() and k != "out"}
    )


def state(out: str | os.PathLike, cfg) -> str:
    """``done``, ``resume`` or ``todo`` for a run of ``cfg`` in ``out``; an InputError when ``out`` holds a run
    with other settings (naming the differences)."""
    folder = RunFolder(out)
    saved = folder.read()
    if saved is None:
        return "todo"
    model = type(cfg)
    stage = saved.get("stage")
    old = comparable(model, model.upgrade(saved.get("settings") or {}))
    new = comparable(model, cfg.resolve().model_dump(mode="json"))
    defaults = _defaults(model)
    # a setting newer than the run (absent from its record) that is at its default changes nothing
    new = {k: v for k, v in new.items() if k in old or v != defaults.get(k, object())}
    for name in model.input_fields:  # an input counts as the same when it is the same file
        if name in old and name in new and old[name] != new[name] and _same_inputs(name, new[name], saved):
            new[name] = old[name]
    if old != new:
        raise InputError(
            RUN_CONFLICT.format(out=out, stage=stage, diffs=diff(old, new)),
            hint="delete the folder to redo it, or point this study elsewhere (--set paths.runs=...)",
        )
    if saved.get("status") == "complete":
        return "done"
    return "resume" if folder.checkpoint() else "todo"


def _same_inputs(name: str, value: Any, record: dict[str, Any]) -> bool:
    values = value if isinstance(value, list) else [value]
    keys = [f"{name}.{k}" for k in range(len(values))] if isinstance(value, list) else [name]
    inputs = record.get("inputs") or {}
    return all(
        (inputs.get(key) or {}).get("sha256") == _sha256(input_file(v)) for key, v in zip(keys, values)
    )


def _defaults(model) -> dict[str, Any]:
    from pydantic_core import PydanticUndefined

    fields = model.model_fields.items()
    return json.loads(json.dumps({k: f.default for k, f in fields if f.default is not PydanticUndefined}))


def diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4])
    return shown + (f", +{len(keys) - 4} more" if len(keys) > 4 else "")
