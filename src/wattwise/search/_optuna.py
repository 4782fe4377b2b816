"""Every use of Optuna's private API, in one place.

Written against Optuna 5.0.0, the newest release when this was written and our floor
(``optuna>=5``); Optuna 4.0.0 has the same names too. ``tests/search/test_optuna_adapter.py`` runs each
function here against the installed Optuna and fails, naming the attribute, if one moves.

What we use, and why there is no public way:

* ``Study._storage``: the storage a study reads and writes through (Optuna's cache in front of
  the RDB storage). Failing a trial another worker left RUNNING takes storage calls: Optuna
  only finishes a trial through the ``Trial`` object of the process running it.
* ``Trial._trial_id`` and ``FrozenTrial._trial_id``: the storage's id of a trial, which every
  storage call takes (the trial number is counted per study, not per storage).
* ``RDBStorage._create_new_trial``: where Optuna makes a trial row. Both the public
  ``create_new_trial`` and Optuna's cache (which ``optuna.load_study`` puts in front of an
  RDB storage) call it, so overriding it is the one way to give a trial its first attributes
  in the transaction that creates it.

Optuna is imported inside the functions that need it, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from wattwise.errors import UnavailableError

if TYPE_CHECKING:
    import optuna

__all__ = ["new_trial_template_storage", "stored_trial", "study_storage", "trial_id"]

WRITTEN_AGAINST = "5.0.0"


def _private(obj: Any, name: str, owner: str) -> Any:
    """``obj.<name>``, or an error that says which private Optuna name is gone."""
    try:
        return getattr(obj, name)
    except AttributeError:
        import optuna

        raise UnavailableError(
            f"Optuna {optuna.__version__} has no {owner}.{name}, which wattwise relies on "
            f"(written against Optuna {WRITTEN_AGAINST}; see wattwise/search/_optuna.py)"
        ) from None


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes through (``Study._storage``)."""
    return _private(study, "_storage", "Study")  # type: ignore[no-any-return]


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of ``trial`` (``Trial._trial_id``, ``FrozenTrial._trial_id``)."""
    return int(_private(trial, "_trial_id", type(trial).__name__))


def stored_trial(
    study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial
) -> optuna.trial.FrozenTrial:
    """``trial`` as the study's storage has it now: a running trial read from the database, a
    finished one from Optuna's cache (a finished trial no longer changes)."""
    return study_storage(study).get_trial(trial_id(trial))


@functools.cache
def new_trial_template_storage() -> type[optuna.storages.RDBStorage]:
    """Optuna's RDB storage, with a hook for the trials this process creates to run.

    A trial made for this process to run now (``study.ask()``, ``study.optimize``; Optuna passes
    no template then) is made from the subclass's ``new_trial_template()`` in the transaction
    that creates its row. Trials made from a template of their own (``enqueue_trial``,
    ``add_trial``) are made as Optuna makes them.
    """
    import optuna

    # Checked here: a renamed method would leave our override below never called.
    _private(optuna.storages.RDBStorage, "_create_new_trial", "RDBStorage")

    class NewTrialTemplateStorage(optuna.storages.RDBStorage):
        def new_trial_template(self) -> optuna.trial.FrozenTrial | None:
            """The trial a new trial to run here starts as; ``None``: Optuna's default."""
            return None

        def _create_new_trial(
            self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
        ) -> optuna.trial.FrozenTrial:
            if template_trial is None:
                template_trial = self.new_trial_template()
            return super()._create_new_trial(study_id, template_trial)

    return NewTrialTemplateStorage
