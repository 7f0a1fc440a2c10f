"""Renderers for the audit's dict (docs/audit-json.md): console tables, Markdown and one HTML file.

They only read and format: every number shown is the JSON's, converted from fractions to AUC points.

>>> from fairscan.report import write_report                     # doctest: +SKIP
>>> write_report(audit_dict, "runs/mae/audit")                     # doctest: +SKIP
{'json': PosixPath('runs/mae/audit/audit.json'), 'markdown': ..., 'html': ...}
"""

from __future__ import annotations

import os
from pathlib import Path

from fairscan.report._format import AUDIT_SCHEMA, COMPARISON_SCHEMA, OLD_SCHEMAS, UNITS_NOTE, check_schema

REPORT_FILES = {"json": "audit.json", "markdown": "report.md", "html": "report.html"}


def write_report(d: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``audit.json`` into ``out_dir``, each atomically.

    Picks the single-model or the comparison layout from ``d["schema"]``. Everything is rendered before the
    first file is written, so a rendering error leaves no half-written report behind. ``audit.json`` marks a
    complete folder: an earlier one is removed first and the new one written last, so a run killed while
    writing leaves a folder without ``audit.json`` (incomplete, as its absence says), never new reports
    beside an old audit. Temporary files of an earlier killed write are removed.
    """
    from fairscan.io import write_json, write_text

    schema = check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS, COMPARISON_SCHEMA)
    if schema == COMPARISON_SCHEMA:
        from fairscan.report.html import comparison_html as to_html
        from fairscan.report.markdown import comparison_markdown as to_markdown
    else:
        from fairscan.report.html import audit_html as to_html
        from fairscan.report.markdown import audit_markdown as to_markdown
    markdown, html = to_markdown(d), to_html(d)
    out = Path(out_dir)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    for name in REPORT_FILES.values():  # leftovers of a killed write (fairscan.io's temporary names)
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    paths["json"].unlink(missing_ok=True)
    write_text(paths["markdown"], markdown)
    write_text(paths["html"], html)
    write_json(paths["json"], d)
    return paths


def render(d: dict, console, *, compact: bool = False) -> None:
    """Print an audit or a comparison to a rich console, whichever ``d["schema"]`` says it is."""
    from fairscan.report.console import render_audit, render_comparison

    schema = check_schema(d, AUDIT_SCHEMA, *OLD_SCHEMAS, COMPARISON_SCHEMA)
    (render_comparison if schema == COMPARISON_SCHEMA else render_audit)(d, console, compact=compact)


__all__ = ["AUDIT_SCHEMA", "COMPARISON_SCHEMA", "REPORT_FILES", "UNITS_NOTE", "render", "write_report"]
