"""The worker loop: run trials of a study, one at a time, until its budget is used.

Trials are Optuna's, three objectives (accuracy ↑, J/item ↓, p90 latency ↓) with the
constraints (accuracy drop, latency bound) given to the sampler through ``trial.set_constraint``.
Each worker runs trials one at a time until the budget is used; the budget counts every
finished trial (complete or failed for a reason of its own) across all workers and runs, so
rerunning a command resumes it. A worker whose remaining budget is running in other workers
waits for those trials to end instead of leaving, so that if their worker dies it runs them
again (see :mod:`wattwise.search._liveness`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wattwise.errors import InputError, WattwiseError
from wattwise.results import Figures
from wattwise.search._liveness import (
    INTERRUPTED,
    TrialCounts,
    count_trials,
    counts_for_budget,
    enqueue_retry,
    heartbeat_timing,
    recover_dead_trials,
    worker_identity,
)
from wattwise.search._objective import (
    JobContext,
    Screen,
    build_job,
    classify_failure,
    model_key,
    trial_job,
)
from wattwise.search._optuna import stored_trial
from wattwise.search._space import Candidate, SearchSpace, params_key, restore_power_limits
from wattwise.search._storage import storage_error_types
from wattwise.search._study import DIRECTIONS, SearchSettings, finite_number

if TYPE_CHECKING:
    import optuna

    from wattwise.results import TrialRow

__all__ = [
    "LoopState",
    "TrialRunner",
    "check_loop_args",
    "constraint_values",
    "next_step",
    "run_trials",
]

MAX_CONSECUTIVE_DUPLICATES = 40
# A candidate whose screening measurement shows more than this times the best feasible J/item
# so far stops there: above the estimate's noise between two short measurements (the widest
# spread of our confirmation rounds was 17%), far from the front's low end.
SCREEN_MARGIN = 1.5


class _TrialFailed(WattwiseError):
    """Raised in the objective to fail a trial with its reason (caught by Optuna)."""


# What the loop does next (see next_step).
Step = Literal["done", "wait", "exhausted", "trial"]


@dataclasses.dataclass
class LoopState:
    """What a worker loop did (for the summary)."""

    ran: list[int] = dataclasses.field(default_factory=list)
    duplicates: int = 0  # pruned duplicates in a row: the sampler may have run out of ideas
    exhausted: bool = False
    recovered: list[int] = dataclasses.field(default_factory=list)

    def add(self, trial: optuna.trial.FrozenTrial) -> None:
        """Count a trial this worker finished."""
        from optuna.trial import TrialState

        pruned = trial.state == TrialState.PRUNED
        if pruned and ("duplicate_of" in trial.user_attrs or KNOWN_FAILURE in trial.user_attrs):
            self.duplicates += 1
        elif trial.state != TrialState.PRUNED:  # a budget surplus changes nothing
            self.duplicates = 0
            self.ran.append(trial.number)


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


# Failures the same choice would meet again whatever the batch size, threads or moment: an
# exception (or NaN) building the model, whose recipe then fails for every deployment; a
# deployment that cannot run the model or does not match eager fp32 (the check compares the
# same items at any batch size). A timeout, a kill or running out of memory may not recur, and
# an error or NaN while measuring may belong to one batch size.
DETERMINISTIC_KINDS = {
    "build": frozenset({"error", "nan", "mismatch", "unsupported"}),
    "deploy": frozenset({"mismatch", "unsupported"}),
}
FAILED_STAGE = "failed_stage"  # user attr: "build" (the model) or "deploy" (model × deployment)
KNOWN_FAILURE = "known_failure_of"  # user attr of a trial pruned for a failure seen before


def _known_failure(
    trial: optuna.trial.FrozenTrial, params: dict[str, Any]
) -> tuple[int, str] | None:
    """``(trial number, what failed)`` if ``trial`` failed deterministically for a choice that
    ``params`` repeats: its model (a failed build), or its model on its deployment."""
    from optuna.trial import TrialState

    stage = trial.user_attrs.get(FAILED_STAGE)
    if trial.state != TrialState.FAIL or stage not in ("build", "deploy"):
        return None
    if trial.params.get("model") != params.get("model"):
        return None
    if stage == "build":
        return trial.number, f"model {params['model']}"
    if trial.params.get("deployment") == params.get("deployment"):
        return trial.number, f"model {params['model']} on {params['deployment']}"
    return None


# Enumerating a space to find an untried point stops here (a space file can be large).
MAX_NEIGHBOUR_SCAN = 20_000


def _queue_neighbour(
    study: optuna.Study,
    space: SearchSpace,
    params: dict[str, Any],
    others: list[optuna.trial.FrozenTrial],
) -> None:
    """The sampler proposed a candidate tried already: queue the untried candidate nearest it
    (fewest choices changed; a choice known to fail is skipped), so the next trial measures
    something new instead of the sampler proposing the same point again and again. Nothing
    is queued while a queued trial waits, or when every candidate is taken."""
    import itertools

    from optuna.trial import TrialState

    if any(t.state == TrialState.WAITING for t in others):
        return
    taken = {params_key(t.params) for t in others if _taken(t)}
    failed = [t for t in others if t.state == TrialState.FAIL and FAILED_STAGE in t.user_attrs]
    choices = space.choices()
    best: tuple[int, dict[str, Any]] | None = None
    for combo in itertools.islice(itertools.product(*choices.values()), MAX_NEIGHBOUR_SCAN):
        point = dict(zip(choices, combo, strict=True))
        changed = sum(point[k] != params.get(k) for k in choices)
        if best is not None and changed >= best[0]:
            continue
        if params_key(point) in taken or any(_known_failure(t, point) for t in failed):
            continue
        best = (changed, point)
    if best is not None:
        study.enqueue_trial(best[1], user_attrs={"queued_for": "a duplicate proposal"})


def refine_around_best(
    study: optuna.Study, settings: SearchSettings, baseline_accuracy: float, done: set[int]
) -> None:
    """Queue what the trials so far say is worth measuring next, once nothing queued waits:

    * a rescue (:func:`_float_rescue`): the cheapest candidate that missed the accuracy bound
      only, by all signs, through its quantization, again in a float precision;
    * the best feasible trial's untried neighbours: its int8 with the float layers in the
      other precision, then its other threads and batch sizes (the next batch up and down),
      the same built model deployed a little differently. Once per best (``done`` holds the
      trial numbers refined).

    Seeds and the sampler choose models and runtimes well, but a small budget rarely flips
    the threads of the one that wins: on a 2-vCPU VM a search chose MobileNetV3 on OpenVINO
    int8 at batch 256 on all threads, 582 µJ/item, where NNCF's int8 of it on one thread cost
    123 (docs/BENCHMARKS.md). Nothing is queued while queued trials (the seeds, or an earlier
    call's) wait: the best can change before they run, and the neighbours of a best beaten
    meanwhile spend the budget for nothing. They did on the ResNet-style net's offline search
    of 14 trials: four of its last five went to two early bests' neighbours."""
    from optuna.trial import TrialState

    from wattwise.search._rows import trial_rows

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return
    rows = [
        r
        for r in trial_rows(trials, baseline_accuracy, settings)
        if r.figures.energy_j_per_item is not None
    ]
    params_of = {t.number: dict(t.params) for t in trials}
    feasible = [r for r in rows if r.feasible]
    best = min(feasible, key=lambda r: r.figures.energy_j_per_item or math.inf, default=None)
    taken = {params_key(t.params) for t in trials if _taken(t)}
    failed = [t for t in trials if t.state == TrialState.FAIL and FAILED_STAGE in t.user_attrs]

    def untried(point: dict[str, Any]) -> bool:
        return params_key(point) not in taken and not any(_known_failure(t, point) for t in failed)

    queue: list[tuple[dict[str, Any], str]] = []
    rescue = _float_rescue(rows, best, params_of, settings, taken, failed)
    if rescue is not None:
        queue.append(rescue)
    if best is not None and best.number not in done:
        done.add(best.number)
        params = params_of[best.number]
        batches = sorted(settings.space.batch_sizes)
        near: list[int] = []
        if params["batch_size"] in batches:
            at = batches.index(params["batch_size"])
            near = [batches[i] for i in (at - 1, at + 1) if 0 <= i < len(batches)]
        # Its float layers in the other precision first (OpenVINO's int8 with them in fp32 or
        # in bf16): on MobileNetV3-Small at batch 256 the bf16 ones cost 162 against 193
        # µJ/item at the same accuracy, and which wins depends on the model.
        siblings = _float_layer_siblings(params["deployment"], settings.space.deployments)
        points = [{**params, "deployment": d} for d in siblings]
        points += [
            {**params, "threads": t} for t in settings.space.threads if t != params["threads"]
        ]
        points += [{**params, "batch_size": b} for b in near]
        queue += [(p, f"around the best, trial {best.number}") for p in points]
    for point, why in queue:
        if not untried(point):
            continue
        study.enqueue_trial(point, user_attrs={"queued_for": why})
        taken.add(params_key(point))


# The float precisions a rescue tries, the cheapest first where the space holds it.
FLOAT_PRECISIONS = ("bf16", "fp16", "fp32")
# A quantized candidate is rescued only below this times the best feasible J/item: in bf16 the
# same model cost 1.3 to 1.4x its OpenVINO int8 (the digits CNN's and the ResNet-style net's
# students at batch 256, docs/benchmarks/peers.json), so one above it cannot win in float.
RESCUE_BELOW = 0.75


def _float_rescue(
    rows: Sequence[TrialRow],
    best: TrialRow | None,
    params_of: dict[int, dict[str, Any]],
    settings: SearchSettings,
    taken: set[str],
    failed: list[optuna.trial.FrozenTrial],
) -> tuple[dict[str, Any], str] | None:
    """The cheapest trial well below ``best``'s J/item (:data:`RESCUE_BELOW`) that missed the
    accuracy bound (its latency within its own) in a quantized precision, when its model may
    keep the bound in float, as the same model, batch and threads in the backend's cheapest
    float precision in the space; ``None`` if there is none. Its model may keep it when it did
    in another trial, or when nothing of it missed the bound in float and it missed by at most
    twice the bound: int8 usually costs a fraction of a point, pruning and distillation can
    cost more. Once one float precision of it was tried, it is rescued: the next one is tried
    only if that one failed.

    On the ResNet-style net offline, the pruned half-width student lost 1.1 points in
    OpenVINO's int8 (the bound: 1) at 195 µJ/item, and nothing else of it was tried: the
    search settled for the baseline's int8 at 429, beaten by NNCF's at 421."""
    bound = settings.max_accuracy_drop
    kept = {r.model for r in rows if r.feasible}
    missed_in_float = {
        r.model
        for r in rows
        if r.accuracy_drop is not None
        and r.accuracy_drop > bound + 1e-9
        and _precision(params_of[r.number]) in FLOAT_PRECISIONS
    }
    best_j = best.figures.energy_j_per_item if best is not None else None
    ceiling = RESCUE_BELOW * best_j if best_j is not None else None
    candidates = []
    for r in rows:
        params = params_of[r.number]
        energy = r.figures.energy_j_per_item
        if (
            r.state != "complete"
            or r.accuracy_drop is None
            or r.accuracy_drop <= bound + 1e-9
            or _precision(params) in FLOAT_PRECISIONS
            or energy is None
            or (ceiling is not None and energy >= ceiling)
        ):
            continue
        p90 = r.figures.latency_bound_ms
        if settings.latency_p90_ms is not None and (p90 is None or p90 > settings.latency_p90_ms):
            continue
        if r.model in kept or (
            r.model not in missed_in_float and r.accuracy_drop <= 2 * bound + 1e-9
        ):
            candidates.append((energy, r.number, params))
    backends_in_space = set(settings.space.deployments)
    for _, number, params in sorted(candidates, key=lambda c: (c[0], c[1])):
        backend = params["deployment"].partition("/")[0]
        for precision in FLOAT_PRECISIONS:
            deployment = f"{backend}/{precision}"
            point = {**params, "deployment": deployment}
            if deployment not in backends_in_space or any(_known_failure(t, point) for t in failed):
                continue
            if params_key(point) in taken:
                break  # rescued already: the cheapest float that runs was tried
            return point, f"trial {number}'s model in float: it missed the bound in int8"
    return None


def _precision(params: dict[str, Any]) -> str:
    return str(params.get("deployment", "")).partition("/")[2]


def _float_layer_siblings(deployment: str, deployments: Sequence[str]) -> list[str]:
    """The deployments among ``deployments`` with the same backend and the same calibrated int8
    as ``deployment``, its float layers in another precision (``openvino/int8`` and
    ``openvino/int8-bf16``)."""
    from wattwise.deploy import CALIBRATED_INT8

    backend, _, precision = deployment.partition("/")
    if precision not in CALIBRATED_INT8:
        return []
    return [
        f"{backend}/{p}"
        for p in CALIBRATED_INT8
        if p != precision and f"{backend}/{p}" in deployments
    ]


def _taken(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial holds a place in the budget and its candidate: finished and counted, or running."""
    from optuna.trial import TrialState

    return counts_for_budget(trial) or trial.state == TrialState.RUNNING


@dataclasses.dataclass(eq=False)
class TrialRunner:
    """The objective a worker gives Optuna: one call runs one trial, from its candidate to what
    it measured.

    A call signs the trial with this worker's identity, has the sampler choose a candidate, and
    prunes the trial when the budget is taken by the trials before it or the candidate was
    tried already (``fail_reason`` says which). Otherwise it runs the candidate in child
    processes (:func:`build_job` when the model is not cached yet, then :func:`trial_job`) and
    records its figures, energy and constraints; a failing candidate fails the trial with its
    reason. A ``KeyboardInterrupt`` or a failing database fails the trial as interrupted,
    queues its candidate again and propagates.

    Attributes:
        started: the numbers of the trials it was called for since :meth:`run_one` last began.
    """

    study: optuna.Study
    settings: SearchSettings
    ctx: JobContext
    _: dataclasses.KW_ONLY
    baseline_accuracy: float
    budget: int
    on_start: Callable[[int, str], None] | None = None
    started: list[int] = dataclasses.field(default_factory=list, init=False)
    _identity: dict[str, Any] = dataclasses.field(default_factory=worker_identity, init=False)
    _lost_storage: tuple[type[Exception], ...] = dataclasses.field(
        default_factory=storage_error_types, init=False
    )

    def run_one(self) -> list[optuna.trial.FrozenTrial]:
        """Have Optuna run one trial with this objective; returns the trials it ran, ended."""
        self.started.clear()
        self.study.optimize(self, n_trials=1, catch=(_TrialFailed,), gc_after_trial=False)
        finished = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        return [finished[n] for n in self.started if n in finished]

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        self.started.append(trial.number)
        ledgers: list[dict[str, Any]] = []
        t0 = time.monotonic()
        try:
            return self._run(trial, ledgers, t0)
        except KeyboardInterrupt:
            self._give_back(trial, ledgers, t0, "stopped by Ctrl-C")
            raise
        except self._lost_storage:
            self._give_back(trial, ledgers, t0, "its worker lost the storage")
            raise

    def _give_back(
        self, trial: optuna.Trial, ledgers: list[dict[str, Any]], t0: float, why: str
    ) -> None:
        """Wherever Ctrl-C or a database failure lands in the trial: mark it, keep its energy,
        queue it again. With the database still down this fails too; the trial stays RUNNING
        and the next run on this machine, seeing this process gone, does it."""
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_reason", f"{INTERRUPTED}: {why}")
            _record_energy(trial, ledgers, time.monotonic() - t0)
            enqueue_retry(self.study, stored_trial(self.study, trial))

    def _run(
        self, trial: optuna.Trial, ledgers: list[dict[str, Any]], t0: float
    ) -> tuple[float, float, float]:
        trial.set_user_attr("worker", self._identity)
        params = _suggest(trial, self.settings.space)
        self._prune_if_taken(trial, params)
        cand, log = self._start(trial, params)
        screen = self._screen(trial.number)
        result = _run_candidate(self.ctx, cand, self.settings, ledgers, log, screen)
        _record_energy(trial, ledgers, time.monotonic() - t0)
        return self._record(trial, result, log)

    def _prune_if_taken(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        """Prune ``trial`` if the trials before it take the budget, or it repeats a candidate
        finished or running."""
        import optuna

        others = [t for t in self.study.get_trials(deepcopy=False) if t.number != trial.number]
        ahead = sum(1 for t in others if t.number < trial.number and _taken(t))
        if ahead >= self.budget:
            trial.set_user_attr("fail_reason", "budget reached")
            raise optuna.TrialPruned("budget reached")
        key = params_key(params)
        for t in others:
            if _taken(t) and params_key(t.params) == key:
                trial.set_user_attr("duplicate_of", t.number)
                trial.set_user_attr("fail_reason", f"duplicate of trial {t.number}")
                _queue_neighbour(self.study, self.settings.space, params, others)
                raise optuna.TrialPruned(f"duplicate of trial {t.number}")
        for t in others:
            known = _known_failure(t, params)
            if known is not None:
                number, what = known
                why = f"{what} failed in trial {number} and would again"
                trial.set_user_attr(KNOWN_FAILURE, number)
                trial.set_user_attr("fail_reason", why)
                raise optuna.TrialPruned(why)

    def _screen(self, number: int) -> Screen:
        """What stops a candidate at its screening measurement: a metric below the bound, or
        J/item above :data:`SCREEN_MARGIN` times the best feasible trial's so far."""
        from wattwise.search._rows import trial_rows

        rows = trial_rows(
            [t for t in self.study.get_trials(deepcopy=False) if t.number != number],
            self.baseline_accuracy,
            self.settings,
        )
        best = min(
            (
                r.figures.energy_j_per_item
                for r in rows
                if r.feasible and r.figures.energy_j_per_item is not None
            ),
            default=None,
        )
        return Screen(
            energy_above_j=best * SCREEN_MARGIN if best is not None else None,
            min_accuracy=self.baseline_accuracy - self.settings.max_accuracy_drop,
        )

    def _start(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[Candidate, str | None]:
        """The trial's candidate and log file, recorded on the trial before it runs."""
        cand = Candidate.from_params(self.settings.space, params, device=self.ctx.device)
        trial.set_user_attr("label", cand.label)
        trial.set_user_attr("recipe", cand.recipe)
        trial.set_user_attr("student", cand.model.student)
        trial.set_user_attr("deployment", cand.deployment)
        log = self.ctx.log_path(f"trial-{trial.number:04d}")
        if log is not None:
            trial.set_user_attr("log", log)
        if self.on_start is not None:
            self.on_start(trial.number, cand.label)
        return cand, log

    def _record(
        self, trial: optuna.Trial, result: dict[str, Any], log: str | None
    ) -> tuple[float, float, float]:
        """Record what the candidate measured; fail the trial with its reason if it failed."""
        from wattwise.measure._isolate import log_tail

        if not result.get("ok"):
            kind = result.get("kind", "error")
            reason = f"{kind}: {result.get('message', '')}"
            stage = result.get("stage", "deploy")
            if kind in DETERMINISTIC_KINDS[stage]:
                trial.set_user_attr(FAILED_STAGE, stage)
            tail = log_tail(log) if log is not None else ""
            if tail:  # what the user's code printed last: often the why
                trial.set_user_attr("output_tail", tail)
            trial.set_user_attr("fail_reason", reason)
            raise _TrialFailed(reason)
        figures = Figures.from_dict(result, name="the trial's figures")
        trial.set_user_attr("figures", figures.to_dict())
        trial.set_user_attr("fidelity", result.get("fidelity") or "full")
        trial.set_user_attr("measurement", result.get("measurement"))
        trial.set_user_attr("check", result.get("check"))
        trial.set_user_attr("notes", list(result.get("notes") or [])[:10])
        # ≤ 0 means satisfied; the sampler prefers feasible trials when it proposes the next.
        accuracy, energy, latency = (
            figures.accuracy,
            figures.energy_j_per_item,
            figures.latency_bound_ms,
        )
        if accuracy is None or energy is None or latency is None:
            raise _TrialFailed("error: the trial returned no accuracy, energy or latency")
        c_acc, c_lat = constraint_values(accuracy, self.baseline_accuracy, latency, self.settings)
        trial.set_constraint("accuracy_drop", c_acc)
        trial.set_constraint("latency_p90", c_lat)
        return (float(accuracy), float(energy), float(latency))


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

    Each trial is one call of a :class:`TrialRunner`. A ``KeyboardInterrupt`` or a failing
    database (see :func:`~wattwise.search._storage.storage_errors`) fails the trial in flight
    as interrupted, queues its candidate again and propagates.

    Raises:
        InputError: ``budget`` or ``baseline_accuracy`` is no valid number, or ``study`` does
            not have the search's three objectives.
    """
    check_loop_args(study, baseline_accuracy=baseline_accuracy, budget=budget)
    runner = TrialRunner(
        study, settings, ctx, baseline_accuracy=baseline_accuracy, budget=budget, on_start=on_start
    )
    state = LoopState(recovered=recover_dead_trials(study))
    refined: set[int] = set()
    while True:
        step = next_step(count_trials(study.get_trials(deepcopy=False)), state.duplicates, budget)
        if step == "done":
            break
        if step == "exhausted":
            state.exhausted = True
            break
        if step == "wait":
            time.sleep(_wait_poll_s())
        else:
            for trial in runner.run_one():
                state.add(trial)
                if on_end is not None:
                    on_end(trial)
            refine_around_best(study, settings, baseline_accuracy, refined)
        state.recovered += recover_dead_trials(study)
    return state


def check_loop_args(study: optuna.Study, *, baseline_accuracy: float, budget: int) -> None:
    """Refuse what the loop cannot run with, before any trial is started.

    Raises:
        InputError: naming the argument.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be an integer >= 1, got {budget!r}")
    if not finite_number(baseline_accuracy):
        raise InputError(f"baseline_accuracy must be a finite number, got {baseline_accuracy!r}")
    directions = tuple(d.name.lower() for d in study.directions)
    if directions != DIRECTIONS:
        # Optuna would fail every trial (three values for other directions) with no reason of
        # ours: each taken for interrupted, never counted, the loop would run on for ever.
        raise InputError(
            f"study {study.study_name!r} must have the directions {', '.join(DIRECTIONS)} "
            f"(accuracy, J/item, p90 latency), not {', '.join(directions)}"
        )


def next_step(counts: TrialCounts, duplicates: int, budget: int) -> Step:
    """What a worker does next, from the study's trials and the duplicates it pruned in a row:
    stop (``done``, or ``exhausted`` when the sampler proposes only what was tried), ``wait``
    for trials running in other workers, or run a ``trial``."""
    if counts.counted >= budget:
        return "done"
    stuck = duplicates >= MAX_CONSECUTIVE_DUPLICATES and not counts.waiting
    if counts.running and (stuck or counts.counted + counts.running >= budget):
        # What is left of the budget (or all the sampler still proposes) is running in other
        # workers. Leaving now would leave the budget short if one of them died: wait until
        # their trials end, or their workers are found dead and the trials are queued again,
        # to be run here.
        return "wait"
    if stuck:
        return "exhausted"
    return "trial"


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
    log_path: str | None = None,
    screen: Screen | None = None,
) -> dict[str, Any]:
    """Build the model if it isn't cached (all cores), then run the trial (its own threads),
    both writing their output to ``log_path``."""
    from wattwise.measure import IsolationError, run_isolated

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
                return {**built, "stage": "build"}
        result = run_isolated(
            trial_job,
            ctx,
            cand,
            settings.max_time_s,
            screen,
            threads=cand.threads,
            timeout_s=settings.timeout_per_trial_s,
            what="trial",
            log_path=log_path,
        )
    except IsolationError as exc:
        message = " ".join(str(exc).split())
        return {"ok": False, "kind": getattr(exc, "reason", "crash"), "message": message}
    except WattwiseError as exc:
        # A job re-raised across the process boundary (e.g. the task failed to load there).
        return {"ok": False, "kind": classify_failure(exc), "message": " ".join(str(exc).split())}
    finally:
        restore_power_limits(ctx.device)  # a child killed mid-measurement leaves its limit
    ledgers.append(result.get("ledger") or {})
    return result  # type: ignore[no-any-return]
