"""What `fairscan probe` and `fairscan inspect` share on the command line: option parsing and the output."""

from __future__ import annotations

from pathlib import Path

from fairscan.cli._common import console, info, warn
from fairscan.errors import InputError


def numbers(text: str, flag: str) -> list[float]:
    """`0.01,0.1,1` -> [0.01, 0.1, 1.0], or an InputError naming the option."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: give numbers separated by commas, e.g. 40,60,80") from None
    if not values:
        raise InputError(f"{flag}: give at least one number")
    return values


def writable_folder(out: Path | None) -> None:
    """Refuse an --out that cannot be written before any work is done (``fairscan.io``'s preflight)."""
    if out is not None:
        from fairscan.io import check_output_folder

        check_output_folder(out, "--out")


def emit(record: dict, notes: list[str], tables, *, json_out: bool, out: Path | None, write) -> None:
    """The tables and notes on stdout, or with --json the record on stdout and the notes on stderr; then
    with --out the report files (``write(out)`` returns their paths)."""
    if json_out:
        import json

        import typer

        for note in notes:
            warn(note)
        typer.echo(json.dumps(record, indent=2))
    else:
        from fairscan.representations.report import console_tables

        console_tables(tables, console)
        for note in notes:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if out is not None:
        info("wrote " + ", ".join(str(p) for p in write(out).values()))
