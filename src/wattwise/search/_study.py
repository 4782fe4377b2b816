"""The Optuna study: storage, creation and resume, the task binding, and the worker loop.

One study holds one search: its settings (task, scenario, constraints, space, budget) are
study user attributes, so ``wattwise worker --storage URL --study NAME`` on another machine
rebuilds everything from the storage alone, and a study name reused for another task or
other settings is refused in one line instead of mixing incomparable trials.

Trials are Optuna's, three objectives (accuracy ↑, J/item ↓, p90 latency ↓) with the
constraints (accuracy drop, latency bound) given to the sampler through ``constraints_func``.
Each worker runs trials one at a time until the budget is used; the budget counts every
finished trial (complete or failed for a reason of its own) across all workers and runs, so
rerunning a command resumes it. Trials that died with their worker (kill -9, a lost machine)
are failed as *interrupted*, are not counted, and their candidate is queued again: a dead
worker on this machine is seen at once (its process is gone), one elsewhere when its
heartbeat goes stale (after :data:`GRACE_PERIOD_S`, or ``WATTWISE_HEARTBEAT_GRACE_S`` seconds).
A worker whose remaining budget is running in other workers waits for those trials to end
instead of leaving, so that if their worker dies it runs them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import math
import os
import socket
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError, UnavailableError, WattwiseError
from wattwise.search._objective import (
    JobContext,
    build_job,
    model_key,
    trial_job,
)
from wattwise.search._space import SCENARIOS, Candidate, SearchSpace, params_key

if TYPE_CHECKING:
    import optuna


# The figures a trial records (from its measurement and evaluation), in results and reports.
FIGURES = (
    "accuracy",
    "energy_j_per_item",
    "energy_source",
    "energy_uncertainty",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "co2e_g_per_million_items",
    "macs_per_item",
    "params",
    "size_bytes",
    "disturbed_windows",
)
__all__ = [
    "SearchSettings",
    "TrialCounts",
    "count_trials",
    "load_settings",
    "open_storage",
    "open_study",
    "recover_dead_trials",
    "run_trials",
    "trial_rows",
]

ATTR = "wattwise"  # study user attribute holding the settings
BASELINE_ATTR = "wattwise_baseline"
SETTINGS_VERSION = 1
DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, J/item, p90 latency
HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 90
_SCHEMA_RACE_TRIES = 5  # opens of a fresh database racing another process (see _open_rdb)
# Overrides GRACE_PERIOD_S (whole seconds >= 2), e.g. for tests, or a cluster that wants a lost
# worker's trial back sooner. Set it alike for every worker of a study: the heartbeat interval
# follows it, and a worker beating at the default interval looks dead to a shorter grace period.
GRACE_PERIOD_ENV = "WATTWISE_HEARTBEAT_GRACE_S"
MAX_CONSECUTIVE_DUPLICATES = 40
INTERRUPTED = "interrupted"
# Settings a study keeps for life; the budget (trials) and the per-trial limits may change.
_FIXED = ("task_name", "task_id", "scenario", "max_accuracy_drop", "latency_p90_ms", "space")


def _redact(url: str) -> str:
    from wattwise.report import redact_url

    return redact_url(url)


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

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise InputError(
                f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}"
            )
        if not _number(self.max_accuracy_drop) or not 0 <= self.max_accuracy_drop <= 1:
            raise InputError(
                f"max_accuracy_drop must be a number in [0, 1] (0.01 = one point), got {self.max_accuracy_drop!r}"
            )
        if self.latency_p90_ms is not None and not (
            _number(self.latency_p90_ms) and self.latency_p90_ms > 0
        ):
            raise InputError(f"latency_p90_ms must be a number > 0, got {self.latency_p90_ms!r}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise InputError(f"trials must be an integer >= 1, got {self.trials!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (_number(self.max_time_s) and self.max_time_s > 0):
            raise InputError(f"max_time_s must be a number > 0, got {self.max_time_s!r}")
        if not (_number(self.timeout_per_trial_s) and self.timeout_per_trial_s > 0):
            raise InputError(
                f"timeout_per_trial_s must be a number > 0, got {self.timeout_per_trial_s!r}"
            )
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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- storage


def default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'wattwise.db'}"


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's password removed wherever it appears (driver errors echo it)."""
    password = urllib.parse.urlsplit(url).password if "://" in url else None
    one = " ".join(str(text).split())
    if password:
        one = one.replace(password, "***")
        with contextlib.suppress(Exception):
            one = one.replace(urllib.parse.unquote(password), "***")
    return one


def _postgres_driver(url: str, scheme: str) -> str:
    """``url`` with a driver SQLAlchemy can import: a bare ``postgresql://`` means psycopg 3 to
    SQLAlchemy 2.1, while our ``search`` extra installs psycopg2."""
    import importlib.util

    rest = url.split("://", 1)[1]
    if "+" in scheme:  # the user chose the driver
        driver = scheme.split("+", 1)[1]
        if importlib.util.find_spec(driver) is None:
            raise UnavailableError(f"PostgreSQL driver {driver!r} is not installed")
        return url
    for driver in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://{rest}"
    raise UnavailableError(
        "PostgreSQL storage needs psycopg2: pip install 'wattwise[search]' (or psycopg2-binary)"
    )


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url`` (SQLite file or PostgreSQL), with heartbeats.

    Raises:
        InputError: a malformed URL, an unsupported scheme, a SQLite file in a missing or
            unwritable directory, or a database that can't be reached. The message never
            contains the URL's password.
        UnavailableError: the database driver is not installed.
    """

    if not isinstance(url, str) or "://" not in url:
        raise InputError(
            f"storage must be a database URL like sqlite:///path/to/wattwise.db or "
            f"postgresql://user:pass@host/db, got {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    given = url  # messages show the URL as the user wrote it (password redacted)
    engine_kwargs: dict[str, Any] = {}
    if scheme.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                raise InputError(f"storage {url}: directory {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise InputError(f"storage {url}: directory {parent} is not writable")
        # Several local processes may share the file: wait for its lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif scheme.startswith("postgres"):
        url = _postgres_driver(url, scheme)
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    elif not scheme.startswith("mysql"):
        raise InputError(
            f"storage {_redact(url)}: unsupported scheme {scheme!r}; use sqlite:/// or postgresql://"
        )
    interval, grace = heartbeat_timing()
    try:
        return _open_rdb(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=_retry_stale,
        )
    except Exception as exc:
        first = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise InputError(
            f"cannot open storage {_redact(given)}: {type(exc).__name__}: {first[:300]}"
        ) from None


def _open_rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """Our RDB storage for ``url``, tolerating another process creating the same new database.

    Optuna creates its tables and version row on first open without a lock: two processes
    opening one fresh file together (``optimize`` beside a ``worker``, or beside a reader of the
    study) fail with "table ... already exists" or a UNIQUE constraint, which one more try, once
    the other has finished, does not.
    """
    import optuna
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_RACE_TRIES):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental; they recover a lost worker's trial.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _storage_class()(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
            racing = "already exists" in str(exc) or "UNIQUE constraint" in str(exc)
            if not racing or attempt == _SCHEMA_RACE_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def heartbeat_timing() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: the defaults, or the grace period from
    :data:`GRACE_PERIOD_ENV` with an interval a quarter of it (at most the default), so a live
    worker beats several times before its trial could be taken for lost.

    Raises:
        InputError: the variable is set to something other than whole seconds >= 2.
    """
    raw = os.environ.get(GRACE_PERIOD_ENV, "").strip()
    if not raw:
        return HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S
    grace = int(raw) if raw.isdigit() else 0
    if grace < 2:
        raise InputError(f"{GRACE_PERIOD_ENV} must be whole seconds >= 2, got {raw!r}")
    return max(1, min(HEARTBEAT_INTERVAL_S, grace // 4)), grace


def storage_error_types() -> tuple[type[Exception], ...]:
    """What Optuna and SQLAlchemy raise when the database fails (a server restarting, a lost
    connection): Optuna wraps most of them as "invalid data in the commit", which they aren't."""
    import optuna
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


@functools.cache
def _storage_class() -> type[optuna.storages.RDBStorage]:
    """Optuna's RDB storage, made to leave no trial without an owner or a heartbeat.

    * Every trial this process starts is signed with its :func:`worker_identity` as it is
      made (in the same transaction), or popped from the queue (the very next commit): a worker
      killed, or cut off from the database, between Optuna starting the trial and our objective
      signing it would otherwise leave a RUNNING trial that no check can tell is dead.
    * A heartbeat that fails (the database restarting) is skipped, not raised: Optuna beats from
      a thread that dies on the first error, with a traceback on stderr, and the trial then runs
      on without heartbeats, to be taken for lost by other workers. The next beat retries.
    """
    import optuna
    from optuna.trial import TrialState

    errors = storage_error_types()

    class SignedStorage(optuna.storages.RDBStorage):
        def _create_new_trial(
            self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
        ) -> optuna.trial.FrozenTrial:
            if template_trial is None:  # asked for by this process, to run now
                template_trial = optuna.trial.create_trial(
                    state=TrialState.RUNNING, user_attrs={"worker": worker_identity()}
                )
            return super()._create_new_trial(study_id, template_trial)

        def set_trial_state_values(
            self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
        ) -> bool:
            taken = super().set_trial_state_values(trial_id, state, values)
            if taken and state == TrialState.RUNNING:  # popped from the queue by this process
                self.set_trial_user_attr(trial_id, "worker", worker_identity())
            return taken

        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(*errors):
                super().record_heartbeat(trial_id)

    return SignedStorage


def _storage_failure(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc``, if any: Optuna may raise one of its own on the way out
    (5.0 raises UnboundLocalError when telling a trial's end fails), the database's as context."""
    types = storage_error_types()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a failing database into one line naming the storage (password redacted).

    Raises:
        UnavailableError: the storage failed under the search; rerunning resumes it.
    """
    try:
        yield
    except Exception as exc:
        failure = None if isinstance(exc, WattwiseError) else _storage_failure(exc)
        if failure is None:
            raise
        cause = failure.__cause__ if failure.__cause__ is not None else failure
        cause = getattr(cause, "orig", None) or cause  # the driver's own error, without SQL
        text = str(cause).strip()
        first = _scrub(text.splitlines()[0] if text else "", url)
        raise UnavailableError(
            f"storage {_redact(url)} failed: {type(cause).__name__}: {first[:300]}; "
            "rerun the same command to resume (finished trials are kept)"
        ) from None


# ----------------------------------------------------------------------------- study


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
                f"no study named {name!r} in {_redact(url)}; start it with 'wattwise optimize --study {name}'"
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
        raise InputError(f"study {name!r} in {_redact(url)} is not a wattwise study")
    return SearchSettings.from_dict(data)


def _check_same(stored: SearchSettings, new: SearchSettings, name: str, url: str) -> None:
    if stored.task_name != new.task_name or stored.task_id != new.task_id:
        what = (
            f"task {stored.task_name!r}"
            if stored.task_name != new.task_name
            else f"another version of task {stored.task_name!r} (its data or training recipe differ)"
        )
        raise InputError(
            f"study {name!r} in {_redact(url)} belongs to {what}, not {new.task_name!r}; "
            "pass --study with a new name"
        )
    for field in _FIXED[2:]:
        old, now = getattr(stored, field), getattr(new, field)
        if field == "space":
            old, now = old.fingerprint(), now.fingerprint()
        if old != now:
            shown = "a different search space" if field == "space" else f"{field}={old!r}"
            raise InputError(
                f"study {name!r} in {_redact(url)} was made with {shown}"
                f"{'' if field == 'space' else f' (this run: {now!r})'}; "
                "pass --study with a new name to search with other settings"
            )


def load_settings(study: optuna.Study) -> SearchSettings:
    return SearchSettings.from_dict(study.user_attrs[ATTR])


# ----------------------------------------------------------------------------- trial states


@dataclasses.dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by what they mean for the budget."""

    complete: int = 0
    failed: int = 0  # failed for a reason of their own (counted)
    interrupted: int = 0  # died with their worker or on Ctrl-C (not counted, queued again)
    pruned: int = 0  # duplicates and budget surplus (not counted)
    running: int = 0
    waiting: int = 0

    @property
    def counted(self) -> int:
        return self.complete + self.failed


def is_interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    from optuna.trial import TrialState

    reason = trial.user_attrs.get("fail_reason")
    return trial.state == TrialState.FAIL and (
        reason is None or str(reason).startswith(INTERRUPTED)
    )


def counts_for_budget(trial: optuna.trial.FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and not is_interrupted(trial)
    )


def count_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> TrialCounts:
    from optuna.trial import TrialState

    tally = dict.fromkeys(("complete", "failed", "interrupted", "pruned", "running", "waiting"), 0)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            tally["complete"] += 1
        elif t.state == TrialState.FAIL:
            tally["interrupted" if is_interrupted(t) else "failed"] += 1
        elif t.state == TrialState.PRUNED:
            tally["pruned"] += 1
        elif t.state == TrialState.RUNNING:
            tally["running"] += 1
        else:
            tally["waiting"] += 1
    return TrialCounts(**tally)


def _proc_start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _proc_start_ticks(pid)}


def _alive(identity: Mapping[str, Any]) -> bool:
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = identity.get("start")
    return start is None or _proc_start_ticks(pid) == start


def _enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the candidate of an interrupted trial again (once per interrupted trial).

    Only a trial that got as far as its candidate (its label) has one: a trial stopped while the
    sampler was choosing holds part of the parameters, and queueing those would fix them for a
    trial that is no retry of anything.
    """
    from optuna.trial import TrialState

    if not trial.params or "label" not in trial.user_attrs:
        return
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get("retry_of") == trial.number and other.state != TrialState.FAIL:
            return
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def _retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna's stale-heartbeat callback: the trial is already failed; queue it again."""
    _enqueue_retry(study, trial)


def _why_dead(trial: optuna.trial.FrozenTrial, host: str, grace_s: float) -> str | None:
    """Why the RUNNING ``trial`` must have lost its worker, or ``None`` if it may be alive."""
    identity = trial.user_attrs.get("worker")
    if isinstance(identity, Mapping):
        if identity.get("host") != host or _alive(identity):
            return None
        return f"its worker (pid {identity.get('pid')}) stopped mid-trial"
    # A live worker signs its trial moments after starting it. One unsigned for longer than the
    # grace period lost its worker in between, maybe before its first heartbeat: Optuna would
    # never see that trial go stale.
    started = trial.datetime_start
    if started is not None and (datetime.datetime.now() - started).total_seconds() > grace_s:
        return "its worker stopped as the trial started"
    return None


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail (as interrupted) and requeue RUNNING trials whose worker on this machine is gone,
    and trials no worker signed within the grace period.

    Returns the numbers of the trials recovered. Trials of workers on other machines are left
    to the heartbeat (:data:`GRACE_PERIOD_S`): those gone stale are failed and requeued here
    too, because Optuna checks only as a trial starts, and a worker that counts the lost trial
    as running may find the budget taken and start none, leaving it RUNNING for ever.
    """
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls _retry_stale for each
    host = socket.gethostname()
    grace_s = heartbeat_timing()[1]
    recovered = []
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = _why_dead(trial, host, grace_s)
        if why is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"{INTERRUPTED}: {why}")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # someone else finished it first
        _enqueue_retry(study, storage.get_trial(trial._trial_id))
        recovered.append(trial.number)
    return recovered


# ----------------------------------------------------------------------------- the loop


class _TrialFailed(WattwiseError):
    """Raised in the objective to fail a trial with its reason (caught by Optuna)."""


@dataclasses.dataclass
class LoopState:
    """What a worker loop did (for the summary)."""

    ran: list[int] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    exhausted: bool = False
    recovered: list[int] = dataclasses.field(default_factory=list)


def constraint_values(
    accuracy: float, baseline_accuracy: float, latency_p90_ms: float, settings: SearchSettings
) -> list[float]:
    """≤ 0 when satisfied: accuracy drop over its bound, p90 latency over its bound."""
    drop = baseline_accuracy - accuracy
    c_acc = drop - settings.max_accuracy_drop
    c_lat = (
        latency_p90_ms - settings.latency_p90_ms if settings.latency_p90_ms is not None else -1.0
    )
    return [c_acc, c_lat]


def _suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    return {name: trial.suggest_categorical(name, list(c)) for name, c in space.choices().items()}


def run_trials(
    study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    *,
    baseline_accuracy: float,
    budget: int,
    on_start: Callable[[int, str], None] | None = None,
    on_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> LoopState:
    """Run trials of ``study`` until ``budget`` finished trials exist (all workers together).

    While the rest of the budget is running in other workers, this one waits (polling the
    study) rather than returning: a trial whose worker then dies is recovered here, by its
    process being gone on this machine or its heartbeat going stale, and run again.

    Each trial runs its candidate in child processes (:func:`build_job` when the model is not
    cached yet, then :func:`trial_job`). A ``KeyboardInterrupt`` or a failing database (see
    :func:`storage_errors`) fails the trial in flight as interrupted, queues its candidate again
    and propagates.
    """
    import optuna
    from optuna.trial import TrialState

    from wattwise.measure import IsolationError, run_isolated
    from wattwise.measure._isolate import log_tail

    state = LoopState()
    identity = worker_identity()
    lost_storage = storage_error_types()
    space = settings.space

    started: list[int] = []  # the trial numbers this worker's last optimize() call ran

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        started.append(trial.number)
        ledgers: list[dict[str, Any]] = []
        t0 = time.monotonic()
        try:
            return body(trial, ledgers, t0)
        except KeyboardInterrupt:
            give_back(trial, ledgers, t0, "stopped by Ctrl-C")
            raise
        except lost_storage:
            give_back(trial, ledgers, t0, "its worker lost the storage")
            raise

    def give_back(trial: optuna.Trial, ledgers: list[dict[str, Any]], t0: float, why: str) -> None:
        """Wherever Ctrl-C or a database failure lands in the trial: mark it, keep its energy,
        queue it again. With the database still down this fails too; the trial stays RUNNING
        and the next run on this machine, seeing this process gone, does it."""
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_reason", f"{INTERRUPTED}: {why}")
            _record_energy(trial, ledgers, time.monotonic() - t0)
            _enqueue_retry(study, study._storage.get_trial(trial._trial_id))

    def body(
        trial: optuna.Trial, ledgers: list[dict[str, Any]], t0: float
    ) -> tuple[float, float, float]:
        trial.set_user_attr("worker", identity)
        params = _suggest(trial, space)
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        ahead = sum(
            1
            for t in others
            if t.number < trial.number and (counts_for_budget(t) or t.state == TrialState.RUNNING)
        )
        if ahead >= budget:
            trial.set_user_attr("fail_reason", "budget reached")
            raise optuna.TrialPruned("budget reached")
        key = params_key(params)
        for t in others:
            if (counts_for_budget(t) or t.state == TrialState.RUNNING) and params_key(
                t.params
            ) == key:
                trial.set_user_attr("duplicate_of", t.number)
                trial.set_user_attr("fail_reason", f"duplicate of trial {t.number}")
                raise optuna.TrialPruned(f"duplicate of trial {t.number}")

        cand = Candidate.from_params(space, params, device=ctx.device)
        trial.set_user_attr("label", cand.label)
        trial.set_user_attr("recipe", cand.recipe)
        trial.set_user_attr("student", cand.model.student)
        trial.set_user_attr("deployment", cand.deployment)
        log = ctx.log_path(f"trial-{trial.number:04d}")
        if log is not None:
            trial.set_user_attr("log", log)
        if on_start is not None:
            on_start(trial.number, cand.label)
        result = _run_candidate(ctx, cand, settings, ledgers, run_isolated, IsolationError, log)
        _record_energy(trial, ledgers, time.monotonic() - t0)
        if not result.get("ok"):
            reason = f"{result.get('kind', 'error')}: {result.get('message', '')}"
            tail = log_tail(log) if log is not None else ""
            if tail:  # what the user's code printed last: often the why
                trial.set_user_attr("output_tail", tail)
            trial.set_user_attr("fail_reason", reason)
            raise _TrialFailed(reason)
        figures = {k: result[k] for k in FIGURES}
        trial.set_user_attr("figures", figures)
        trial.set_user_attr("measurement", result.get("measurement"))
        trial.set_user_attr("check", result.get("check"))
        trial.set_user_attr("notes", list(result.get("notes") or [])[:10])
        # ≤ 0 means satisfied; the sampler prefers feasible trials when it proposes the next.
        c_acc, c_lat = constraint_values(
            figures["accuracy"], baseline_accuracy, figures["latency_ms_p90"], settings
        )
        trial.set_constraint("accuracy_drop", c_acc)
        trial.set_constraint("latency_p90", c_lat)
        return (
            float(figures["accuracy"]),
            float(figures["energy_j_per_item"]),
            float(figures["latency_ms_p90"]),
        )

    state.recovered = recover_dead_trials(study)
    while True:
        counts = count_trials(study.get_trials(deepcopy=False))
        if counts.counted >= budget:
            break
        stuck = state.duplicates >= MAX_CONSECUTIVE_DUPLICATES and not counts.waiting
        if counts.running and (stuck or counts.counted + counts.running >= budget):
            # What is left of the budget (or all the sampler still proposes) is running in
            # other workers. Leaving now would leave the budget short if one of them died:
            # wait until their trials end, or their workers are found dead and the trials are
            # queued again, to be run here.
            time.sleep(_wait_poll_s())
            state.recovered += recover_dead_trials(study)
            continue
        if stuck:
            state.exhausted = True
            break
        started.clear()
        study.optimize(objective, n_trials=1, catch=(_TrialFailed,), gc_after_trial=False)
        finished = {t.number: t for t in study.get_trials(deepcopy=False)}
        for t in (finished[n] for n in started if n in finished):
            if t.state == TrialState.PRUNED and "duplicate_of" in t.user_attrs:
                state.duplicates += 1
            elif t.state == TrialState.PRUNED:
                pass
            else:
                state.duplicates = 0
                state.ran.append(t.number)
            if on_end is not None:
                on_end(t)
        state.recovered += recover_dead_trials(study)
    return state


def _wait_poll_s() -> float:
    """How often a waiting worker looks at the study: a few times per heartbeat interval, at
    most every 5 s (a lost worker's trial is back after the grace period, not sooner)."""
    return float(min(5, max(1, heartbeat_timing()[0] // 2)))


def _record_energy(trial: optuna.Trial, ledgers: list[dict[str, Any]], duration_s: float) -> None:
    build = measure = 0.0
    phases: dict[str, float] = {}
    times: dict[str, float] = {}
    sources = set()
    for ledger in ledgers:
        sources.add(ledger.get("energy_source"))
        for phase, seconds in (ledger.get("time_s") or {}).items():
            times[phase] = times.get(phase, 0.0) + float(seconds)
        for phase, joules in (ledger.get("energy_j") or {}).items():
            phases[phase] = phases.get(phase, 0.0) + float(joules)
            if phase == "measure":
                measure += float(joules)
            else:
                build += float(joules)
    trial.set_user_attr("build_energy_j", build)
    trial.set_user_attr("measure_energy_j", measure)
    trial.set_user_attr("energy_by_phase_j", phases)
    trial.set_user_attr("time_by_phase_s", times)
    trial.set_user_attr("search_energy_source", "+".join(sorted(s for s in sources if s)) or None)
    trial.set_user_attr(
        "search_energy_uncertainty",
        max((float(x.get("energy_uncertainty") or 0) for x in ledgers), default=None),
    )
    trial.set_user_attr("duration_s", duration_s)


def _run_candidate(
    ctx: JobContext,
    cand: Candidate,
    settings: SearchSettings,
    ledgers: list[dict[str, Any]],
    run_isolated: Any,
    isolation_error: type[BaseException],
    log_path: str | None = None,
) -> dict[str, Any]:
    """Build the model if it isn't cached (all cores), then run the trial (its own threads),
    both writing their output to ``log_path``."""
    cache = Path(ctx.cache_dir) / "models"
    key = model_key(ctx, cand.model.passes)
    cached = (cache / f"{key}.pt").exists() or (cache / f"{key}.uncacheable").exists()
    try:
        if not cached:
            built = run_isolated(
                build_job,
                ctx,
                cand.model,
                timeout_s=settings.timeout_per_trial_s,
                what="build",
                log_path=log_path,
            )
            ledgers.append(built.get("ledger") or {})
            if not built.get("ok"):
                return built
        result = run_isolated(
            trial_job,
            ctx,
            cand,
            settings.max_time_s,
            threads=cand.threads,
            timeout_s=settings.timeout_per_trial_s,
            what="trial",
            log_path=log_path,
        )
    except isolation_error as exc:
        message = " ".join(str(exc).split())
        return {"ok": False, "kind": getattr(exc, "reason", "crash"), "message": message}
    except WattwiseError as exc:
        # A job re-raised across the process boundary (e.g. the task failed to load there).
        from wattwise.search._objective import classify_failure

        return {"ok": False, "kind": classify_failure(exc), "message": " ".join(str(exc).split())}
    ledgers.append(result.get("ledger") or {})
    return result  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- rows


def trial_rows(
    trials: Sequence[optuna.trial.FrozenTrial],
    baseline_accuracy: float | None,
    settings: SearchSettings,
) -> list[dict[str, Any]]:
    """One plain dict per trial (the report's row schema), with ``feasible`` and ``pareto``."""
    from optuna.trial import TrialState

    names = {
        TrialState.COMPLETE: "complete",
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
    }
    rows = []
    for t in trials:
        if t.state not in names:
            continue  # WAITING: queued, not tried yet
        attrs = t.user_attrs
        figures = attrs.get("figures") or {}
        accuracy = figures.get("accuracy")
        reason = attrs.get("fail_reason")
        if t.state == TrialState.FAIL and reason is None:
            reason = f"{INTERRUPTED}: its worker stopped sending heartbeats"
        row: dict[str, Any] = {
            "number": t.number,
            "state": names[t.state],
            "fail_reason": reason if t.state != TrialState.COMPLETE else None,
            "label": attrs.get("label"),
            "model": t.params.get("model"),
            "recipe": attrs.get("recipe"),
            "student": attrs.get("student"),
            "deployment": attrs.get("deployment"),
            "accuracy": accuracy,
            "accuracy_drop": (
                baseline_accuracy - accuracy
                if accuracy is not None and baseline_accuracy is not None
                else None
            ),
            **{k: figures.get(k) for k in FIGURES if k != "accuracy"},
            "build_energy_j": attrs.get("build_energy_j"),
            "measure_energy_j": attrs.get("measure_energy_j"),
            "search_energy_source": attrs.get("search_energy_source"),
            "duration_s": attrs.get("duration_s"),
            "worker": (attrs.get("worker") or {}).get("host"),
            # The trial's output (the user's prints, warnings) and, when it failed, its end.
            "log": attrs.get("log"),
            "output_tail": attrs.get("output_tail") if t.state == TrialState.FAIL else None,
            "feasible": False,
            "pareto": False,
        }
        if t.state == TrialState.COMPLETE and row["accuracy_drop"] is not None:
            ok_acc = row["accuracy_drop"] <= settings.max_accuracy_drop + 1e-9
            ok_lat = settings.latency_p90_ms is None or (
                row["latency_ms_p90"] is not None
                and row["latency_ms_p90"] <= settings.latency_p90_ms
            )
            row["feasible"] = bool(ok_acc and ok_lat)
        rows.append(row)
    feasible = [r for r in rows if r["feasible"]]
    for r in feasible:
        r["pareto"] = not any(_dominates(o, r) for o in feasible if o is not r)
    return rows


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    pa = (-a["accuracy"], a["energy_j_per_item"], a["latency_ms_p90"])
    pb = (-b["accuracy"], b["energy_j_per_item"], b["latency_ms_p90"])
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb


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
