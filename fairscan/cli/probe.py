"""`fairscan probe`: how well race, sex or age can be read from a model's features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import numbers, progress_bar, writable_folder
from fairscan.cli._representations import emit
from fairscan.errors import InputError

EXAMPLES = """
Examples:

  fairscan probe feats.parquet --target race

  fairscan probe feats.parquet --target race sex age --permutations 1000 --out probe/

  fairscan probe preds.parquet --from-scores --target race        # how much race the predictions carry

  fairscan probe --fit-on train.parquet --evaluate-on test.parquet --target race
"""


def _load(path: Path, from_scores: bool, mapping: Path | None, pattern: str | None, dedupe: str | None):
    """A features table, or with --from-scores a predictions file's outputs as features."""
    from fairscan.representations.features import dedupe_features, from_predictions, read_features

    if from_scores:
        from fairscan.fairness.mapping import load_mapping
        from fairscan.schema import read_predictions

        features = from_predictions(
            read_predictions(path, mapping=load_mapping(mapping) if mapping else None)
        )
    else:
        if mapping is not None:
            raise InputError(
                "--mapping reads a predictions file", hint="add --from-scores, or drop --mapping"
            )
        features = read_features(path, pattern=pattern)
    return dedupe_features(features, dedupe) if dedupe else features


def probe(
    features: Annotated[
        Path | None,
        typer.Argument(help="Features table (`fairscan embed`); with --from-scores, predictions."),
    ] = None,
    target: Annotated[
        list[str],
        typer.Option("--target", "-t", help="Attributes to probe: race, sex, age (binned), sex+race."),
    ] = None,
    from_scores: Annotated[
        bool, typer.Option("--from-scores", help="Probe a predictions file's disease outputs (as logits).")
    ] = False,
    mapping: Annotated[
        Path, typer.Option("--mapping", help="With --from-scores: a mapping (see audit).")
    ] = None,
    pattern: Annotated[
        str, typer.Option("--features", help='Feature columns, a pattern with {i} (default "feat_{i}").')
    ] = None,
    fit_on: Annotated[Path, typer.Option("--fit-on", help="Fit on this table (with --evaluate-on).")] = None,
    evaluate_on: Annotated[
        Path, typer.Option("--evaluate-on", help="Evaluate the fitted probe here.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds over patients.")] = 5,
    inner_folds: Annotated[int, typer.Option("--inner-folds", help="Inner folds that choose C.")] = 3,
    grid: Annotated[str, typer.Option(help="Inverse L2 penalties C to choose from.")] = "0.001,0.01,0.1,1",
    permutations: Annotated[int, typer.Option(help="Permutations for the p-value (0 = off).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the folds and permutations.")] = 0,
    jobs: Annotated[
        int, typer.Option(help="Processes sharing the permutations (same result for any N).")
    ] = 1,
    age_bins: Annotated[
        str, typer.Option("--age-bins", help="Edges of the age classes, in years.")
    ] = "40,60,80",
    confounders: Annotated[
        bool, typer.Option(help="Also probe from the labels, age and sex alone (Gichoya et al.).")
    ] = True,
    dedupe: Annotated[str, typer.Option("--dedupe", help="Keep one row per value of this column.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Write probe.json, probe.md and probe.html here.")
    ] = None,
) -> None:
    """Probe frozen features for a protected attribute: a logistic regression in patient-grouped
    cross-validation, one-vs-rest AUCs and balanced accuracy, and a permutation test of the whole procedure.
    """
    from fairscan.representations.probe import ProbeSettings
    from fairscan.representations.probe import probe as run_probe
    from fairscan.settings import validate

    across = fit_on is not None or evaluate_on is not None
    if across and (fit_on is None or evaluate_on is None or features is not None):
        raise InputError(
            "--fit-on and --evaluate-on go together, without a FEATURES argument",
            hint="fairscan probe --fit-on train.parquet --evaluate-on test.parquet --target race",
        )
    if not across and features is None:
        raise InputError("name a features table", hint="fairscan probe feats.parquet --target race")
    writable_folder(out)
    settings = validate(
        ProbeSettings,
        dict(
            targets=target or ["race"],
            folds=folds,
            inner_folds=inner_folds,
            grid=numbers(grid, "--grid"),
            permutations=permutations,
            seed=seed,
            age_bins=numbers(age_bins, "--age-bins"),
            confounders=confounders,
            jobs=jobs,
        ),
        flags=lambda key: {"targets": "--target"}.get(key, "--" + key.replace("_", "-")),
    )
    first = _load(fit_on or features, from_scores, mapping, pattern, dedupe)
    second = _load(evaluate_on, from_scores, mapping, pattern, dedupe) if across else None
    with progress_bar() as progress:
        result = run_probe(first, settings=settings, evaluate_on=second, progress=progress)
    d = result.to_dict()
    from fairscan.representations.report import probe_tables, write_probe_report

    emit(d, d["notes"], probe_tables(d), json_out=json_out, out=out, write=lambda o: write_probe_report(d, o))


probe.__doc__ = (probe.__doc__ or "") + EXAMPLES
