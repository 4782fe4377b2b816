"""``optimize``: the energy-aware search, end to end, and the results it writes.

The loop (see docs/architecture.md): train and measure the baseline (fp32 eager) → run trials (each a
candidate = recipe × optional student × deployment, built, evaluated, deployed with its
equivalence check and measured, in a child process) → the Pareto front and the best feasible
candidate (lowest J/item within the accuracy and latency bounds) → export the best as an
artifact → ``results.json``, ``trials.csv`` and ``report.html`` in the output directory.

The payback ledger: every phase of the search (training, compression, calibration,
compiling, measuring, exporting) is metered in the process that does the work, and
``payback_items = search_energy_j / (baseline J/item − best J/item)`` says after how many
items served the search has paid for itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError
from wattwise.results import (
    RESULTS_SCHEMA,
    BaselineEntry,
    BestEntry,
    Confirmation,
    ConfirmedCandidate,
    Figures,
    FrontEntry,
    Meter,
    Results,
    SameBatchEntry,
    TrialRow,
)
from wattwise.search._confirm import DEFAULT_ROUNDS, confirm, confirm_plan
from wattwise.search._liveness import count_trials, counts_for_budget
from wattwise.search._objective import (
    JOB_IMPORTS,
    JobContext,
    TaskRef,
    baseline_job,
    export_job,
    task_id,
)
from wattwise.search._outdir import check_out_dir
from wattwise.search._progress import SearchProgress, describe_figures
from wattwise.search._rows import trial_rows
from wattwise.search._space import (
    Candidate,
    SearchSpace,
    default_space,
    restore_power_limits,
    seed_params,
)
from wattwise.search._storage import default_storage, open_storage, storage_errors
from wattwise.search._study import BASELINE_ATTR, SearchSettings, open_study, quiet_optuna
from wattwise.search._trials import run_trials

if TYPE_CHECKING:
    import optuna

    from wattwise.tasks import Task, TrainConfig

__all__ = ["DEFAULT_TRIALS", "OptimizeResult", "optimize", "report_study", "run_worker"]

# The default search: sized so that on a 2-core CPU the digits task (training included) ends
# in a few minutes, leaving room under the 10-minute budget for a busier machine.
DEFAULT_TRIALS = 20
DEFAULT_MAX_TIME_S = 2.0
DEFAULT_TIMEOUT_PER_TRIAL_S = 300.0
BASELINE_TIMEOUT_S = 3600.0
CONFIRMATION_ATTR = "wattwise_confirmation"
CACHE_ATTR = "wattwise_cache_dir"  # where optimize cached the built models, for report --confirm
PUBLISH_ATTR = "wattwise_publish"  # grid intensity and price given to optimize, for report/worker
# Overrides the default number of confirmation rounds (0 skips the stage: no ratio is then
# published). The test suite sets it to 0 for the many tests that check other things.
CONFIRM_ROUNDS_ENV = "WATTWISE_CONFIRM_ROUNDS"
DEFAULT_PRICE_PER_KWH = 0.15
DEFAULT_CURRENCY = "USD"


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize` found.

    Attributes:
        document: the ``results.json`` document (:class:`~wattwise.results.Results`).
        rows: one :class:`~wattwise.results.TrialRow` per trial (the rows of ``trials.csv``).
        out_dir: the output directory.
        paths: ``json``, ``csv``, ``html`` (and ``artifact`` when one was exported).
        interrupted: the search was stopped (Ctrl-C or SIGTERM) before its budget was used.
        interrupted_by: ``"SIGINT"`` or ``"SIGTERM"`` when interrupted.
    """

    document: Results
    rows: tuple[TrialRow, ...]
    out_dir: Path
    paths: dict[str, Path]
    interrupted: bool = False
    interrupted_by: str | None = None

    @property
    def results(self) -> dict[str, Any]:
        """The ``results.json`` document as plain JSON values (what the file holds)."""
        return self.document.to_dict()

    @property
    def trials(self) -> list[dict[str, Any]]:
        """The trial rows as plain dicts (what ``trials.csv`` holds)."""
        return [row.to_dict() for row in self.rows]

    @property
    def baseline(self) -> BaselineEntry:
        return self.document.baseline

    @property
    def best(self) -> BestEntry | None:
        return self.document.best

    @property
    def energy_ratio(self) -> float | None:
        """fp32 eager batch-1 J/item over best J/item, from the confirmation rounds."""
        return self.document.energy_ratio

    @property
    def energy_ratio_same_batch(self) -> float | None:
        """fp32 eager J/item at the winner's batch size and threads over best J/item (the
        saving compression and the runtime give beyond batching), from the same rounds."""
        return self.document.energy_ratio_same_batch

    @property
    def payback_items(self) -> float | None:
        return self.document.payback_items


def _load_task(task: Any) -> tuple[Task, str | None]:
    from wattwise.tasks import Task, load_task

    if isinstance(task, Task):
        return task, None
    if isinstance(task, str):
        return load_task(task), task.strip()
    raise InputError(
        f"task must be a wattwise Task or a name / 'package.module:factory', got {type(task).__name__}"
    )


def seed_budget(trials: int) -> int:
    """How many seeds a search of ``trials`` starts with: two thirds of the budget (at least
    6), so the rest goes to the sampler and to refining the best (the seeds come in order of
    how likely they are to win, so the cut drops the least likely)."""
    return max(6, (2 * int(trials)) // 3) if isinstance(trials, int) else 6


def _training_dict(training: Any) -> dict[str, Any] | None:
    from wattwise.tasks import TrainConfig

    if training is None:
        return None
    if not isinstance(training, TrainConfig):
        raise InputError(f"training must be a TrainConfig or None, got {type(training).__name__}")
    return training.to_dict()


def optimize(
    task: Task | str = "digits",
    *,
    max_accuracy_drop: float = 0.01,
    latency_p90_ms: float | None = None,
    scenario: str = "offline",
    trials: int = DEFAULT_TRIALS,
    storage: str | None = None,
    study: str | None = None,
    out: str | os.PathLike[str] = "wattwise-out",
    device: str = "cpu",
    seed: int = 0,
    timeout_per_trial_s: float = DEFAULT_TIMEOUT_PER_TRIAL_S,
    max_time_s: float = DEFAULT_MAX_TIME_S,
    space: SearchSpace | None = None,
    meter: str = "auto",
    export: bool = True,
    progress: bool | None = None,
    on_trial: Callable[[TrialRow], None] | None = None,
    confirm_rounds: int | None = None,
    grid_intensity_g_per_kwh: float | None = None,
    price_per_kwh: float | None = None,
    currency: str = DEFAULT_CURRENCY,
    training: TrainConfig | None = None,
) -> OptimizeResult:
    """Search compression recipes × students × deployments for the least energy per item.

    Args:
        task: a :class:`~wattwise.tasks.Task`, a built-in task name, or ``"pkg.mod:factory"``
            (workers on other machines need a name or spec, not an object).
        max_accuracy_drop: the largest accepted drop of the task metric vs the baseline
            (0.01 = one point).
        latency_p90_ms: bound on the p90 latency of one call (one batch), or ``None``.
        scenario: ``offline`` (all items up front: batch size is free) or ``online`` (one query
            at a time: batch 1).
        trials: the budget: finished trials, counted across runs and workers. Rerunning with
            the same storage and study resumes: completed trials are kept and counted.
        storage: an Optuna RDB URL; default ``sqlite:///OUT/wattwise.db``. A
            ``postgresql://`` URL lets ``wattwise worker`` on other machines join.
        study: the study name; default ``"<task>-<scenario>"``.
        out: output directory: ``results.json``, ``trials.csv``, ``report.html``, the best
            deployment as ``artifact/``, and ``cache/`` (built models, reused across runs).
        device: ``cpu`` or ``cuda[:N]``: where candidates run and are measured.
        seed: seeds training, compression and the sampler.
        timeout_per_trial_s: a trial (build + measure) running longer is killed and failed.
        max_time_s: soft cap on measuring each candidate.
        space: the candidate space; default :func:`default_space` for the task and scenario.
        meter: energy meter (``"auto"``: a counter where there is one, else the labelled
            estimate).
        export: export the best deployment to ``OUT/artifact``.
        progress: show progress on stderr (default: a bar on a terminal, lines otherwise);
            ``False`` for silence.
        on_trial: called with each finished trial's row (e.g. to log it elsewhere).
        confirm_rounds: rounds of the confirmation stage (default 3, or
            ``WATTWISE_CONFIRM_ROUNDS``; at least 3, or 0 to skip it): the baseline, fp32 eager
            at the winner's batch and threads, the winner and the runner-up are measured again
            side by side, and the published figures and ratios are their medians. Skipped, no
            ratio is published.
        grid_intensity_g_per_kwh: grid carbon intensity for the CO2e figures (default: the
            world average, or ``WATTWISE_GRID_G_PER_KWH``).
        price_per_kwh: electricity price for the cost figures (default 0.15).
        currency: the price's currency (a label only).
        training: how the search's own fine-tunes train (distillation, pruning): e.g.
            ``ww.tune_training(...).best_config``, so the energy the search spends shrinks;
            ``None``: the task's recipe. The baseline is trained with the recipe either way.

    Returns:
        An :class:`OptimizeResult`. With Ctrl-C or SIGTERM, the trial in flight is failed as
        interrupted (it is queued again for the next run) and the partial results are returned
        with ``interrupted=True``.

    Raises:
        InputError: bad arguments, a task that can't be loaded, an unwritable output
            directory, an unreachable storage, or a study name used for another task.

    Example:
        >>> result = wattwise.optimize("digits", max_accuracy_drop=0.01, trials=20)
        >>> result.best.figures.energy_j_per_item, result.best.figures.energy_source
        >>> result.payback_items
    """
    from wattwise.measure import check_device

    # Cheap checks first: a bad argument must fail before anything is trained or written.
    if not isinstance(scenario, str) or scenario not in ("offline", "online"):
        raise InputError(f"scenario must be 'offline' or 'online', got {scenario!r}")
    device = check_device(device)
    restore_power_limits(device)  # a search killed last time may have left one set
    if study is not None and (not isinstance(study, str) or not study.strip()):
        raise InputError(f"study must be a non-empty name, got {study!r}")
    publish = _publish_settings(confirm_rounds, grid_intensity_g_per_kwh, price_per_kwh, currency)
    task_obj, spec = _load_task(task)
    out_dir = Path(out).expanduser()
    space = space if space is not None else default_space(task_obj, scenario, device)
    settings = SearchSettings(
        task_spec=spec,
        task_name=task_obj.name,
        task_id=task_id(task_obj, spec),
        scenario=scenario,
        max_accuracy_drop=float(max_accuracy_drop)
        if isinstance(max_accuracy_drop, int | float) and not isinstance(max_accuracy_drop, bool)
        else max_accuracy_drop,
        latency_p90_ms=latency_p90_ms,
        trials=trials,
        space=space,
        seed=seed,
        device=device,
        max_time_s=max_time_s,
        timeout_per_trial_s=timeout_per_trial_s,
        meter=meter,
        # A Task that carries its own train_config trains its fine-tunes with it.
        training=_training_dict(training if training is not None else task_obj.train_config),
    )
    created = check_out_dir(out_dir, storage=storage)
    url = storage if storage is not None else default_storage(out_dir)
    name = study.strip() if study else f"{task_obj.name}-{scenario}"
    try:
        store = open_storage(url)
        with quiet_optuna(), storage_errors(url):
            the_study, settings = open_study(
                store,
                name,
                settings,
                url=url,
                seeds=seed_params(space, generative=task_obj.generate is not None)[
                    : seed_budget(trials)
                ],
            )
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    ctx = _job_context(settings, TaskRef(spec, None if spec is not None else task_obj), out_dir)
    return _search(
        the_study,
        settings,
        ctx,
        out_dir=out_dir,
        url=url,
        export=export,
        progress=progress,
        on_trial=on_trial,
        publish=publish,
    )


def run_worker(
    storage: str,
    study: str,
    *,
    out: str | os.PathLike[str] = "wattwise-worker",
    task: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
    confirm_rounds: int | None = None,
) -> OptimizeResult:
    """Join an existing study (``wattwise worker``): run its trials on this machine until its
    budget is used, then write results from all workers' trials to ``out``.

    Args:
        storage: the study's RDB URL (usually ``postgresql://...``).
        study: the study's name.
        out: this worker's output directory (its model cache and a copy of the results).
        task: the task spec, needed only when the study was started from a Python ``Task``.
        device: where this worker measures (default: the study's device).
        confirm_rounds: as for :func:`optimize`: this worker's results are confirmed too.
    """
    from wattwise.measure import check_device

    publish = _publish_settings(confirm_rounds, None, None, DEFAULT_CURRENCY)

    with quiet_optuna(), storage_errors(storage):
        store = open_storage(storage)
        the_study, settings = open_study(store, study, None, url=storage, worker_salt=os.getpid())
    spec = settings.task_spec or task
    if spec is None:
        raise InputError(
            f"study {study!r} was started from a Python Task object; pass --task SPEC to the worker"
        )
    task_obj, _ = _load_task(spec)
    if task_obj.name != settings.task_name:
        raise InputError(
            f"--task {spec!r} is task {task_obj.name!r}, but study {study!r} searches {settings.task_name!r}"
        )
    out_dir = Path(out).expanduser()
    check_out_dir(out_dir, storage=storage)
    ctx = _job_context(
        settings, TaskRef(spec), out_dir, device=check_device(device or settings.device)
    )
    return _search(
        the_study,
        settings,
        ctx,
        out_dir=out_dir,
        url=storage,
        export=False,
        progress=progress,
        on_trial=None,
        publish=publish,
    )


def _job_context(
    settings: SearchSettings,
    task: TaskRef,
    out_dir: Path,
    *,
    device: str | None = None,
    cache_dir: str | None = None,
) -> JobContext:
    """What this run's jobs need: the study's task, seed and meter, on ``device`` (default
    the study's), caching models in ``cache_dir`` (default ``OUT/cache``), logging to
    ``OUT/logs``."""
    return JobContext(
        task=task,
        task_id=settings.task_id,
        cache_dir=cache_dir if cache_dir is not None else str(out_dir / "cache"),
        seed=settings.seed,
        device=device if device is not None else settings.device,
        meter=settings.meter,
        log_dir=str(out_dir / "logs"),
        train_config=settings.training,
    )


@dataclasses.dataclass(frozen=True)
class _Publish:
    """How the results are published: the confirmation's rounds, and CO2e and cost factors."""

    confirm_rounds: int
    grid_intensity_g_per_kwh: float
    grid_intensity_source: str
    price_per_kwh: float
    price_source: str
    currency: str

    def costs(self) -> dict[str, Any]:
        """The CO2e and cost factors, by the names results.json gives them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "confirm_rounds"}

    def stored_in(self, the_study: optuna.Study, *, save: bool) -> _Publish:
        """The grid intensity and price the study was started with, unless given here; with
        ``save``, what is given here is kept for the study's later reports and workers."""
        stored = the_study.user_attrs.get(PUBLISH_ATTR)
        given: dict[str, Any] = {}
        if self.grid_intensity_source == "user":
            given.update(grid_intensity_g_per_kwh=self.grid_intensity_g_per_kwh)
            given.update(grid_intensity_source="user")
        if self.price_source == "user":
            given.update(price_per_kwh=self.price_per_kwh, price_source="user")
            given.update(currency=self.currency)
        merged = self
        if isinstance(stored, dict):
            with contextlib.suppress(TypeError, ValueError):  # written by another version
                merged = dataclasses.replace(self, **{**stored, **given})
        if save and (given or not isinstance(stored, dict)):
            the_study.set_user_attr(PUBLISH_ATTR, merged.costs())
        return merged


def _number_arg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _publish_settings(
    rounds: Any, grid: float | None, price: float | None, currency: Any
) -> _Publish:
    from wattwise.measure._carbon import grid_intensity

    if rounds is None:
        env = os.environ.get(CONFIRM_ROUNDS_ENV)
        try:
            rounds = int(env) if env else DEFAULT_ROUNDS
        except ValueError:
            raise InputError(f"{CONFIRM_ROUNDS_ENV}={env!r} is not a whole number") from None
    if isinstance(rounds, bool) or not isinstance(rounds, int) or (rounds != 0 and rounds < 3):
        raise InputError(
            f"confirm_rounds must be 0 (skip the confirmation) or at least 3, got {rounds!r}"
        )
    g, g_source = grid_intensity(None if grid is None else _number_arg(grid, "grid intensity"))
    if price is None:
        p, p_source = DEFAULT_PRICE_PER_KWH, "default"
    else:
        p, p_source = _number_arg(price, "price per kWh"), "user"
        if p < 0:
            raise InputError(f"price per kWh must be >= 0, got {price!r}")
    if not isinstance(currency, str) or not currency.strip() or len(currency) > 8:
        raise InputError(f"currency must be a short label such as USD, got {currency!r}")
    return _Publish(rounds, g, g_source, p, p_source, currency.strip())


def _ensure_baseline(
    the_study: optuna.Study, settings: SearchSettings, ctx: JobContext, progress: SearchProgress
) -> dict[str, Any]:
    """The study's baseline: measured once (stored in the study), reused by every run."""
    from wattwise.measure import preload, run_isolated

    preload(*JOB_IMPORTS)  # the first child of a search starts the fork server

    stored = the_study.user_attrs.get(BASELINE_ATTR)
    cache = Path(ctx.cache_dir) / "models"
    if isinstance(stored, dict) and stored.get("ok"):
        return stored
    progress.message("training and measuring the baseline (fp32 eager, batch 1) ...")
    result = run_isolated(
        baseline_job,
        ctx,
        1,
        settings.max_time_s,
        timeout_s=BASELINE_TIMEOUT_S,
        what="baseline",
        log_path=ctx.log_path("baseline"),
    )
    cache.mkdir(parents=True, exist_ok=True)
    the_study.set_user_attr(BASELINE_ATTR, result)
    return result  # type: ignore[no-any-return]


def _best(rows: list[TrialRow]) -> TrialRow | None:
    ranked = _ranked(rows)
    return ranked[0] if ranked else None


def _ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """Feasible rows, lowest J/item first; ties (within the same figure) go to the higher
    accuracy, then the lower p90. A feasible row is complete: its figures are all there."""

    def key(r: TrialRow) -> tuple[float, float, float, int]:
        f = r.figures
        return (
            float(f.energy_j_per_item or 0.0),
            -float(f.accuracy or 0.0),
            float(f.latency_bound_ms or 0.0),
            r.number,
        )

    return sorted((r for r in rows if r.feasible), key=key)


def _runner_up(rows: list[TrialRow], best: TrialRow) -> TrialRow | None:
    """The next feasible candidate after ``best`` by J/item, preferring one on the front; a
    trial that repeats the winner's own candidate is no runner-up."""
    others = [r for r in _ranked(rows) if r.label != best.label]
    on_front = [r for r in others if r.pareto]
    for group in (on_front, others):
        if group:
            return group[0]
    return None


@contextlib.contextmanager
def _interrupt_signals() -> Iterator[list[str]]:
    """SIGTERM (what ``timeout``, CI runners and containers send) stops the search the way
    Ctrl-C does: as a ``KeyboardInterrupt`` at the point it arrives, so the trial in flight is
    failed as interrupted and the outputs are written. Yields a list that receives the name
    of the signal that stopped it."""
    got: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield got  # signal handlers can only be set from the main thread
        return

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # SIGINT keeps Python's own handler unless it was ignored (a background job): then the
    # caller asked for Ctrl-C to be ignored, and so it is.
    signal.signal(signal.SIGTERM, on_signal)
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_signal)
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _search(
    the_study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    *,
    out_dir: Path,
    url: str,
    export: bool,
    progress: bool | None,
    on_trial: Callable[[TrialRow], None] | None,
    publish: _Publish,
) -> OptimizeResult:
    """Run the search; a database failing under it (a server restart) becomes one line."""
    with storage_errors(url), _interrupt_signals() as stopped_by:
        import io

        publish = publish.stored_in(the_study, save=True)
        if the_study.user_attrs.get(CACHE_ATTR) is None:
            the_study.set_user_attr(CACHE_ATTR, str(Path(ctx.cache_dir).resolve()))

        start = time.monotonic()
        stream = io.StringIO() if progress is False else None
        counts = count_trials(the_study.get_trials(deepcopy=False))
        interrupted = False
        notes: list[str] = []
        ledgers: dict[str, Mapping[str, Any]] = {}
        confirmation: Confirmation | None = None
        with SearchProgress(settings.trials, done=counts.counted, stream=stream) as bar:
            baseline = _ensure_baseline(the_study, settings, ctx, bar)
            base = Figures.from_dict(baseline, name="the study's baseline")
            base_acc = float(baseline["accuracy"])
            bar.message(f"baseline: {describe_figures(base)}")

            def on_end(trial: optuna.trial.FrozenTrial) -> None:
                rows = trial_rows(the_study.get_trials(deepcopy=False), base_acc, settings)
                row = next((r for r in rows if r.number == trial.number), None)
                if row is None:
                    return
                bar.trial_finished(row, _best(rows), counted=counts_for_budget(trial))
                if on_trial is not None:
                    on_trial(row)

            try:
                with quiet_optuna():
                    loop = run_trials(
                        the_study,
                        settings,
                        ctx,
                        baseline_accuracy=base_acc,
                        budget=settings.trials,
                        on_start=bar.trial_started,
                        on_end=on_end,
                    )
                if loop.exhausted:
                    bar.message(
                        "stopped early: the sampler keeps proposing candidates already tried"
                    )
            except KeyboardInterrupt:
                interrupted = True
                bar.message(
                    "interrupted: the trial in flight is failed and queued for the next run"
                )

            rows = trial_rows(the_study.get_trials(deepcopy=False), base_acc, settings)
            best = _best(rows)
            if best is not None and not interrupted and publish.confirm_rounds:
                try:
                    confirmed = _stored_confirmation(
                        the_study, rows, best, publish.confirm_rounds
                    ) or _run_confirmation(
                        the_study, settings, ctx, rows, best, publish.confirm_rounds, bar
                    )
                except KeyboardInterrupt:
                    interrupted = True
                    bar.message("interrupted during the confirmation: no ratio is published")
                else:
                    confirmation, ledgers["confirm"] = confirmed
                    best = _confirmed_best(rows, confirmation) or best
            artifact: Path | None = None
            if best is not None and export and not interrupted:
                try:
                    artifact, ledgers["export"], note = _export_best(
                        the_study, settings, ctx, best, out_dir, bar
                    )
                except KeyboardInterrupt:
                    interrupted = True
                    note = "interrupted while exporting: the best deployment was not exported"
                if note:
                    notes.append(note)
        if interrupted:
            how = stopped_by[0] if stopped_by else "SIGINT"
            notes.insert(
                0,
                f"interrupted ({'Ctrl-C' if how == 'SIGINT' else how}): rerun the same command "
                "to resume the search",
            )
        results = _results(
            the_study,
            settings,
            baseline,
            rows,
            best,
            artifact,
            url=url,
            ledgers=ledgers,
            confirmation=confirmation,
            publish=publish,
            elapsed_s=time.monotonic() - start,
            interrupted=interrupted,
            notes=notes,
        )
        rows = _at_grid(rows, publish.grid_intensity_g_per_kwh)
        paths = _write_outputs(results, rows, out_dir)
        if artifact is not None:
            paths["artifact"] = artifact
        by = (stopped_by[0] if stopped_by else "SIGINT") if interrupted else None
        return OptimizeResult(results, tuple(rows), out_dir, paths, interrupted, by)


def _confirmation_key(rows: list[TrialRow], best: TrialRow, rounds: int) -> dict[str, Any]:
    runner = _runner_up(rows, best)
    return {
        "best": best.number,
        "runner_up": runner.number if runner is not None else None,
        "rounds": rounds,
    }


# What the study keeps of a confirmation (CONFIRMATION_ATTR): {"key": which winner and
# runner-up in how many rounds, "doc": the Confirmation's dict with its "ledger" beside it}.


def _stored_confirmation(
    the_study: optuna.Study,
    rows: list[TrialRow],
    best: TrialRow,
    rounds: int | None = None,
) -> tuple[Confirmation, dict[str, Any]] | None:
    """The confirmation stored in the study, and its ledger, if it confirmed the current
    winner and runner-up (in ``rounds`` rounds, when given): a rerun with nothing new, or
    ``wattwise report``, publishes the same rounds."""
    stored = the_study.user_attrs.get(CONFIRMATION_ATTR)
    if not isinstance(stored, dict) or not isinstance(stored.get("doc"), dict):
        return None
    key = stored.get("key")
    if not isinstance(key, dict) or (rounds is not None and key.get("rounds") != rounds):
        return None
    if key != _confirmation_key(rows, best, int(key.get("rounds") or 0)):
        return None
    doc = dict(stored["doc"])
    ledger = doc.pop("ledger", None)
    try:
        confirmation = Confirmation.from_dict(doc)
    except InputError:
        return None  # written by another version, in another shape: measure them again
    return confirmation, ledger if isinstance(ledger, dict) else {}


def _run_confirmation(
    the_study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    rows: list[TrialRow],
    best: TrialRow,
    rounds: int,
    bar: SearchProgress,
) -> tuple[Confirmation, dict[str, Any]]:
    key = _confirmation_key(rows, best, rounds)
    runner = _runner_up(rows, best)
    trials = the_study.get_trials(deepcopy=False)
    specs = confirm_plan(
        settings.space, best, runner, lambda n: trials[n].params, device=ctx.device
    )
    bar.message(
        f"confirming side by side, {rounds} rounds: "
        + ", ".join(f"{s.role.replace('_', ' ')} ({s.label})" for s in specs)
    )

    def on_measure(r: int, spec: Any) -> None:
        bar.message(f"  round {r + 1}/{rounds}: {spec.label}")

    doc, ledger = confirm(
        specs,
        ctx,
        rounds=rounds,
        max_time_s=settings.max_time_s,
        timeout_s=settings.timeout_per_trial_s,
        on_measure=on_measure,
    )
    the_study.set_user_attr(
        CONFIRMATION_ATTR, {"key": key, "doc": {**doc.to_dict(), "ledger": ledger}}
    )
    ratio = doc.ratio("energy_ratio_same_batch")
    if ratio is not None:
        bar.message(
            f"confirmed: {ratio:.3g}x less energy per item than fp32 eager at the same batch "
            f"(median of {rounds} rounds)"
        )
    return doc, ledger


def _confirmed_best(rows: list[TrialRow], confirmation: Confirmation) -> TrialRow | None:
    """The trial row the confirmation chose (the runner-up when it was lower there)."""
    cand = confirmation.winner
    if cand is None or cand.trial is None:
        return None
    return next((r for r in rows if r.number == cand.trial), None)


def _co2e(figures: Figures, g_per_kwh: float) -> Figures:
    """``figures`` with their CO2e at the grid intensity this search publishes with (its
    children measured at the default one)."""
    from wattwise.measure._carbon import co2e_g_per_million_items

    if figures.energy_j_per_item is None:
        return figures
    co2e = co2e_g_per_million_items(float(figures.energy_j_per_item), g_per_kwh)
    return dataclasses.replace(figures, co2e_g_per_million_items=co2e)


def _at_grid(rows: list[TrialRow], g_per_kwh: float) -> list[TrialRow]:
    """Each trial row with its CO2e at the grid intensity this search publishes with."""
    return [dataclasses.replace(r, figures=_co2e(r.figures, g_per_kwh)) for r in rows]


def _export_best(
    the_study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    best: TrialRow,
    out_dir: Path,
    bar: SearchProgress,
) -> tuple[Path | None, dict[str, Any], str | None]:
    """Export the best candidate to ``OUT/artifact`` unless it is there already."""
    from wattwise.measure import run_isolated

    target = out_dir / "artifact"
    trial = the_study.trials[best.number]
    marker = f"wattwise optimize: trial {trial.number} of study {the_study.study_name!r}"
    manifest = target / "deployment.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(manifest.read_text()).get("how_made", "").startswith(marker):
            return target, {}, None
    cand = Candidate.from_params(settings.space, trial.params, device=ctx.device)
    how = (
        f"{marker}; recipe {json.dumps(cand.recipe)}; deployment {cand.label}; "
        f"best J/item among candidates within an accuracy drop of {settings.max_accuracy_drop:g}"
    )
    bar.message(f"exporting the best deployment (trial {trial.number}) to {target} ...")
    try:
        done = run_isolated(
            export_job,
            ctx,
            cand,
            str(target),
            trial.user_attrs.get("measurement"),
            best.figures.accuracy,
            how,
            timeout_s=settings.timeout_per_trial_s,
            what="export",
            log_path=ctx.log_path("export"),
        )
    except Exception as exc:
        return None, {}, f"the best deployment was not exported: {' '.join(str(exc).split())}"
    return Path(done["path"]), done.get("ledger") or {}, None


def _search_energy(
    baseline: Mapping[str, Any],
    trials: list[optuna.trial.FrozenTrial],
    ledgers: Mapping[str, Mapping[str, Any]],
) -> tuple[float, str | None, float | None, dict[str, float]]:
    """Joules the whole search spent (every worker, every trial, failed ones too, and the
    confirmation and export after them)."""
    by_phase: dict[str, float] = {}
    sources: set[str] = set()
    uncertainties: list[float] = []

    def add(ledger: Mapping[str, Any] | None, prefix: str) -> None:
        if not ledger:
            return
        if ledger.get("energy_source"):
            sources.add(str(ledger["energy_source"]))
        if ledger.get("energy_uncertainty") is not None:
            uncertainties.append(float(ledger["energy_uncertainty"]))
        for phase, joules in (ledger.get("energy_j") or {}).items():
            key = f"{prefix}{phase}"
            by_phase[key] = by_phase.get(key, 0.0) + float(joules)

    add(baseline.get("ledger"), "baseline_")
    for t in trials:
        for phase, joules in (t.user_attrs.get("energy_by_phase_j") or {}).items():
            by_phase[f"trials_{phase}"] = by_phase.get(f"trials_{phase}", 0.0) + float(joules)
        if t.user_attrs.get("search_energy_source"):
            sources.update(str(t.user_attrs["search_energy_source"]).split("+"))
        if t.user_attrs.get("search_energy_uncertainty") is not None:
            uncertainties.append(float(t.user_attrs["search_energy_uncertainty"]))
    for name, ledger in ledgers.items():
        add(ledger, f"{name}_")
    total = sum(by_phase.values())
    source = "+".join(sorted(sources)) if sources else None
    return total, source, (max(uncertainties) if uncertainties else None), by_phase


def _published(figures: Figures, confirmed: Figures | None, g_per_kwh: float) -> Figures:
    """A figure set as the results publish it: the confirmation's medians in place of a single
    measurement's (when it measured this one), its CO2e at the published grid intensity."""
    if confirmed is not None and confirmed.energy_j_per_item is not None:
        figures = figures.remeasured(confirmed)
    return _co2e(figures, g_per_kwh)


@dataclasses.dataclass(frozen=True)
class _Headline:
    """The entries the headline is made of, and what the confirmation says of them."""

    baseline: BaselineEntry
    same_batch: SameBatchEntry | None
    best: BestEntry | None
    confirmed: bool  # the winner was measured side by side: ratios and payback are published


def _headline(
    baseline: Mapping[str, Any],
    best: TrialRow | None,
    artifact: Path | None,
    confirmation: Confirmation | None,
    g_per_kwh: float,
) -> _Headline:
    """Baseline, fp32 eager at the winner's batch, and the winner: from the confirmation rounds
    where they were measured side by side, else the search's single measurements."""
    rounds = confirmation.candidates if confirmation is not None else {}

    def figures(role: str) -> Figures | None:
        cand = rounds.get(role)
        return cand.figures if cand is not None else None

    base_figures = Figures.from_dict(baseline, name="the study's baseline")
    base_dep = baseline.get("deployment")
    base = BaselineEntry(
        _published(base_figures, figures("baseline"), g_per_kwh),
        recipe=(),
        deployment=dict(base_dep) if isinstance(base_dep, Mapping) else None,
    )
    if best is None:
        return _Headline(base, None, None, confirmed=False)
    best_conf = figures(confirmation.chosen) if confirmation and confirmation.chosen else None
    entry = BestEntry.of_row(
        best,
        _published(best.figures, best_conf, g_per_kwh),
        artifact=str(artifact) if artifact is not None else None,
        # The search's own single measurement of this candidate, for comparison.
        trial_energy_j_per_item=best.figures.energy_j_per_item,
    )
    dep = best.deployment or {}
    batch, threads = dep.get("batch_size"), dep.get("threads")
    # At batch 1 on the default threads, the same-batch baseline is the baseline itself.
    same_conf = figures("baseline_same_batch") or (
        figures("baseline") if (batch, threads) == (1, None) else None
    )
    same = None
    if same_conf is not None:
        same = SameBatchEntry(
            _published(base_figures, same_conf, g_per_kwh),
            batch_size=batch,
            threads=threads,
            deployment={**(base.deployment or {}), "batch_size": batch, "threads": threads},
        )
    confirmed = bool(best_conf is not None and best_conf.energy_j_per_item)
    return _Headline(base, same, entry, confirmed)


def _paybacks(head: _Headline, search_j: float) -> tuple[float | None, float | None]:
    """After how many items the search pays for itself: against fp32 eager at the winner's
    batch (batching alone would have saved the rest, at no search), and against batch 1."""
    if head.best is None or not head.confirmed:
        return None, None
    e_best = float(head.best.figures.energy_j_per_item or 0.0)

    def items(reference: Figures | None) -> float | None:
        if reference is None or reference.energy_j_per_item is None:
            return None
        saving = float(reference.energy_j_per_item) - e_best
        return search_j / saving if saving > 0 else None

    same = head.same_batch.figures if head.same_batch is not None else None
    return items(same), items(head.baseline.figures)


def _headline_notes(
    head: _Headline, best: TrialRow | None, confirmation: Confirmation | None, rounds: int
) -> list[str]:
    """What a reader of the headline must know: how it was measured, and what it mixes."""
    notes = []
    base = head.baseline.figures
    if head.best is None or best is None:
        notes.append("no candidate met the constraints: there is no best deployment")
    else:
        if not head.confirmed and rounds == 0:
            notes.append(
                "the confirmation stage was skipped (confirm_rounds=0): the figures are the "
                "search's single measurements, taken minutes apart, so no ratio is published"
            )
        elif not head.confirmed:
            notes.append(
                "the headline was not confirmed side by side (interrupted, or its rounds "
                "failed): no ratio is published; rerun the same command, or "
                "'wattwise report --confirm'"
            )
        source = head.best.figures.energy_source
        if source != base.energy_source:
            notes.append(
                f"baseline and best were measured by different meters ({base.energy_source} "
                f"vs {source}): their ratio mixes sources"
            )
        if confirmation is not None and confirmation.chosen == "runner_up":
            notes.append(
                f"the confirmation rounds chose trial {best.number} (the search's runner-up): "
                "it used less energy per item than the search's first pick, side by side"
            )
    disturbed = [
        name
        for name, entry in (
            ("baseline", head.baseline),
            ("baseline_same_batch", head.same_batch),
            ("best", head.best),
        )
        if entry is not None and (entry.figures.disturbed_windows or 0) > 0
    ]
    if disturbed:
        notes.append(
            "windows disturbed by other processes' CPU load remain in "
            + ", ".join(disturbed)
            + ": those figures may be inflated"
        )
    if (base.energy_source or "").startswith("estimated:"):
        notes.append(
            f"energy figures are estimates ({base.energy_source}, "
            f"±{float(base.energy_uncertainty or 0):.0%}): this machine has no energy "
            "counter; ratios between candidates measured side by side here are much firmer "
            "than absolute joules"
        )
    return notes


def _at_grid_confirmation(confirmation: Confirmation, g_per_kwh: float) -> Confirmation:
    """The confirmation with its CO2e figures (medians and rounds) at the published grid
    intensity: its children measured at the default one, and results.json must not hold two."""
    from wattwise.measure._carbon import co2e_g_per_million_items

    def candidate(c: ConfirmedCandidate) -> ConfirmedCandidate:
        per_round = dict(c.round_figures)
        if "energy_j_per_item" in per_round and "co2e_g_per_million_items" in per_round:
            per_round["co2e_g_per_million_items"] = tuple(
                None if j is None else co2e_g_per_million_items(float(j), g_per_kwh)
                for j in per_round["energy_j_per_item"]
            )
        return dataclasses.replace(c, figures=_co2e(c.figures, g_per_kwh), round_figures=per_round)

    cands = {role: candidate(c) for role, c in confirmation.candidates.items()}
    return dataclasses.replace(confirmation, candidates=cands)


def _results(
    the_study: optuna.Study,
    settings: SearchSettings,
    baseline: Mapping[str, Any],
    rows: list[TrialRow],
    best: TrialRow | None,
    artifact: Path | None,
    *,
    url: str,
    ledgers: Mapping[str, Mapping[str, Any]],
    confirmation: Confirmation | None,
    publish: _Publish,
    elapsed_s: float,
    interrupted: bool,
    notes: list[str],
) -> Results:
    """The ``results.json`` document (see ``docs/search.md``, "results.json").

    The headline (``baseline``, ``baseline_same_batch``, ``best`` and both ratios) comes from
    the confirmation rounds; without them (skipped, interrupted, or every round failed) the
    figures are the search's single measurements and no ratio is published.
    """
    from wattwise.measure._hardware import hardware_info
    from wattwise.report import redact_url

    g = publish.grid_intensity_g_per_kwh
    trials = the_study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    search_j, source, unc, by_phase = _search_energy(baseline, trials, ledgers)
    head = _headline(baseline, best, artifact, confirmation, g)
    payback, payback_b1 = _paybacks(head, search_j)
    notes = notes + _headline_notes(head, best, confirmation, publish.confirm_rounds)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.figures.energy_j_per_item or 0)
    base = head.baseline.figures
    return Results(
        schema=RESULTS_SCHEMA,
        task=settings.task_name,
        task_spec=settings.task_spec,
        study=the_study.study_name,
        storage=redact_url(url),
        scenario=settings.scenario,
        max_accuracy_drop=settings.max_accuracy_drop,
        latency_p90_ms=settings.latency_p90_ms,
        hardware=hardware_info(include_cuda=settings.device.startswith("cuda")),
        meter=Meter(source=base.energy_source, uncertainty=base.energy_uncertainty),
        baseline=head.baseline,
        baseline_same_batch=head.same_batch,
        best=head.best,
        energy_ratio=confirmation.ratio("energy_ratio")
        if confirmation and head.confirmed
        else None,
        energy_ratio_same_batch=(
            confirmation.ratio("energy_ratio_same_batch")
            if confirmation and head.confirmed
            else None
        ),
        confirmation=_at_grid_confirmation(confirmation, g) if confirmation else None,
        pareto=tuple(FrontEntry.of_row(r, _co2e(r.figures, g)) for r in front),
        trials=counts.counted,
        failed_trials=counts.failed,
        interrupted_trials=counts.interrupted,
        trials_budget=settings.trials,
        search_energy_j=search_j,
        search_energy_source=source,
        search_energy_uncertainty=unc,
        search_energy_by_phase_j=by_phase,
        payback_items=payback,
        payback_basis="baseline_same_batch",
        payback_items_batch1=payback_b1,
        **publish.costs(),
        elapsed_s=elapsed_s,
        interrupted=interrupted,
        notes=tuple(notes),
    )


def _write_outputs(results: Results, rows: list[TrialRow], out_dir: Path) -> dict[str, Path]:
    from wattwise.report import render_report

    try:
        return render_report(results, rows, out_dir)
    except OSError as exc:
        raise InputError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None


def report_study(
    storage: str,
    study: str,
    *,
    out: str | os.PathLike[str] = "wattwise-report",
    confirm_rounds: int = 0,
    grid_intensity_g_per_kwh: float | None = None,
    price_per_kwh: float | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> OptimizeResult:
    """Write ``results.json``, ``trials.csv`` and ``report.html`` for a study as it stands now
    (``wattwise report``).

    Runs nothing unless ``confirm_rounds`` (>= 3) asks to re-confirm the headline side by side
    on this machine (``wattwise report --confirm``); otherwise the confirmation the search
    stored is published when it is of the current winner and runner-up.
    """
    if confirm_rounds and confirm_rounds < 3:
        raise InputError(f"confirm_rounds must be 0 or at least 3, got {confirm_rounds!r}")
    publish = _publish_settings(confirm_rounds, grid_intensity_g_per_kwh, price_per_kwh, currency)
    with quiet_optuna():
        store = open_storage(storage)
        the_study, settings = open_study(store, study, None, url=storage)
    publish = publish.stored_in(the_study, save=False)
    baseline = the_study.user_attrs.get(BASELINE_ATTR)
    if not isinstance(baseline, dict) or not baseline.get("ok"):
        raise InputError(f"study {study!r} has no measured baseline yet: nothing to report")
    out_dir = Path(out).expanduser()
    check_out_dir(out_dir, storage=storage)
    rows = trial_rows(the_study.get_trials(deepcopy=False), float(baseline["accuracy"]), settings)
    best = _best(rows)
    confirmation: Confirmation | None = None
    ledgers: dict[str, Mapping[str, Any]] = {}
    if best is not None:
        confirmed = None
        if confirm_rounds:
            if settings.task_spec is None:
                raise InputError(
                    f"study {study!r} was started from a Python Task object: re-confirming "
                    "needs its task by name; use wattwise.optimize in Python instead"
                )
            # The models optimize built and cached, when that cache is on this machine:
            # otherwise each is built again (once) into this report's own cache.
            cache = the_study.user_attrs.get(CACHE_ATTR)
            if not isinstance(cache, str) or not Path(cache).is_dir():
                cache = str(out_dir / "cache")
            ctx = _job_context(settings, TaskRef(settings.task_spec), out_dir, cache_dir=cache)
            with _interrupt_signals(), SearchProgress(settings.trials, done=0) as bar:
                confirmed = _run_confirmation(
                    the_study, settings, ctx, rows, best, confirm_rounds, bar
                )
        else:
            confirmed = _stored_confirmation(the_study, rows, best)
        if confirmed is not None:
            confirmation, ledgers["confirm"] = confirmed
            best = _confirmed_best(rows, confirmation) or best
    results = _results(
        the_study,
        settings,
        baseline,
        rows,
        best,
        None,
        url=storage,
        ledgers=ledgers,
        confirmation=confirmation,
        publish=publish,
        elapsed_s=0.0,
        interrupted=False,
        notes=[],
    )
    rows = _at_grid(rows, publish.grid_intensity_g_per_kwh)
    return OptimizeResult(results, tuple(rows), out_dir, _write_outputs(results, rows, out_dir))
