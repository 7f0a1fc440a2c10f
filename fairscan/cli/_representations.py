"""What `fairscan probe` and `fairscan inspect` share on the command line: their output."""

from __future__ import annotations

from pathlib import Path

from fairscan.cli._common import console, info, warn


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
