"""Studies: a group of presets run end to end (resumable), reported as the paper's table beside ours.

>>> from fairscan.studies import run_study                                  # doctest: +SKIP
>>> paths = run_study("table2", seeds=3)                                      # doctest: +SKIP
>>> paths["html"]                                                            # doctest: +SKIP
PosixPath('studies/table2/report.html')
"""

from fairscan.studies.plan import Plan, Runner, Step, plan_study, predictions_path, seed_dir
from fairscan.studies.runner import (
    STUDY_FILES,
    STUDY_SCHEMA,
    load_study,
    run_study,
    study_dict,
    write_study,
)

__all__ = [
    "STUDY_FILES",
    "STUDY_SCHEMA",
    "Plan",
    "Runner",
    "Step",
    "load_study",
    "plan_study",
    "predictions_path",
    "run_study",
    "seed_dir",
    "study_dict",
    "write_study",
]
