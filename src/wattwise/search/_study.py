"""The study: the settings that define a search, and creating or resuming the study with them.

One study holds one search: its settings (task, scenario, constraints, space, budget) are
study user attributes, so ``wattwise worker --storage URL --study NAME`` on another machine
rebuilds everything from the storage alone, and a study name reused for another task or
other settings is refused in one line instead of mixing incomparable trials.

The rest of the search's use of Optuna lives beside this module: the database
(:mod:`._storage`), workers and lost trials (:mod:`._liveness`), the worker loop
(:mod:`._trials`), trials as rows (:mod:`._rows`), and Optuna's private API (:mod:`._optuna`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError
from wattwise.report import redact_url
from wattwise.search._space import SCENARIOS, SearchSpace

if TYPE_CHECKING:
    import optuna


__all__ = [
    "ATTR",
    "BASELINE_ATTR",
    "SearchSettings",
    "finite_number",
    "load_settings",
    "make_sampler",
    "open_study",
    "quiet_optuna",
]

ATTR = "wattwise"  # study user attribute holding the settings
BASELINE_ATTR = "wattwise_baseline"
SETTINGS_VERSION = 1
DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, J/item, p90 latency
# Settings a study keeps for life; the budget (trials) and the per-trial limits may change.
_FIXED = (
    "task_name",
    "task_id",
    "scenario",
    "max_accuracy_drop",
    "latency_p90_ms",
    "space",
    "training",
)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """What defines a search; stored with the study.

    Attributes:
        task_spec: ``"digits"`` or ``"pkg.mod:factory"``; ``None`` for a Python ``Task`` object
            (then workers must be given the task spec themselves).
        task_name, task_id: the task's name and identity (its data and training recipe).
        scenario: ``offline`` or ``online``.
        max_accuracy_drop: the largest accepted drop of the task metric (0.01 = one point).
        latency_p90_ms: bound on the p90 call latency, or ``None``.
        trials: the budget: finished trials across all workers and runs.
        space: the candidate space.
        seed: seeds training, compression and the sampler.
        device: where candidates are measured.
        max_time_s: soft cap on each candidate's measuring.
        timeout_per_trial_s: a trial running longer is killed and failed (``timeout``).
        meter: the energy meter (``"auto"``).
        training: the :class:`~wattwise.tasks.TrainConfig` (as a dict) of the search's own
            fine-tunes (distillation, pruning), e.g. the one ``wattwise train`` found;
            ``None``: the task's recipe. The baseline is always trained with the recipe.
    """

    task_spec: str | None
    task_name: str
    task_id: str
    scenario: str
    max_accuracy_drop: float
    latency_p90_ms: float | None
    trials: int
    space: SearchSpace
    seed: int = 0
    device: str = "cpu"
    max_time_s: float = 2.0
    timeout_per_trial_s: float = 300.0
    meter: str = "auto"
    training: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise InputError(
                f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}"
            )
        if not finite_number(self.max_accuracy_drop) or not 0 <= self.max_accuracy_drop <= 1:
            raise InputError(
                f"max_accuracy_drop must be a number in [0, 1] (0.01 = one point), got {self.max_accuracy_drop!r}"
            )
        if self.latency_p90_ms is not None and not (
            finite_number(self.latency_p90_ms) and self.latency_p90_ms > 0
        ):
            raise InputError(f"latency_p90_ms must be a number > 0, got {self.latency_p90_ms!r}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise InputError(f"trials must be an integer >= 1, got {self.trials!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (finite_number(self.max_time_s) and self.max_time_s > 0):
            raise InputError(f"max_time_s must be a number > 0, got {self.max_time_s!r}")
        if not (finite_number(self.timeout_per_trial_s) and self.timeout_per_trial_s > 0):
            raise InputError(
                f"timeout_per_trial_s must be a number > 0, got {self.timeout_per_trial_s!r}"
            )
        if self.training is not None:
            from wattwise.tasks import TrainConfig

            TrainConfig.from_dict(self.training)  # one line naming the bad key or value
        if not isinstance(self.space, SearchSpace):
            raise InputError(f"space must be a SearchSpace, got {type(self.space).__name__}")
        if self.scenario == "online" and any(b != 1 for b in self.space.batch_sizes):
            raise InputError(
                "the online scenario serves one query at a time: its space's batch_sizes must be (1,)"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["space"] = self.space.to_dict()
        out["version"] = SETTINGS_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        if not isinstance(data, Mapping) or data.get("version") != SETTINGS_VERSION:
            raise InputError("the study's wattwise settings are missing or of another version")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["space"] = SearchSpace.from_dict(data["space"])
        return cls(**kwargs)


def finite_number(value: Any) -> bool:
    """A real int or float, not a bool, NaN or infinity."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- the study


def make_sampler(seed: int, worker_salt: int = 0) -> optuna.samplers.BaseSampler:
    import optuna

    # Workers salt their seed so two of them don't propose the same candidates in lockstep.
    # Constraints reach the sampler through trial.set_constraint (Optuna 5), set per trial.
    return optuna.samplers.TPESampler(seed=(seed + worker_salt) % 2**32, n_startup_trials=8)


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    settings: SearchSettings | None,
    *,
    url: str,
    seeds: Sequence[Mapping[str, Any]] = (),
    worker_salt: int = 0,
) -> tuple[optuna.Study, SearchSettings]:
    """Create the study ``name`` with ``settings``, or load it and check it matches them.

    With ``settings=None`` (a worker) the study must exist; its stored settings are returned.

    Raises:
        InputError: the study exists for another task or other fixed settings; or (worker) it
            doesn't exist or isn't a wattwise study.
    """
    import optuna

    if not isinstance(name, str) or not name.strip():
        raise InputError(f"study name must be a non-empty string, got {name!r}")
    seed = settings.seed if settings is not None else 0
    sampler = make_sampler(seed, worker_salt)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    except KeyError:
        if settings is None:
            raise InputError(
                f"no study named {name!r} in {redact_url(url)}; start it with 'wattwise optimize --study {name}'"
            ) from None
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                directions=list(DIRECTIONS),  # type: ignore[arg-type]
                sampler=sampler,
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            created = False
    if created:
        assert settings is not None
        study.set_user_attr(ATTR, settings.to_dict())
        for params in seeds:
            study.enqueue_trial(dict(params), user_attrs={"seed_point": True})
        return study, settings
    stored = _stored_settings(study, name, url)
    if settings is None:
        return study, stored
    _check_same(stored, settings, name, url)
    if (
        stored.trials != settings.trials
        or stored.timeout_per_trial_s != settings.timeout_per_trial_s
    ):
        study.set_user_attr(ATTR, settings.to_dict())
    return study, settings


def _stored_settings(study: optuna.Study, name: str, url: str) -> SearchSettings:
    data = None
    for _ in range(20):  # a study created this instant may not have its settings written yet
        data = study.user_attrs.get(ATTR)
        if data is not None:
            break
        time.sleep(0.25)
    if data is None:
        raise InputError(f"study {name!r} in {redact_url(url)} is not a wattwise study")
    return SearchSettings.from_dict(data)


def _check_same(stored: SearchSettings, new: SearchSettings, name: str, url: str) -> None:
    if stored.task_name != new.task_name or stored.task_id != new.task_id:
        what = (
            f"task {stored.task_name!r}"
            if stored.task_name != new.task_name
            else f"another version of task {stored.task_name!r} (its data or training recipe differ)"
        )
        raise InputError(
            f"study {name!r} in {redact_url(url)} belongs to {what}, not {new.task_name!r}; "
            "pass --study with a new name"
        )
    for field in _FIXED[2:]:
        old, now = getattr(stored, field), getattr(new, field)
        if field == "space":
            old, now = old.fingerprint(), now.fingerprint()
        if old != now:
            shown = "a different search space" if field == "space" else f"{field}={old!r}"
            raise InputError(
                f"study {name!r} in {redact_url(url)} was made with {shown}"
                f"{'' if field == 'space' else f' (this run: {now!r})'}; "
                "pass --study with a new name to search with other settings"
            )


def load_settings(study: optuna.Study) -> SearchSettings:
    return SearchSettings.from_dict(study.user_attrs[ATTR])


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial; our progress lines say the same with the units."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
