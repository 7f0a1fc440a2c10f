"""Named foundation models (the paper's Table 1), built through timm, and loaders for each weights format."""

from fairscan.models.build import (
    LINEAR_HEAD,
    MODEL_JSON,
    MODEL_WEIGHTS,
    PROBE_HEAD,
    ModelInfo,
    arch_family,
    backbone_names,
    build_model,
    classifier,
    classifier_name,
    load_run_model,
    normalisation,
    register_tiny_models,
    spec_arch,
)
from fairscan.models.registry import MODELS, ModelSpec, get_spec
from fairscan.models.weights import Checkpoint, LoadReport, load_encoder, read_checkpoint, resolve_checkpoint

__all__ = [
    "LINEAR_HEAD",
    "MODELS",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "PROBE_HEAD",
    "Checkpoint",
    "LoadReport",
    "ModelInfo",
    "ModelSpec",
    "arch_family",
    "backbone_names",
    "build_model",
    "classifier",
    "classifier_name",
    "get_spec",
    "load_encoder",
    "load_run_model",
    "normalisation",
    "read_checkpoint",
    "register_tiny_models",
    "resolve_checkpoint",
    "spec_arch",
]
