"""`fairscan ensemble`: combine models' predictions into one auditable predictions file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import info


def ensemble(
    preds: Annotated[list[Path], typer.Argument(help="Two or more prediction files of the same images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the ensemble's predictions.")],
    method: Annotated[
        str, typer.Option(help="mean-prob (the paper), mean-logit, or mean-rank (normalised ranks).")
    ] = "mean-prob",
    weights: Annotated[
        list[float], typer.Option("--weights", help="One weight per file (normalised).")
    ] = None,
    labels: Annotated[list[str], typer.Option("--labels", help="Only these labels.")] = None,
) -> None:
    """Average the members' predictions (paper Table 3). Rows are aligned on image_id; any mismatch in
    images, labels or attributes is an error naming the first differences.

    Example: fairscan ensemble runs/mae/preds.parquet runs/medical-mae/preds.parquet -o vit-masked.parquet
    """
    from fairscan.fairness.ensemble import write_ensemble
    from fairscan.io import check_output_file, table_format

    check_output_file(out, "--out")  # before any file is read
    table_format(out)
    df = write_ensemble(list(preds), out, method=method, weights=weights or None, labels=labels or None)
    info(f"ensemble of {len(preds)} models ({method}), {len(df)} images")
    typer.echo(str(out))
