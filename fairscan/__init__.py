"""fairscan: fine-tune medical imaging foundation models on chest X-rays and audit their subgroup fairness.

The Python API mirrors the command line; heavy dependencies (pandas, torch, scikit-learn) are imported
only when a function that needs them is called, so ``import fairscan`` and ``fairscan --help`` stay fast.

>>> import fairscan
>>> result = fairscan.audit("preds.parquet", attrs=["sex", "race"])   # doctest: +SKIP
>>> result.summary["attrs"]["race"]["gap"]                            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> module that defines it; resolved on first use (PEP 562).
_LAZY = {
    "audit": "fairscan.fairness.audit",
    "AuditResult": "fairscan.fairness.audit",
    "AuditConfig": "fairscan.fairness.audit",
    "compare": "fairscan.fairness.compare",
    "ensemble": "fairscan.fairness.ensemble",
    "read_predictions": "fairscan.schema",
    "write_predictions": "fairscan.schema",
    "read_manifest": "fairscan.schema",
    "repeated_images": "fairscan.schema",
    "dedupe": "fairscan.schema",
    "embed": "fairscan.representations.embed",
    "EmbedConfig": "fairscan.representations.embed",
    "probe": "fairscan.representations.probe",
    "inspect": "fairscan.representations.inspect",
    "read_features": "fairscan.representations.features",
    "write_features": "fairscan.representations.features",
    "FairscanError": "fairscan.errors",
    "InputError": "fairscan.errors",
    "GateFailed": "fairscan.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fairscan' has no attribute {name!r}")
