"""Reopening a running Optuna trial by its number, from another process: checked against Optuna 5.0.0
(pinned ``optuna==5.0.0``).

A search's driver asks the study for a trial and launches its job, perhaps in another process or on
another node; the job must report to that same trial, so the pruner can stop it. Optuna has no public
way to reopen a trial by number: this uses the study's private storage and id
(``study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)``), with the public
``optuna.trial.Trial(study, trial_id)``.
"""

from __future__ import annotations

import optuna


def trial_of(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """The running trial ``number`` of ``study``, to report to or annotate from any process."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)
