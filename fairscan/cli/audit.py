"""`fairscan audit`: the fairness audit of one or several prediction files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairscan.cli._common import console, info, numbers, progress_bar, warn, writable_folder
from fairscan.errors import GateFailed, InputError

EXAMPLES = """
Examples:

  fairscan audit preds.parquet --attrs sex race

  fairscan audit preds.parquet --attrs sex race --balanced-test --thresholds-from val.parquet --out audit/

  fairscan audit mae.parquet medical-mae.parquet --attrs sex race --max-gap 0.05   # compare, gate in CI
"""


def _split_inputs(preds: list[str]) -> tuple[list[str], list[str] | None]:
    """`NAME=PATH` tokens name a model; plain paths are named after their file."""
    paths, names = [], []
    for token in preds:
        name, sep, path = token.partition("=")
        if sep and not Path(token).exists():
            paths.append(path)
            names.append(name)
        else:
            paths.append(token)
            names.append(None)
    if any(n is not None for n in names):
        return paths, [n or Path(p).name.split(".")[0] for n, p in zip(names, paths)]
    return paths, None


def audit(
    ctx: typer.Context,
    preds: Annotated[
        list[str], typer.Argument(help="Prediction files (parquet/CSV); NAME=PATH names a model.")
    ],
    attrs: Annotated[
        list[str],
        typer.Option("--attrs", "-a", help="Attributes to audit, e.g. sex race; sex+race = intersectional."),
    ] = None,
    labels: Annotated[
        list[str], typer.Option("--labels", help="Labels to audit (default: all in the file).")
    ] = None,
    balanced_test: Annotated[
        bool,
        typer.Option("--balanced-test", help="Subgroup AUCs on per-label balanced test sets (METHOD 1)."),
    ] = False,
    intervals: Annotated[
        str, typer.Option(help="bootstrap (patients), delong (single AUCs) or none.")
    ] = "bootstrap",
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates.")] = 1000,
    ci: Annotated[float, typer.Option("--ci", help="Interval level.")] = 0.95,
    resample: Annotated[
        str,
        typer.Option(help="patient, or image (only when patient_id is unknown; intervals get too narrow)."),
    ] = "patient",
    balanced_draws: Annotated[
        int,
        typer.Option("--balanced-draws", help="With --balanced-test: average the subgroup AUCs over K draws."),
    ] = 1,
    permutations: Annotated[
        int, typer.Option(hidden=True, help="Deprecated: ignored (the gap test uses the bootstrap).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and the balanced draws.")] = 0,
    min_count: Annotated[
        int, typer.Option("--min-count", help="Fewest positives and negatives a subgroup needs for an AUC.")
    ] = 10,
    age_bins: Annotated[
        str, typer.Option("--age-bins", help="Edges of the age groups, in years.")
    ] = "40,60,80",
    thresholds_from: Annotated[
        Path,
        typer.Option("--thresholds-from", help="Validation predictions to set thresholds on (TPR/FPR/FNR)."),
    ] = None,
    tune_on_test: Annotated[
        bool,
        typer.Option("--tune-thresholds-on-test", help="Set thresholds on the audited file (labelled so)."),
    ] = False,
    target_fpr: Annotated[
        float, typer.Option("--target-fpr", help="Global FPR the thresholds aim at.")
    ] = 0.2,
    mapping: Annotated[
        Path, typer.Option("--mapping", help="YAML/JSON mapping for outside formats (see README).")
    ] = None,
    dedupe: Annotated[
        str, typer.Option("--dedupe", help="Keep one row per value of this column (e.g. path): repeated images.")
    ] = None,
    names: Annotated[list[str], typer.Option("--names", help="Model names, one per file.")] = None,
    reference: Annotated[str, typer.Option("--reference", help="Model the others are compared with.")] = None,
    max_gap: Annotated[
        float, typer.Option("--max-gap", help="Gate: fail (exit 3) if a headline gap exceeds this fraction.")
    ] = None,
    min_auc: Annotated[
        float, typer.Option("--min-auc", help="Gate: fail (exit 3) if mean AUC is below this.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the audit as JSON on stdout.")] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Write audit.json, report.md and report.html here.")
    ] = None,
    compact: Annotated[bool, typer.Option(help="Shorter console report.")] = False,
    preset: Annotated[
        str, typer.Option("--preset", help="Audit settings from a preset (e.g. audit-paper).")
    ] = None,
    sets: Annotated[
        list[str], typer.Option("--set", help="Override a preset key: --set audit.n_boot=200 (repeatable).")
    ] = None,
) -> None:
    """Audit predictions for subgroup fairness: AUC per label and subgroup, gaps, intervals, p-values.

    AUCs and gaps are fractions in JSON and AUC points (x100) in the console and reports.
    """
    from fairscan.fairness.audit import AuditConfig
    from fairscan.fairness.mapping import load_mapping
    from fairscan.settings import validate

    writable_folder(out)  # before any prediction is read
    for gate, flag in ((max_gap, "--max-gap"), (min_auc, "--min-auc")):
        if gate is not None and not 0 <= gate <= 1:
            raise InputError(
                f"{flag} {gate:g} is not a fraction",
                hint=f"gaps and AUCs are fractions: 5 AUC points is {flag} {gate / 100:g}",
            )
    settings = dict(
        intervals=intervals,
        n_boot=n_boot,
        ci_level=ci,
        resample=resample,
        seed=seed,
        balanced_test=balanced_test,
        balanced_draws=balanced_draws,
        min_pos=min_count,
        min_neg=min_count,
        age_bins=numbers(age_bins, "--age-bins"),
        target_fpr=target_fpr,
        tune_thresholds_on_test=tune_on_test,
    )
    if permutations is not None:
        settings["permutations"] = permutations
    if dedupe is not None:
        settings["dedupe"] = dedupe
    if attrs:
        settings["attrs"] = attrs
    if labels:
        settings["labels"] = labels
    if preset is not None:  # the preset's settings, under the options typed on the command line
        from fairscan.config import stage_values

        typed = {k for k, v in ctx.params.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}
        keys = {
            "ci": ["ci_level"],
            "min_count": ["min_pos", "min_neg"],
            "tune_on_test": ["tune_thresholds_on_test"],
        }
        keep = {key for name in typed for key in keys.get(name, [name])}
        settings = {
            **stage_values(preset, "audit", sets or []),
            **{k: v for k, v in settings.items() if k in keep},
        }
    elif sets:
        raise InputError(
            "--set overrides a preset's keys", hint="add --preset NAME, or use the options directly"
        )
    paths, given_names = _split_inputs(preds)
    names = names or given_names
    cfg = validate(AuditConfig, settings, flags=lambda key: FLAGS.get(key, "--" + key.replace("_", "-")))
    the_mapping = load_mapping(mapping) if mapping else None
    loaded = [_read(p, the_mapping) for p in paths]
    thresholds = _read(thresholds_from, the_mapping) if thresholds_from else None

    progress = progress_bar()
    with progress:
        if len(loaded) == 1:
            from fairscan.fairness.audit import audit as run_audit

            result = run_audit(
                loaded[0],
                config=cfg,
                thresholds_from=thresholds,
                name=(names or [None])[0],
                progress=progress,
            )
        else:
            from fairscan.fairness.compare import compare

            result = compare(
                loaded,
                config=cfg,
                names=names,
                reference=reference,
                thresholds_from=thresholds,
                progress=progress,
            )

    gate = result.check(max_gap=max_gap, min_auc=min_auc) if max_gap is not None or min_auc is not None else None
    d = result.to_dict()
    audits = list(d["models"].values()) if "models" in d else [d]
    if json_out:  # the console report lists the notes itself; with --json they go to stderr
        import json

        for a in audits:
            for note in a.get("notes", []):
                warn(note if len(audits) == 1 else f"{a['model']}: {note}")

        typer.echo(json.dumps(d, indent=2))
    else:
        from fairscan.report import render

        render(d, console, compact=compact)
    if out is not None:
        from fairscan.report import write_report

        written = write_report(d, out)
        info("wrote " + ", ".join(str(p) for p in written.values()))
    if gate is not None and not gate["passed"]:
        reasons = gate["reasons"]
        raise GateFailed(reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""))


def _read(path, mapping):
    from fairscan.schema import read_predictions

    return read_predictions(path, mapping=mapping)


# The audit settings whose command-line flag is not the setting's name with dashes.
FLAGS = {"ci_level": "--ci", "min_pos": "--min-count", "min_neg": "--min-count",
         "tune_thresholds_on_test": "--tune-thresholds-on-test"}  # fmt: skip


audit.__doc__ = (audit.__doc__ or "") + EXAMPLES
