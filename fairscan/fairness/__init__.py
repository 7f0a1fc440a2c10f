"""Fairness metrics: AUC kernels, the audit, model comparison, ensembling and outside-format mapping."""
