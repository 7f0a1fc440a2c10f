"""`fairscan inspect`: Glocker et al.'s bias inspection of a model's features (PCA modes, KS tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import numbers, writable_folder
from fairscan.cli._representations import emit
from fairscan.errors import InputError

EXAMPLES = """
Examples:

  fairscan inspect feats.parquet --attrs sex race --label pleural_effusion --out inspect/

  fairscan inspect cxr-foundation.embeddings.csv --components "PCA Mode {i}" --modes 4 --attrs race sex --label disease_label
"""


def inspect(
    ctx: typer.Context,
    features: Annotated[
        Path, typer.Argument(help="Features table (parquet/CSV), e.g. from `fairscan embed`.")
    ],
    attrs: Annotated[
        list[str], typer.Option("--attrs", "-a", help="Attributes whose subgroups are compared (sex race).")
    ] = None,
    label: Annotated[
        str, typer.Option("--label", help="A label id (reads label_<id>) or a 1/0 column: 1 vs 0 per mode.")
    ] = None,
    pca: Annotated[int, typer.Option("--pca", help="Principal components of the features to test.")] = 4,
    components: Annotated[
        str, typer.Option("--components", help='Components already in the file, e.g. "PCA Mode {i}".')
    ] = None,
    modes: Annotated[int, typer.Option("--modes", help="With --components: how many (default all).")] = None,
    correction: Annotated[str, typer.Option(help="fdr_by (as the paper), fdr_bh, holm or none.")] = "fdr_by",
    per_patient: Annotated[
        str, typer.Option("--per-patient", help="all rows, or first: each patient's first row only.")
    ] = "all",
    dedupe: Annotated[str, typer.Option("--dedupe", help="Keep one row per value of this column.")] = None,
    tsne: Annotated[
        bool, typer.Option("--tsne", help="Add a seeded t-SNE projection to the report.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the PCA solver, t-SNE and plot sampling.")] = 0,
    age_bins: Annotated[
        str, typer.Option("--age-bins", help="Edges of the age groups, in years.")
    ] = "40,60,80",
    json_out: Annotated[bool, typer.Option("--json", help="Print the test table as JSON on stdout.")] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Write inspect.json, inspect.md and inspect.html here.")
    ] = None,
) -> None:
    """Test whether the features' principal modes differ between subgroups (two-sample Kolmogorov-Smirnov
    tests per mode, corrected over the whole table), as Glocker et al. (Radiology: AI 2023).
    """
    from fairscan.representations.inspect import InspectSettings
    from fairscan.representations.inspect import inspect as run_inspect
    from fairscan.settings import validate

    if components is not None and ctx.get_parameter_source("pca").name == "COMMANDLINE":
        raise InputError(
            "--pca and --components exclude each other", hint="PCA of the features, or the file's own"
        )
    if modes is not None and components is None:
        raise InputError("--modes counts the columns of --components", hint="with PCA, use --pca K")
    writable_folder(out)
    settings = validate(
        InspectSettings,
        dict(
            attrs=attrs or ["sex", "race"],
            label=label,
            pca=pca,
            components=components,
            modes=modes,
            correction=correction,
            per_patient=per_patient,
            dedupe=dedupe,
            tsne=tsne,
            seed=seed,
            age_bins=numbers(age_bins, "--age-bins"),
        ),
        flags=lambda key: "--" + key.replace("_", "-"),
    )
    result = run_inspect(features, settings=settings)
    from fairscan.representations.report import inspect_table, write_inspect_report

    emit(
        result.to_dict(),
        result.notes,
        [inspect_table(result)],
        json_out=json_out,
        out=out,
        write=lambda o: write_inspect_report(result, o),
    )


inspect.__doc__ = (inspect.__doc__ or "") + EXAMPLES
