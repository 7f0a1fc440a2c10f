"""`fairscan prepare`: dataset adapters, pools, the balanced fine-tuning set, the image cache, synthetic data.

Each subcommand parses, calls the library in ``fairscan.data`` and renders the summary that ``prepare.json``
records: counts per split x sex x race, label prevalence per split x subgroup, and what was dropped and why.
"""

from __future__ import annotations

import contextlib
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
Seed = Annotated[
    int, typer.Option("--seed", help="Seed of every random choice (splits, fractions, sampling).")
]
Labels = Annotated[
    str,
    typer.Option("--labels", help="Label policy for uncertain (-1) labels: u-zeros, u-ones, ignore, mixed."),
]
Blank = Annotated[str, typer.Option("--blank", help="Blank (unmentioned) labels: zero or mask.")]
Fractions = Annotated[
    str, typer.Option("--fractions", help="train,validate,test shares of patients for --split random.")
]
AllRaces = Annotated[
    bool,
    typer.Option(
        "--all-races",
        help="Keep images whose race does not map (race left missing), e.g. for pre-training pools.",
    ),
]
CheckImages = Annotated[
    bool,
    typer.Option("--check-images", help="Open every image; drop and list the missing or unreadable ones."),
]
Workers = Annotated[
    int, typer.Option("--workers", help="Processes for image work (default: the CPUs, at most 8).")
]
Json = Annotated[bool, typer.Option("--json", help="Print prepare.json instead of the tables.")]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(
            f"--fractions {text!r} is not three numbers", hint="e.g. --fractions 0.6,0.1,0.3"
        ) from None


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


# ------------------------------------------------------------------------------------------------ adapters


@app.command("chexpert", no_args_is_help=True)
def chexpert(
    root: Annotated[
        Path, typer.Argument(help="The folder holding train.csv (e.g. CheXpert-v1.0-small), or the CSV.")
    ],
    demographics: Annotated[
        Path, typer.Option("--demographics", "-d", help="CHEXPERT DEMO.xlsx (or a CSV with its columns).")
    ],
    out: Out,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="random (the paper's cohort, seeded 60/10/30), published, official, or a split file.",
        ),
    ] = "random",
    seed: Seed = 0,
    fractions: Fractions = "0.6,0.1,0.3",
    validate_fraction: Annotated[
        float,
        typer.Option("--validate-fraction", help="Share of train.csv patients that validate (official)."),
    ] = 0.1,
    labels: Labels = "u-zeros",
    blank: Blank = "zero",
    all_races: AllRaces = False,
    check_images: CheckImages = False,
    workers: Workers = 0,
    as_json: Json = False,
) -> None:
    """CheXpert: train.csv (+ valid.csv) and the demographics file.

    [dim]fairscan prepare chexpert CheXpert-v1.0-small -d "CHEXPERT DEMO.xlsx" --out data/chexpert[/]
    [dim]fairscan prepare chexpert CheXpert-v1.0-small -d demo.xlsx --split published --out data/chexpert-paper[/]
    """
    from fairscan.data.chexpert import prepare_chexpert

    prepared = prepare_chexpert(
        root, demographics=demographics, split=split, seed=seed, fractions=_fractions(fractions),
        validate_fraction=validate_fraction, label_policy=labels, blank=blank, all_races=all_races,
    )  # fmt: skip
    _finish(
        prepared, out, check_images=check_images, workers=workers or None, as_json=as_json, command="chexpert"
    )


@app.command("nih", no_args_is_help=True)
def nih(
    root: Annotated[
        Path, typer.Argument(help="The folder holding Data_Entry_2017.csv (and images/), or the CSV.")
    ],
    out: Out,
    split: Annotated[str, typer.Option("--split", help="official (the two lists) or random.")] = "official",
    lists: Annotated[
        Path, typer.Option("--lists", help="Folder of train_val_list.txt and test_list.txt (default: ROOT).")
    ] = None,
    seed: Seed = 0,
    fractions: Fractions = "0.6,0.1,0.3",
    validate_fraction: Annotated[
        float, typer.Option("--validate-fraction", help="Share of train_val patients that validate.")
    ] = 0.1,
    check_images: CheckImages = False,
    workers: Workers = 0,
    as_json: Json = False,
) -> None:
    """NIH ChestX-ray14: Data_Entry_2017.csv with the official lists (sex and age; no race).

    [dim]fairscan prepare nih ChestX-ray14 --out data/nih[/]
    """
    from fairscan.data.nih import prepare_nih

    prepared = prepare_nih(
        root,
        split=split,
        lists=lists,
        seed=seed,
        fractions=_fractions(fractions),
        validate_fraction=validate_fraction,
    )
    _finish(prepared, out, check_images=check_images, workers=workers or None, as_json=as_json, command="nih")


@app.command("mimic", no_args_is_help=True)
def mimic(
    root: Annotated[
        Path, typer.Argument(help="The MIMIC-CXR-JPG 2.0.0 folder (metadata, chexpert, split CSVs).")
    ],
    out: Out,
    mimic_iv: Annotated[
        Path,
        typer.Option(
            "--mimic-iv", help="MIMIC-IV folder with admissions.csv and patients.csv (or hosp/, core/)."
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="official (the split file) or random.")] = "official",
    seed: Seed = 0,
    fractions: Fractions = "0.6,0.1,0.3",
    labels: Labels = "u-zeros",
    blank: Blank = "zero",
    all_races: AllRaces = False,
    check_images: CheckImages = False,
    workers: Workers = 0,
    as_json: Json = False,
) -> None:
    """MIMIC-CXR-JPG with race from MIMIC-IV admissions and sex/age from patients.

    [dim]fairscan prepare mimic physionet.org/files/mimic-cxr-jpg/2.0.0 --mimic-iv physionet.org/files/mimiciv/2.2 --out data/mimic[/]
    """
    from fairscan.data.mimic import prepare_mimic

    prepared = prepare_mimic(
        root, mimic_iv=mimic_iv, split=split, seed=seed, fractions=_fractions(fractions), label_policy=labels,
        blank=blank, all_races=all_races,
    )  # fmt: skip
    _finish(
        prepared, out, check_images=check_images, workers=workers or None, as_json=as_json, command="mimic"
    )


# ---------------------------------------------------------------------------------------- pools, balance


def _not_an_input(out: Path, inputs: list[Path]) -> None:
    for folder in inputs:
        if out.resolve() == Path(folder).resolve():
            raise InputError(f"--out {out} is one of the inputs", hint="write the result to a new folder")


@app.command("pool", no_args_is_help=True)
def pool(
    manifests: Annotated[list[Path], typer.Argument(help="Prepared manifest folders to combine.")],
    out: Out,
    fraction: Annotated[
        float, typer.Option("--fraction", help="Seeded share of each source's patients.")
    ] = 1.0,
    splits: Annotated[
        str, typer.Option("--splits", help="Only these source splits, e.g. train,validate (default: all).")
    ] = "",
    evaluation: Annotated[
        list[Path],
        typer.Option("--evaluation", "-e", help="Evaluation manifest(s) to check for leakage (repeatable)."),
    ] = None,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """A pre-training pool of several manifests, with a leakage warning.

    [dim]fairscan prepare pool data/nih data/chexpert-all --fraction 0.3 -e data/chexpert-paper --out data/pool[/]
    """
    from fairscan.data.cohorts import make_pool

    _not_an_input(out, manifests)
    chosen = [s.strip() for s in splits.split(",") if s.strip()] or None
    prepared = make_pool(manifests, fraction=fraction, seed=seed, splits=chosen, evaluation=evaluation or ())
    _finish(prepared, out, check_images=False, workers=None, as_json=as_json, command="pool")


@app.command("balance", no_args_is_help=True)
def balance(
    manifest: Annotated[Path, typer.Argument(help="A prepared manifest folder (with race).")],
    out: Out,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """The balanced fine-tuning set (paper §4.3): every race undersampled to the smallest, sex evened out.

    [dim]fairscan prepare balance data/chexpert --out data/chexpert-balanced[/]
    """
    from fairscan.data.cohorts import balance_training_set

    _not_an_input(out, [manifest])
    prepared = balance_training_set(manifest, seed=seed)
    _finish(prepared, out, check_images=False, workers=None, as_json=as_json, command="balance")
    if not as_json:
        report = prepared.extra["balance"]
        info(f"train split: {report['per_race']} images per race (seed {seed})")
        for when in ("before", "after"):
            cells = "; ".join(
                f"{race} " + ", ".join(f"{s} {n}" for s, n in sorted(by_sex.items()))
                for race, by_sex in report[when].items()
            )
            info(f"  {when}: {cells}")


# ------------------------------------------------------------------------------------------ cache, synthetic


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

    manifest = manifest_dir_of(manifest)  # the folder, or its manifest.parquet
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


@app.command("synthetic")
def synthetic(
    out: Out,
    layout: Annotated[
        str, typer.Option("--layout", help="chexpert, nih or mimic: whose real layout to write.")
    ] = "chexpert",
    patients: Annotated[
        int, typer.Option("--patients", help="Number of patients (default: the profile's).")
    ] = None,
    seed: Seed = 0,
    profile: Annotated[
        str, typer.Option("--profile", help="default (small, quick) or test (large groups, strong effect).")
    ] = "default",
    effect: Annotated[
        float,
        typer.Option("--effect", help="Planted subgroup effect strength in [0, 1] (default: the profile's)."),
    ] = None,
    effect_group: Annotated[
        str,
        typer.Option(
            "--effect-group", help="Affected group, attribute:value (default race:Black; NIH sex:Female)."
        ),
    ] = None,
    image_size: Annotated[
        int, typer.Option("--image-size", help="Image width in pixels (height is 1.2x).")
    ] = 64,
    as_json: Json = False,
) -> None:
    """A synthetic dataset in a real layout (under OUT/raw), prepared into OUT/manifest.parquet.

    [dim]fairscan prepare synthetic --out data/synthetic[/]
    [dim]fairscan prepare synthetic --layout mimic --patients 1000 --effect 1 --out data/synthetic-mimic[/]
    """
    from fairscan.data.synthetic import prepare_synthetic

    info(f"writing a synthetic {layout} dataset to {out / 'raw'} ...")
    prepared = prepare_synthetic(
        out, layout=layout, patients=patients, seed=seed, profile=profile, effect=effect,
        effect_group=effect_group, image_size=image_size,
    )  # fmt: skip
    _finish(prepared, out, check_images=False, workers=None, as_json=as_json, command=f"synthetic {layout}")
    if not as_json:
        fx = prepared.extra["synthetic"]["effect"]
        info(
            f"raw {layout} layout in {prepared.extra['raw_root']}; planted effect: {fx['attribute']}={fx['group']} "
            f"at strength {fx['strength']} (see fairscan.data.synthetic)"
        )
