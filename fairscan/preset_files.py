"""Preset files: finding them, reading their YAML, merging along ``extends:`` with where each key came from,
``--set`` overrides and ``${var}`` interpolation. ``fairscan.config`` turns the result into a validated preset.

Every key's origin (the file that set it, or ``--set``) is kept beside the merged data, so that an error names
the file to fix.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from fairscan.errors import InputError

QUICK_TAG = "quick"
SET_ORIGIN = "--set"
ERR_UNKNOWN_PRESET = "unknown preset {name!r}"
ERR_NOT_MAPPING = "{file}: a preset is a YAML mapping (key: value lines), not {kind}"
ERR_YAML = "{file}: not valid YAML: {error}"
ERR_CYCLE = "{file}: `extends` makes a cycle: {chain}"
ERR_BAD_SET = "--set {text!r} is not KEY=VALUE"
ERR_BAD_VALUE = "{origin}: {key}: {msg}"
ERR_UNKNOWN_VAR = "{origin}: {key}: unknown variable ${{{var}}}"
HINT_PRESETS = "see `fairscan presets list`"


# ---------------------------------------------------------------------------------------------- finding


def preset_dirs() -> list[Path]:
    """Where presets live: the installed package's ``fairscan/presets``, else the source checkout's ``presets/``."""
    dirs: list[Path] = []
    extra = os.environ.get("FAIRSCAN_PRESETS")
    if extra:
        dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    try:
        from importlib.resources import files

        packaged = Path(str(files("fairscan") / "presets"))
        if packaged.is_dir():
            dirs.append(packaged)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - a zipped install
        pass
    source = Path(__file__).resolve().parents[1] / "presets"
    if source.is_dir() and source not in dirs:
        dirs.append(source)
    return dirs


def _all_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for path in sorted(d.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def preset_names(*, include_bases: bool = False) -> list[str]:
    """Every preset's name; bases (``_*.yaml``, only ever extended) only when asked."""
    return [n for n in _all_files() if include_bases or not n.startswith("_")]


def split_name(name: str) -> tuple[str, bool]:
    """``mae:quick`` -> (``mae``, True)."""
    base, sep, tag = name.partition(":")
    if sep and tag != QUICK_TAG:
        raise InputError(
            f"preset {name!r}: unknown variant {tag!r}", hint=f"the one variant is NAME:{QUICK_TAG}"
        )
    return base, bool(sep)


def find_preset(name: str, *, near: Path | None = None) -> Path:
    """A preset's file: a path to a ``.yaml`` file, a file beside ``near`` (for ``extends``), or a name."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if near is not None and not path.is_absolute() and (near / path).is_file():
            return near / path
        if path.is_file():
            return path
        raise InputError(f"preset file {name} not found", hint=HINT_PRESETS)
    if near is not None and (near / f"{name}.yaml").is_file():
        return near / f"{name}.yaml"
    files = _all_files()
    if name in files:
        return files[name]
    import difflib

    close = difflib.get_close_matches(name, list(files), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(ERR_UNKNOWN_PRESET.format(name=name), hint=hint + HINT_PRESETS)


# --------------------------------------------------------------------------------------------- reading


def _rel(path: Path) -> str:
    """A file's name as errors show it: relative to the presets folder or the working directory."""
    for d in preset_dirs():
        try:
            return f"presets/{path.resolve().relative_to(d.resolve())}"
        except ValueError:
            continue
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_header(path: Path) -> str:
    """The comment lines at the top of a preset file, without the ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            lines.append(line[1:].removeprefix(" "))
        elif line.strip():
            break
        else:
            lines.append("")
    return "\n".join(lines).strip()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputError(
            ERR_YAML.format(file=_rel(path), error=where + str(getattr(exc, "problem", exc)))
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(ERR_NOT_MAPPING.format(file=_rel(path), kind=type(data).__name__))
    return data


# origins: the file (or "--set") each key path came from, for error messages
Origins = dict[tuple[str, ...], str]
_REPLACE = {("expected",)}  # a result belongs to its experiment: never merged into a parent's
_CONCAT = {("assumptions",)}  # assumptions accumulate along the extends chain


def _merge(
    base: Any,
    over: Any,
    origins: Origins,
    source: str | Origins,
    path: tuple[str, ...] = (),
    *,
    extends: bool = True,
) -> Any:
    """``over`` merged onto ``base``: mappings key by key, a mapping whose ``kind`` changes is replaced, anything
    else replaces; along the extends chain (``extends``) ``expected`` is replaced whole and ``assumptions``
    accumulate. ``origins`` is updated with where each key now comes from: ``source`` is a file name, or the
    origins of ``over`` itself (a parent's merged data)."""
    if extends and path in _CONCAT and isinstance(base, list) and isinstance(over, list):
        _mark(over, origins, source, path)
        return [*base, *(x for x in over if x not in base)]
    if (
        not (extends and path in _REPLACE)
        and isinstance(base, dict)
        and isinstance(over, dict)
        and base.get("kind", over.get("kind")) == over.get("kind", base.get("kind"))
    ):
        out = dict(base)
        for key, value in over.items():
            key = str(key)
            out[key] = _merge(base.get(key), value, origins, source, (*path, key), extends=extends)
        if path not in origins:
            origins[path] = _source(source, path)
        return out
    for known in [k for k in origins if k[: len(path)] == path and len(k) > len(path)]:
        del origins[known]  # the replaced subtree is gone
    _mark(over, origins, source, path)
    return copy.deepcopy(over)


def _source(source: str | Origins, path: tuple[str, ...]) -> str:
    return source if isinstance(source, str) else _origin_of(source, path)


def _mark(value: Any, origins: Origins, source: str | Origins, path: tuple[str, ...]) -> None:
    origins[path] = _source(source, path)
    if isinstance(value, dict):
        for key, sub in value.items():
            _mark(sub, origins, source, (*path, str(key)))


def _chain(
    path: Path, seen: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any], Origins, Origins]:
    """The file's data merged over its ``extends`` chain: (data, quick block, origins, quick origins)."""
    if path.resolve() in seen:
        chain = " -> ".join(p.stem for p in (*seen, path.resolve()))
        raise InputError(ERR_CYCLE.format(file=_rel(path), chain=chain))
    raw = _read_yaml(path)
    origin = _rel(path)
    parents = raw.pop("extends", None)
    quick = raw.pop(QUICK_TAG, None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    elif not (isinstance(parents, list) and all(isinstance(p, str) for p in parents)):
        raise InputError(
            ERR_BAD_VALUE.format(origin=origin, key="extends", msg="give a preset name or a list of names")
        )
    if quick is not None and not isinstance(quick, dict):
        raise InputError(
            ERR_BAD_VALUE.format(origin=origin, key=QUICK_TAG, msg="give a mapping of overrides")
        )
    data: dict[str, Any] = {}
    quick_data: dict[str, Any] = {}
    origins: Origins = {}
    quick_origins: Origins = {}
    for parent in parents:
        p_data, p_quick, p_origins, p_quick_origins = _chain(
            find_preset(parent, near=path.parent), (*seen, path.resolve())
        )
        data = _merge(data, p_data, origins, p_origins)
        quick_data = _merge(quick_data, p_quick, quick_origins, p_quick_origins)
    data = _merge(data, raw, origins, origin)
    if quick:
        quick_data = _merge(quick_data, quick, quick_origins, f"{origin} (quick)")
    return data, quick_data, origins, quick_origins


# ------------------------------------------------------------------------------------------- overrides


def parse_overrides(items: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``["a.b=3", "c=[x, y]"]`` -> ``[("a.b", 3), ("c", ["x", "y"])]``; values are read as YAML."""
    import yaml

    if not items:
        return []
    if isinstance(items, dict):
        return list(items.items())
    out = []
    for text in items:
        if isinstance(text, tuple):  # already parsed
            out.append(text)
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(
                ERR_BAD_SET.format(text=text), hint="e.g. --set finetune.epochs=3 --set audit.attrs=[sex]"
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out.append((key, parsed))
    return out


def _apply_overrides(
    data: dict[str, Any], overrides: list[tuple[str, Any]], origins: Origins
) -> dict[str, Any]:
    for key, value in overrides:
        parts = tuple(key.split("."))
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        data = _merge(data, nested, origins, SET_ORIGIN, extends=False)
    return data


# ------------------------------------------------------------------------------------------ interpolation

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value: Any, variables: dict[str, str], origins: Origins, path: tuple[str, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, variables, origins, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables, origins, (*path, str(i))) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match) -> str:
            var = m.group(1)
            if var not in variables:
                raise InputError(
                    ERR_UNKNOWN_VAR.format(origin=_origin_of(origins, path), key=".".join(path), var=var),
                    hint=f"variables: {', '.join('${' + v + '}' for v in variables)}",
                )
            return variables[var]

        return _VAR.sub(sub, value)
    return value


def _origin_of(origins: Origins, loc: tuple[str, ...]) -> str:
    for n in range(len(loc), -1, -1):
        origin = origins.get(tuple(loc[:n]))
        if origin:
            return origin
    return "preset"



def _expand_paths(paths: dict[str, str]) -> dict[str, str]:
    """Paths may refer to each other once (``studies: ${runs}/studies``)."""
    out = dict(paths)
    for key, value in paths.items():
        out[key] = _VAR.sub(lambda m: paths.get(m.group(1), m.group(0)), value)
    return out
