"""Where the bias lives: what a model's features say about its patients' sex, race and age.

- :mod:`~fairscan.representations.features`: the features table (one row per image, ``feat_<k>`` columns),
  read and written in one place; `fairscan embed` writes it, `probe` and `inspect` read it.
- :mod:`~fairscan.representations.embed`: the features of every image of a split, from a run (its head's
  input) or a frozen foundation model (its recipe's pooling).
- :mod:`~fairscan.representations.probe`: how well an attribute can be read from the features (a logistic
  probe in patient-grouped cross-validation, :mod:`~fairscan.representations.crossval`, with a permutation test
  of the whole procedure, :mod:`~fairscan.representations.permutation`).
- :mod:`~fairscan.representations.inspect`: Glocker et al.'s analysis: PCA modes (or components given in the
  file), two-sample Kolmogorov-Smirnov tests between subgroups on every mode, corrected for multiplicity.
- ``report`` / ``_plots``: their Markdown, HTML and notebook views; ``simulate``: features with a planted effect.
"""
