"""Which trials lost their worker, and running them again; what counts toward the budget.

Each worker signs the trials it runs with its :func:`worker_identity` (host, pid, process start)
and beats a heartbeat for the trial in flight. Trials that died with their worker (kill -9, a
lost machine) are failed as *interrupted*, are not counted, and their candidate is queued
again: a dead worker on this machine is seen at once (its process is gone), one elsewhere when
its heartbeat goes stale (after :data:`GRACE_PERIOD_S`, or ``WATTWISE_HEARTBEAT_GRACE_S``
seconds). The budget counts every finished trial (complete, or failed for a reason of its own).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError
from wattwise.search._optuna import stored_trial, study_storage, trial_id

if TYPE_CHECKING:
    import optuna

__all__ = [
    "GRACE_PERIOD_ENV",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "INTERRUPTED",
    "TrialCounts",
    "count_trials",
    "counts_for_budget",
    "enqueue_retry",
    "heartbeat_timing",
    "is_interrupted",
    "recover_dead_trials",
    "retry_stale",
    "worker_identity",
]

HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 90
# Overrides GRACE_PERIOD_S (whole seconds >= 2), e.g. for tests, or a cluster that wants a lost
# worker's trial back sooner. Set it alike for every worker of a study: the heartbeat interval
# follows it, and a worker beating at the default interval looks dead to a shorter grace period.
GRACE_PERIOD_ENV = "WATTWISE_HEARTBEAT_GRACE_S"
INTERRUPTED = "interrupted"


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


# ----------------------------------------------------------------------------- workers


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


# ----------------------------------------------------------------------------- retries


def enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
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


def retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna's stale-heartbeat callback: the trial is already failed; queue it again."""
    enqueue_retry(study, trial)


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
        optuna.storages.fail_stale_trials(study)  # calls retry_stale for each
    host = socket.gethostname()
    grace_s = heartbeat_timing()[1]
    recovered = []
    storage = study_storage(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = _why_dead(trial, host, grace_s)
        if why is None:
            continue
        try:
            storage.set_trial_user_attr(trial_id(trial), "fail_reason", f"{INTERRUPTED}: {why}")
            storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # someone else finished it first
        enqueue_retry(study, stored_trial(study, trial))
        recovered.append(trial.number)
    return recovered
