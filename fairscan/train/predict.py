"""``fairscan predict`` as a library: a fine-tuned run scores one split of a manifest.

The output is the predictions format (``fairscan.schema``): one row per image, exactly once also on several
processes (``gather_for_metrics`` drops the samples Accelerate repeats to even out the last batch, and the rows
are checked against the split), ``image_id``, ``patient_id``, the manifest's attribute columns, ``label_<id>``
and ``prob_<id>`` per label, in manifest order. Provenance (run, weights hash, manifest fingerprint, split)
travels in the parquet metadata. Evaluation preprocessing: resize to ``image_size / 0.875``, centre crop.
``--split validate`` writes the file that the audit takes its thresholds from.

Inference runs under ``torch.inference_mode`` with large batches on a GPU (256 per process unless
``--batch-size``) and bf16 autocast there (``--precision auto``, the default; ``--precision fp32`` keeps full
precision, the CPU's default). Workers hand over uint8 grey batches; the device normalises them
(``fairscan.data.device_input``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from fairscan import __version__
from fairscan.errors import InputError
from fairscan.settings import Cli, ExecutionOptions

KEEP = ("image_id", "patient_id", "study_id", "view", "sex", "age", "race")


class PredictConfig(ExecutionOptions):
    """The settings of ``fairscan predict``: which run scores which split, and where the predictions go."""

    run: Annotated[str, Cli(argument=True, metavar="RUN")] = Field(
        description="A run folder written by `fairscan finetune`."
    )
    manifest: str = Field(description="manifest.parquet or its folder.")
    out: Annotated[str, Cli(("--output", "-o"))] = Field(description="Predictions file (.parquet).")
    split: Literal["train", "validate", "test"] = Field(
        "test", description="test, or validate for the audit's thresholds."
    )
    batch_size: int | None = Field(
        None, ge=1, description="Images per batch and process (default: 256 on a GPU, 64 on the CPU)."
    )


def _inputs(cfg: PredictConfig):
    """The run's model description and the split's rows, checked before any model is built."""
    from fairscan.models import MODEL_WEIGHTS, ModelInfo
    from fairscan.schema import read_manifest

    run = Path(cfg.run)
    if not run.is_dir():
        raise InputError(f"{run}: not a run folder", hint="give the --out folder of `fairscan finetune`")
    info = ModelInfo.read(run)
    if not (run / MODEL_WEIGHTS).exists():
        raise InputError(f"{run}: no {MODEL_WEIGHTS} yet", hint="the run has not finished its first epoch")
    frame = read_manifest(cfg.manifest, split=cfg.split)
    missing = [f"label_{lab}" for lab in info.labels if f"label_{lab}" not in frame.columns]
    if missing:
        raise InputError(
            f"{cfg.manifest}: the manifest lacks the model's label column(s) {', '.join(missing)}",
            hint="predict on a manifest with the labels the model was fine-tuned on",
        )
    return info, frame


def predict(cfg: PredictConfig, *, console=None, debug: bool = False) -> Path | None:
    """Write the predictions file; returns its path (None on processes other than the main one).

    The output path is checked before anything is computed; the file is written once, atomically, at the end.
    """
    from fairscan.io import check_output_file, table_format
    from fairscan.train.launch import launch, under_launcher

    check_output_file(cfg.out, "--output")
    table_format(cfg.out)
    _, frame = _inputs(cfg)
    if cfg.procs > 1 and not under_launcher():
        launch(_worker, {"settings": cfg.model_dump(mode="json")}, processes=cfg.procs, debug=debug)
        return Path(cfg.out)
    return _run(cfg, frame, console=console)


def _worker(*, settings: dict[str, Any]) -> None:
    """A launched process's part of ``predict``."""
    from rich.console import Console

    cfg = PredictConfig(**settings)
    _run(cfg, _inputs(cfg)[1], console=Console(stderr=True))


def _run(cfg: PredictConfig, frame, *, console) -> Path | None:
    from fairscan.models import load_run_model
    from fairscan.train.inference import over_split

    model, info = load_run_model(cfg.run)
    return over_split(
        model, info, frame, cfg, manifest=cfg.manifest, labels=info.labels, batch_size=cfg.batch_size,
        doing=f"predicting {len(frame)} {cfg.split} images with {cfg.run}", console=console,
        write=lambda logits, execution: _write(cfg, frame, info, logits, execution),
    )  # fmt: skip


def _write(cfg: PredictConfig, frame, info, logits, execution: dict[str, Any]) -> Path:
    """The predictions file of the split's logits (in manifest order); ``execution``: processes, precision."""
    import numpy as np
    import pandas as pd

    from fairscan.io import fingerprint, sha256_file
    from fairscan.models import MODEL_WEIGHTS
    from fairscan.runs import input_file
    from fairscan.schema import write_predictions

    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = frame[[c for c in KEEP if c in frame.columns]].copy()
    for j, lab in enumerate(info.labels):
        out[f"label_{lab}"] = frame[f"label_{lab}"].to_numpy(dtype=np.float64)
        out[f"prob_{lab}"] = probs[:, j]
    out = pd.DataFrame(out).reset_index(drop=True)
    provenance: dict[str, Any] = {
        "stage": "predict",
        "fairscan_version": __version__,
        "run": str(Path(cfg.run).resolve()),
        "model": info.model,
        "arch": info.arch,
        "weights_sha256": sha256_file(Path(cfg.run) / MODEL_WEIGHTS),
        "manifest": fingerprint(input_file(cfg.manifest)),
        "split": cfg.split,
        "images": len(out),
        "image_size": info.image_size,
        "processes": execution["processes"],
        "precision": execution["precision"],
    }
    return write_predictions(out, cfg.out, provenance=provenance)
