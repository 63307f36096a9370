"""The few places where autopeft reaches past Optuna's public API, kept in one module.

A sampler is handed a `FrozenTrial`, and a stale trial is known only by its number; Optuna
has no public call that writes a system attribute on either, or that gives the handle
`Study.tell` takes for a trial that this process did not ask. These helpers use the
storage and the trial id that Optuna keeps on `Study._storage` and `Trial._trial_id`.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial


def storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind `study`."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """The storage's id of `trial` (not its number)."""
    return trial._trial_id


def set_trial_system_attr(study: optuna.Study, trial: FrozenTrial | optuna.trial.Trial, key: str, value: Any) -> None:
    """Write a system attribute on any trial of `study`, running or stored."""
    storage(study).set_trial_system_attr(trial_id(trial), key, value)


def trial_handle(study: optuna.Study, trial: FrozenTrial) -> optuna.trial.Trial:
    """A `Trial` for a stored running trial, as `study.ask()` would return it (to set attrs and `tell`)."""
    return optuna.trial.Trial(study, trial_id(trial))


def heartbeat_interval(study: optuna.Study) -> int | None:
    """The storage's heartbeat interval in seconds; None where it records no heartbeat."""
    get = getattr(storage(study), "get_heartbeat_interval", None)
    return get() if get is not None else None
