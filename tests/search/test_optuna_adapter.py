"""The adapter over Optuna's private API (``wattwise.search._optuna``), against the installed
Optuna and a real SQLite study: each function reaches what it names, and a renamed private
name fails here, by name, instead of silently leaving a trial unsigned."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from wattwise.errors import UnavailableError
from wattwise.search._optuna import (
    WRITTEN_AGAINST,
    _private,
    new_trial_template_storage,
    stored_trial,
    study_storage,
    trial_id,
)
from wattwise.search._storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_study_storage_and_trial_id_reach_the_stored_trial(tmp_path: Path) -> None:
    url = _url(tmp_path)
    study = optuna.create_study(study_name="s", storage=url)
    trial = study.ask()  # an optuna.Trial
    frozen = study.get_trials(deepcopy=False)[0]  # a FrozenTrial of the same trial
    assert isinstance(trial_id(trial), int) and trial_id(trial) == trial_id(frozen)

    storage = study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    # A write through the study's storage, by the trial's id, is the trial's, in the database.
    storage.set_trial_user_attr(trial_id(trial), "written", "through the adapter")
    again = optuna.load_study(study_name="s", storage=url).trials[trial.number]
    assert again.user_attrs["written"] == "through the adapter"
    # stored_trial reads a running trial from the database: what another process wrote is there.
    other = optuna.storages.RDBStorage(url)
    other.set_trial_user_attr(trial_id(frozen), "elsewhere", 1)
    seen = stored_trial(study, frozen)
    assert seen.number == trial.number and seen.user_attrs["elsewhere"] == 1


def test_new_trial_template_makes_the_trials_this_process_runs(tmp_path: Path) -> None:
    class Marked(new_trial_template_storage()):  # type: ignore[misc]
        def new_trial_template(self) -> optuna.trial.FrozenTrial:
            return optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs={"made_by": "template"}
            )

    url = _url(tmp_path)
    storage = Marked(url)
    study = optuna.create_study(study_name="s", storage=storage)
    # Through Optuna's cache in front of the RDB storage (study.ask, study.optimize) ...
    asked = study.ask()
    # ... and through the public create_new_trial.
    made = storage.create_new_trial(storage.get_study_id_from_name("s"))
    # A trial made from a template of its own (a queued one) is made as Optuna makes it.
    study.enqueue_trial({"x": 1})

    # Read with Optuna's plain storage: the attribute was written with the trial itself.
    plain = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    by_id = {trial_id(t): t for t in plain.get_trials(deepcopy=False)}
    for tid in (trial_id(asked), made):
        assert by_id[tid].state == TrialState.RUNNING
        assert by_id[tid].user_attrs == {"made_by": "template"}
    (queued,) = (t for t in by_id.values() if t.state == TrialState.WAITING)
    assert "made_by" not in queued.user_attrs


def test_the_overridden_private_method_keeps_its_signature() -> None:
    # Optuna calls it as _create_new_trial(study_id, template_trial): our override takes those.
    params = list(inspect.signature(optuna.storages.RDBStorage._create_new_trial).parameters)
    assert params == ["self", "study_id", "template_trial"]


def test_the_storage_wattwise_opens_signs_trials_as_they_are_made(tmp_path: Path) -> None:
    url = _url(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for optimize(); ask() makes the same trial.
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    plain = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    worker = plain.trials[trial.number].user_attrs["worker"]
    assert set(worker) == {"host", "pid", "start"}


def test_a_missing_private_name_is_one_error_naming_it() -> None:
    with pytest.raises(UnavailableError, match=r"has no Study\._storage") as caught:
        _private(object(), "_storage", "Study")
    assert optuna.__version__ in str(caught.value) and WRITTEN_AGAINST in str(caught.value)
