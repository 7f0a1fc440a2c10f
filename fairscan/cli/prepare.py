"""`fairscan prepare`: dataset adapters, pools, the balanced fine-tuning set, the image cache, synthetic data.

Each subcommand parses, calls the library in ``fairscan.data`` and renders the summary that ``prepare.json``
records: counts per split x sex x race, label prevalence per split x subgroup, and what was dropped and why.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from fairscan.cli._common import console, err_console, info, warn
from fairscan.errors import InputError

app = typer.Typer(
    help="Prepare datasets: real adapters, pools, balanced sets, the image cache, synthetic data.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

# ------------------------------------------------------------------------------------------ shared options

Out = Annotated[
    Path, typer.Option("--out", "-o", help="Folder to write manifest.parquet and prepare.json to.")
]
CheckImages = Annotated[
    bool,
    typer.Option("--check-images", help="Open every image; drop and list the missing or unreadable ones."),
]
Workers = Annotated[
    int, typer.Option("--workers", help="Processes for image work (default: the CPUs, at most 8).")
]
Json = Annotated[bool, typer.Option("--json", help="Print prepare.json instead of the tables.")]

@contextlib.contextmanager
def _progress(description: str):
    """A rich progress bar on stderr; yields the ``progress(done, total)`` callback the library takes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not err_console.is_terminal:  # logs and pipes get no bar (and no stray blank line)
        yield None
        return
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _finish(
    prepared, out: Path, *, check_images: bool, workers: int | None, as_json: bool, command: str
) -> None:
    """Optional image check, write, render."""
    from fairscan.data.manifest import drop_bad_images, read_record, write_prepared

    if check_images:
        with _progress("checking images") as update:
            drop_bad_images(prepared, workers=workers, progress=update)
    path = write_prepared(prepared, out)
    record = read_record(out)
    if as_json:
        import json

        console.print_json(json.dumps(record, default=str))
    else:
        render(record, path, command)
    for message in record["warnings"]:
        warn(message)


# -------------------------------------------------------------------------------------------- rendering


def render(record: dict[str, Any], path: Path, command: str) -> None:
    """The console summary of a prepare.json record."""
    from rich.table import Table

    counts = record["counts"]
    console.print(
        f"[bold]{command}[/] -> {path}: {counts['images']:,} images, {counts['patients']:,} patients",
        highlight=False,
    )
    table = Table(title="images by split x sex x race", title_justify="left", box=None, pad_edge=False)
    from fairscan.data.manifest import MISSING
    from fairscan.schema import RACES

    races = [*RACES, MISSING]
    for col in ["split", "sex", *races, "total", "patients"]:
        table.add_column(col, justify="left" if col in ("split", "sex") else "right")
    for split, s in counts["splits"].items():
        first = True
        for sex, row in sorted(s["sex_race"].items()):
            cells = [str(row.get(r, 0)) if row.get(r) else "-" for r in races]
            table.add_row(split if first else "", sex, *cells, str(sum(row.values())), "")
            first = False
        table.add_row("", "[dim]all[/]", *["" for _ in races], f"[bold]{s['images']}[/]", str(s["patients"]))
    console.print(table)
    _render_prevalence(record["prevalence"])
    _render_dropped(record)
    problems = record.get("image_problems", [])
    for item in problems[:10]:
        console.print(f"  image {item['problem']}: {item['path']}", highlight=False)
    if len(problems) > 10:
        console.print(
            f"  ... and {len(problems) - 10} more (image_problems in prepare.json)", highlight=False
        )
    inputs = ", ".join(f"{role} {v['sha256'][:12]}" for role, v in record["inputs"].items() if "sha256" in v)
    if inputs:
        console.print(f"[dim]inputs (sha256): {inputs}[/]", highlight=False)


def _render_prevalence(prevalence: dict[str, Any]) -> None:
    from rich.table import Table

    for split, groups in prevalence.items():
        names = list(groups)
        table = Table(
            title=f"{split}: label prevalence, % (positives / known labels)", title_justify="left", box=None,
            pad_edge=False,
        )  # fmt: skip
        table.add_column("label")
        for name in names:
            table.add_column(name.split("=")[-1], justify="right")
        for label in next(iter(groups.values())):
            cells = []
            for name in names:
                p = groups[name][label]["prevalence"]
                cells.append("-" if p is None else f"{100 * p:.1f}")
            table.add_row(label, *cells)
        console.print(table)


def _render_dropped(record: dict[str, Any]) -> None:
    from rich.table import Table

    rows = list(record.get("dropped", []))
    missing = record.get("race_missing") or {}
    if missing.get("images"):
        rows.append({"reason": "kept with a missing race", **missing})
    if not rows:
        console.print("nothing dropped")
        return
    table = Table(title="dropped (and why)", title_justify="left", box=None, pad_edge=False)
    for col in ("reason", "images", "patients", "values"):
        table.add_column(col, justify="right" if col in ("images", "patients") else "left")
    for entry in rows:
        values = entry.get("values") or {}
        shown = ", ".join(f"{v} ({n})" for v, n in list(values.items())[:4])
        more = f", +{len(values) - 4} more" if len(values) > 4 else ""
        table.add_row(entry["reason"], str(entry["images"]), str(entry.get("patients") or ""), shown + more)
    console.print(table)


# ------------------------------------------------------------------------------------------------ the kinds
# One subcommand per dataset kind (fairscan.data.kinds): its options are the kind's settings.


def _param(name, annotation, default=None):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_OUT = _param("out", Out, inspect.Parameter.empty)
_CHECK = _param("check_images", CheckImages, False)
_WORKERS = _param("workers", Workers, 0)
_JSON = _param("json", Json, False)


def _kind_command(name: str) -> None:
    from fairscan.cli import _options as opt
    from fairscan.data.kinds import KINDS

    kind = KINDS[name]
    fields = kind.options()
    params = [opt.field_parameter(k, f) for k, f in fields.items()]
    extras = [_OUT, _JSON] if name in ("pool", "balance", "synthetic") else [_OUT, _CHECK, _WORKERS, _JSON]

    def body(ctx: typer.Context, **values: Any) -> None:
        from fairscan.data.kinds import inputs_of
        from fairscan.io import check_output_folder
        from fairscan.settings import validate

        spec = validate(kind, {"kind": name, **opt.typed(ctx, fields, values)}, flags=opt.flag_namer(fields))
        out = check_output_folder(values["out"], "--out")
        _not_an_input(out, [Path(p) for v in inputs_of(spec) for p in (v if isinstance(v, list) else [v])])
        if name == "synthetic":
            info(f"writing a synthetic {spec.layout} dataset to {out / 'raw'} ...")
        prepared = spec.prepare(out)
        command = f"synthetic {spec.layout}" if name == "synthetic" else name
        _finish(prepared, out, check_images=values.get("check_images", False), workers=values.get("workers") or None,
                as_json=values["json"], command=command)  # fmt: skip
        if not values["json"] and name in _AFTER:
            _AFTER[name](prepared, spec)

    doc = (kind.__doc__ or "").strip() + "\n\n" + "\n".join(f"[dim]{e}[/]" for e in kind.examples)
    app.command(name, no_args_is_help=name != "synthetic")(opt.command(body, [*params, *extras], doc))


def _not_an_input(out: Path, inputs: list[Path]) -> None:
    for folder in inputs:
        if out.resolve() == Path(folder).resolve():
            raise InputError(f"--out {out} is one of the inputs", hint="write the result to a new folder")


def _balance_report(prepared, spec) -> None:
    report = prepared.extra["balance"]
    info(f"train split: {report['per_race']} images per race (seed {spec.seed})")
    for when in ("before", "after"):
        cells = "; ".join(
            f"{race} " + ", ".join(f"{s} {n}" for s, n in sorted(by_sex.items()))
            for race, by_sex in report[when].items()
        )
        info(f"  {when}: {cells}")


def _synthetic_report(prepared, spec) -> None:
    fx = prepared.extra["synthetic"]["effect"]
    info(
        f"raw {spec.layout} layout in {prepared.extra['raw_root']}; planted effect: {fx['attribute']}={fx['group']} "
        f"at strength {fx['strength']} (see fairscan.data.synthetic)"
    )


_AFTER = {"balance": _balance_report, "synthetic": _synthetic_report}
for _name in ("chexpert", "nih", "mimic", "pool", "balance"):
    _kind_command(_name)


# ------------------------------------------------------------------------------------------- the image cache


@app.command("cache", no_args_is_help=True)
def cache(
    manifest: Annotated[Path, typer.Argument(help="A prepared manifest folder.")],
    size: Annotated[
        int, typer.Option("--size", help="Square size the images are resized to, in pixels.")
    ] = 256,
    workers: Workers = 0,
) -> None:
    """Decode and resize every image once into a memory-mapped uint8 cache (resumable, verified).

    [dim]fairscan prepare cache data/chexpert --size 256[/]
    """
    from fairscan.data.cache import build_cache, cache_files
    from fairscan.data.manifest import manifest_dir_of
    from fairscan.io import check_output_folder

    manifest = manifest_dir_of(manifest)  # the folder, or its manifest.parquet
    check_output_folder(manifest, "MANIFEST")  # the cache is written beside the manifest
    with _progress(f"caching {size} px") as update:
        meta = build_cache(manifest, size=size, workers=workers or None, progress=update)
    files = cache_files(manifest, size)
    if meta.get("up_to_date"):
        console.print(
            f"{files['array']}: already complete ({meta['count']:,} images, {size} px)", highlight=False
        )
        return
    resumed = f", {meta['resumed_rows']:,} resumed" if meta["resumed_rows"] else ""
    console.print(
        f"{files['array']}: {meta['count']:,} images at {size}x{size} px in {meta['seconds']} s{resumed}; "
        f"verified {meta['verified']['sample']} re-decoded rows, 0 mismatches",
        highlight=False,
    )



_kind_command("synthetic")
