"""Fairness metrics: the audit, computed once and read many ways.

- ``groups`` (subgroups from attributes), ``kernels`` (AUC sweeps over bootstrap blocks, DeLong),
  ``resample`` (patient bootstrap and balanced draws from the images alone), ``estimates`` (point and replicate
  statistics through one function), ``stats`` (every interval, the gap test, the adjusted gap, paired and seed
  differences), ``thresholds`` (TPR/FPR/FNR, ECE, equalized odds), ``curves`` (ROC and reliability curves),
  ``multitest`` (Holm, BH, BY), ``layout`` (the JSON), ``result`` (AuditResult and the gate), ``audit``.
- ``compare`` (several models on shared replicates), ``ensemble``, ``align`` (rows of several files),
  ``mapping`` (outside formats), ``simulate`` (predictions with known subgroup AUCs, for calibration).
"""
