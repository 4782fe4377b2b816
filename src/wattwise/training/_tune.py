"""``wattwise train`` / :func:`tune_training`: the training configuration that reaches a target
metric with the least energy, every candidate a real run on the meters.

The study is an Optuna study in the same storage ``optimize`` uses (SQLite in the output
directory by default, PostgreSQL for many machines), with two objectives, energy and time to
the target, and one constraint, reaching it. Its settings are a study attribute of their own
(``wattwise_training``), so a search study and a training study never mix, and ``wattwise
worker`` joins either. Each candidate is one child process (:func:`~._run.train_job`) with a
time limit; a rerun with the same output directory resumes.

The candidates come from a greedy walk (:mod:`._space`): the task's recipe first, then the best
run so far with one knob changed. A run that has already spent :data:`ENERGY_MARGIN` times the
best run's energy to target is stopped: it cannot be the cheapest.

At the end the default recipe and the best configuration are trained again side by side, in
alternating order (default, best; best, default; ...), each round with a seed the search did not
use. The published figures are medians over those rounds; the ratio is of the means (see
:func:`_ratio`). The best's last round writes the trained model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wattwise.errors import InputError, WattwiseError
from wattwise.training._file import TrainingFigures, TrainingReport
from wattwise.training._profile import STEP_KNOBS
from wattwise.training._run import RunSpec, train_job
from wattwise.training._space import KNOBS, TrainingSpace, training_space

if TYPE_CHECKING:
    import optuna

    from wattwise.search._objective import TaskRef
    from wattwise.tasks import Task, TrainConfig

__all__ = [
    "ATTR",
    "TrainingResult",
    "TrainingSettings",
    "find_training_study",
    "predict_run",
    "run_training_worker",
    "tune_training",
]

ATTR = "wattwise_training"  # the study attribute holding a training study's settings
CONFIRM_ATTR = "wattwise_training_confirmation"
PROFILE_ATTR = "wattwise_training_step_profile"
DIRECTIONS: tuple[Literal["minimize"], ...] = ("minimize", "minimize")  # energy, time to target
DEFAULT_TRIALS = 12
DEFAULT_ROUNDS = 3
DEFAULT_TIMEOUT_S = 900.0
ENERGY_MARGIN = 1.5
# A run that beats the best so far is trained again with seeds ``seed + i * RECHECK_SEED`` (i = 1
# to RECHECKS) before it counts (see _objective); the side-by-side rounds use seeds 1 to
# ``rounds`` past the study's.
RECHECK_SEED = 1000
RECHECKS = 2
# A run that reached the target within SHORT_RUN_EPOCHS epochs and SHORT_RUN_S seconds gets
# RECHECKS_SHORT other seeds: one epoch more or less is a third of such a run (digits' took 1
# to 3 epochs by seed), and repeating it is cheap.
SHORT_RUN_EPOCHS = 3
SHORT_RUN_S = 30.0
RECHECKS_SHORT = 4
RECHECK_BAND = 1.25  # ... as is a run within this factor of the best: seed-0 luck cuts both ways
# torch.compile of a training step took 10 to 40 s on our CPUs before the first step; the walk
# offers it only from a run to target at least this long, which it could pay back.
COMPILE_MIN_RUN_S = 120.0
_FIXED = ("task_id", "target_accuracy", "space", "seed", "device", "seeds")


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What defines a training study; stored with it, so a worker rebuilds it from there."""

    task_spec: str | None
    task_name: str
    task_id: str
    target_accuracy: float
    trials: int
    space: TrainingSpace
    seed: int = 0
    device: str = "cpu"
    meter: str = "auto"
    timeout_per_run_s: float = DEFAULT_TIMEOUT_S
    max_slowdown: float = 0.1
    seeds: int | None = None  # per near-best run; None: RECHECKS + 1, or RECHECKS_SHORT + 1

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["space"] = self.space.to_dict()
        return {"version": 1, **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSettings:
        try:
            kept = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            kept["space"] = TrainingSpace.from_dict(data["space"])
            return cls(**kept)
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a wattwise training study (bad settings: {exc})") from None


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """What :func:`tune_training` returns.

    Attributes:
        report: the contents of ``training.json``.
        out_dir: the output directory.
        paths: ``json``, ``html`` and (when written) ``artifact``.
    """

    report: TrainingReport
    out_dir: Path
    paths: dict[str, Path]

    @property
    def best_config(self) -> TrainConfig | None:
        """The best :class:`~wattwise.tasks.TrainConfig` (``None`` if no run reached the target)."""
        return self.report.best.train_config if self.report.best is not None else None


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def _number(value: Any, name: str, *, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise InputError(f"{name} must be >= {low:g}, got {value!r}")
    return float(value)


def _say(progress: bool | None) -> Callable[[str], None]:
    if progress is False:
        return lambda _msg: None
    return lambda msg: print(f"[train] {msg}", file=sys.stderr, flush=True)


def tune_training(
    task: Task | str = "digits",
    target_accuracy: float | None = None,
    *,
    trials: int = DEFAULT_TRIALS,
    out: str | Path = "wattwise-train",
    storage: str | None = None,
    study: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    meter: str = "auto",
    timeout_per_run_s: float = DEFAULT_TIMEOUT_S,
    rounds: int = DEFAULT_ROUNDS,
    max_slowdown: float = 0.1,
    seeds: int | None = None,
    space: TrainingSpace | None = None,
    progress: bool | None = None,
) -> TrainingResult:
    """Find the training configuration with the least energy to reach ``target_accuracy``.

    Args:
        task: a :class:`~wattwise.tasks.Task`, a built-in task name, or ``"pkg.mod:factory"``.
        target_accuracy: the validation metric every run must reach (early stopping at it is
            part of every candidate, the task's own recipe included).
        trials: the budget: finished candidate runs, across reruns and workers.
        out: output directory: ``training.json``, ``training.html``, the trained model as
            ``artifact/``, ``logs/`` and, by default, the study (``wattwise.db``).
        storage, study: the Optuna storage URL and study name (default ``<task>-train``).
        device: ``cpu`` or ``cuda[:N]``.
        seed: seeds every run's initialisation and data order (the same for all candidates).
        meter: the energy meter (``auto``).
        timeout_per_run_s: a run taking longer is stopped and failed.
        rounds: side-by-side rounds of the default and the best at the end (0 skips them:
            then no ratio is published).
        max_slowdown: on a GPU, the most a profiled power limit may slow a step (0.1 = 10%).
        seeds: how many seeds a run near or below the best is trained with before it counts
            (their mean; it reaches the target only if all do). ``None``: 3, or 5 for a run of
            at most 3 epochs and 30 s; 1: no reruns.
        space: the knobs and values (default :func:`training_space`).
        progress: lines on stderr (default) or ``False`` for silence.

    Raises:
        InputError: bad arguments, a task that can't be loaded, an output directory holding
            what wattwise did not write, or a study of another task or target.

    Example:
        >>> result = ww.tune_training("digits", target_accuracy=0.97, trials=12)
        >>> result.report.energy_ratio, result.report.best.label
    """
    from wattwise.measure import check_device
    from wattwise.measure._hardware import hardware_info
    from wattwise.report import redact_url
    from wattwise.search._objective import TaskRef, task_id
    from wattwise.search._optimize import _load_task
    from wattwise.search._outdir import check_out_dir
    from wattwise.search._space import restore_power_limits
    from wattwise.search._storage import default_storage, open_storage, storage_errors
    from wattwise.search._study import quiet_optuna

    if target_accuracy is None:
        raise InputError("a target accuracy is needed (--target-accuracy)")
    target = _number(target_accuracy, "target_accuracy")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InputError(f"trials must be an integer >= 1, got {trials!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise InputError(f"rounds must be an integer >= 0, got {rounds!r}")
    timeout = _number(timeout_per_run_s, "timeout_per_run_s", low=1)
    slowdown = _number(max_slowdown, "max_slowdown", low=0)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise InputError(f"seeds must be an integer >= 1, got {seeds!r}")
    if study is not None and (not isinstance(study, str) or not study.strip()):
        raise InputError(f"study must be a non-empty name, got {study!r}")
    device = check_device(device)
    restore_power_limits(device)
    task_obj, spec = _load_task(task)
    space = space if space is not None else training_space(task_obj, device)
    settings = TrainingSettings(
        task_spec=spec,
        task_name=task_obj.name,
        task_id=task_id(task_obj, spec),
        target_accuracy=target,
        trials=trials,
        space=space,
        seed=seed,
        device=device,
        meter=meter,
        timeout_per_run_s=timeout,
        max_slowdown=slowdown,
        seeds=seeds,
    )
    out_dir = Path(out).expanduser()
    created = check_out_dir(out_dir, storage=storage)
    url = storage if storage is not None else default_storage(out_dir)
    name = study.strip() if study else f"{task_obj.name}-train"
    say = _say(progress)
    ref = TaskRef(spec, None if spec is not None else task_obj)
    t0 = time.monotonic()
    with quiet_optuna(), storage_errors(url):
        try:
            the_study = open_training_study(open_storage(url), name, settings, url=url)
        except BaseException:
            if created:  # nothing half-written: the directory was made for this run
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        _run_trials(the_study, settings, ref, out_dir, say)
        rows = _rows(the_study)
        default_row = _row_of(rows, space.default_params())
        best_row = min(
            (r for r in rows if r["reached"]),
            key=lambda r: r["energy_to_target_j"],
            default=None,
        )
        confirmed = _confirm(the_study, settings, ref, out_dir, default_row, best_row, rounds, say)
        profile = the_study.user_attrs.get(PROFILE_ATTR)
    report = _report(
        settings,
        rows,
        default_row,
        best_row,
        confirmed,
        profile=profile if isinstance(profile, Mapping) else None,
        rounds=rounds,
        hardware=hardware_info(),
        study=name,
        storage=redact_url(url),
        search_time_s=time.monotonic() - t0,
    )
    paths = write_training(report, out_dir)
    return TrainingResult(report, out_dir, paths)


def open_training_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    settings: TrainingSettings | None,
    *,
    url: str,
    any_kind: bool = False,
) -> optuna.Study:
    """Create the training study ``name`` with ``settings``, or load it and check they match
    (``settings=None``, a worker: it must exist)."""
    import optuna

    from wattwise.report import redact_url
    from wattwise.search._study import make_sampler

    sampler = make_sampler(settings.seed if settings is not None else 0)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        if settings is None:
            raise InputError(f"no study named {name!r} in {redact_url(url)}") from None
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, directions=list(DIRECTIONS), sampler=sampler
            )
        except optuna.exceptions.DuplicatedStudyError:  # another run created it just now
            return open_training_study(storage, name, settings, url=url, any_kind=any_kind)
        study.set_user_attr(ATTR, settings.to_dict())
        study.enqueue_trial(settings.space.default_params(), user_attrs={"walk_from": None})
        return study
    stored_raw = study.user_attrs.get(ATTR)
    if any_kind and settings is None:
        return study
    if not isinstance(stored_raw, Mapping):
        raise InputError(
            f"study {name!r} in {redact_url(url)} is not a wattwise training study; "
            "pick another --study"
        )
    stored = TrainingSettings.from_dict(stored_raw)
    if settings is None:
        return study
    for field in _FIXED:
        a, b = getattr(stored, field), getattr(settings, field)
        if (a.to_dict() if field == "space" else a) != (b.to_dict() if field == "space" else b):
            raise InputError(
                f"study {name!r} was started with another {field.replace('_', ' ')}; "
                "pick another --study or --out"
            )
    if stored.trials != settings.trials or stored.timeout_per_run_s != settings.timeout_per_run_s:
        study.set_user_attr(ATTR, settings.to_dict())
    return study


def training_settings(study: optuna.Study) -> TrainingSettings | None:
    """The study's training settings, or ``None`` for a study that is not a training study."""
    raw = study.user_attrs.get(ATTR)
    return TrainingSettings.from_dict(raw) if isinstance(raw, Mapping) else None


# ----------------------------------------------------------------------------- trials


class _RunFailed(WattwiseError):
    """A candidate's run failed (its reason is on the trial)."""


def _propose(study: optuna.Study, space: TrainingSpace) -> None:
    """Queue the next step of the walk, unless a candidate is already queued: after the recipe,
    the recipe with the step profile's cheapest precision, threads and memory format; then the
    best run so far (then the next best) with one knob changed, not tried yet."""
    from optuna.trial import TrialState

    from wattwise.search._trials import _taken

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return
    tried = {_key(t.params) for t in trials if _taken(t)}
    profiled = (study.user_attrs.get(PROFILE_ATTR) or {}).get("cheapest")
    recipe = next((t for t in trials if _key(t.params) == _key(space.default_params())), None)
    recipe_reached = recipe is not None and bool(recipe.user_attrs.get("reached"))
    if (
        isinstance(profiled, Mapping)
        and recipe is not None
        and recipe_reached
        and _key(profiled) not in tried
    ):
        study.enqueue_trial(dict(profiled), user_attrs={"walk_from": recipe.number})
        return
    # Runs whose whole schedule ended short of the target: a larger batch with every other knob
    # alike takes fewer steps in the same epochs, and is not tried (tinylm: batch 32 ended at
    # 0.40 of 0.45 and 64 at 0.32; 128 would have been the walk's next step).
    ran_out = [
        dict(t.params)
        for t in trials
        if t.state == TrialState.COMPLETE and (t.user_attrs.get("run") or {}).get("ran_out")
    ]
    reached = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("reached")),
        key=lambda t: t.values[0],
    )
    by_number = {t.number: t for t in trials}

    def changed(t: Any) -> str | None:
        """The knob whose change from the trial it was walked from made ``t``."""
        parent = by_number.get(t.user_attrs.get("walk_from"))
        if parent is None:
            return None
        # A move of several knobs (the step profile's, the schedule with the rate) goes on
        # from the last of them.
        diff = [k for k in KNOBS if k in t.params and t.params[k] != parent.params.get(k)]
        return diff[-1] if diff else None

    def run_time(t: Any) -> float:
        return float((t.user_attrs.get("run") or {}).get("time_to_target_s") or 0.0)

    starts: list[tuple[int | None, dict[str, Any], str | None, float]] = [
        (t.number, dict(t.params), changed(t), run_time(t)) for t in reached
    ]
    # While nothing has reached the target, the knobs that change only what a step costs
    # cannot help: from the recipe, the walk starts with those that change what a run learns
    # (a stranger's net at 0.91 of 0.93 spent four runs on threads and precision).
    starts.append((None, space.default_params(), None if reached else STEP_KNOBS[-1], 0.0))
    for number, params, after, seconds in starts:
        for candidate in space.neighbours(params, after):
            compiles = candidate.get("compile") and not params.get("compile")
            if compiles and seconds < COMPILE_MIN_RUN_S:
                continue
            if _key(candidate) not in tried and not _fewer_steps_than_failed(candidate, ran_out):
                study.enqueue_trial(candidate, user_attrs={"walk_from": number})
                return


def _fewer_steps_than_failed(
    candidate: Mapping[str, Any], ran_out: Sequence[Mapping[str, Any]]
) -> bool:
    """``candidate`` is a larger batch than a run that ran out of schedule short of the target,
    with every other knob the same."""
    others = {k: v for k, v in candidate.items() if k != "batch_size"}
    for failed in ran_out:
        if others == {k: v for k, v in failed.items() if k != "batch_size"} and int(
            candidate.get("batch_size") or 0
        ) > int(failed.get("batch_size") or 0):
            return True
    return False


def _best_energy(study: optuna.Study) -> float | None:
    """The least energy to target of the finished trials that reached it."""
    from optuna.trial import TrialState

    best = [
        t.values[0]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("reached")
    ]
    return min(best) if best else None


def _reruns_wanted(run: Mapping[str, Any], best: float | None, settings: TrainingSettings) -> int:
    """How many other seeds ``run`` is trained with before it counts: none unless it reached
    the target within :data:`RECHECK_BAND` of the best so far (or is the first to reach it).

    Whether a run crosses the target at epoch 1 or 3 depends on its seed as much as on its
    knobs (digits: batch 16 took 1 epoch with seeds 0 and 1000, and 1 to 3 with seeds 1 to 5).
    A lucky run would win the walk and lose the side-by-side rounds, and an unlucky one would
    hide a good configuration, so a run near or below the best counts as the mean over three
    seeds, five for a short run, or ``settings.seeds``."""
    if not run["reached"] or settings.seeds == 1:
        return 0
    if best is not None and run["energy_to_target_j"] >= best * RECHECK_BAND:
        return 0
    if settings.seeds is not None:
        return settings.seeds - 1
    short = run["epochs"] <= SHORT_RUN_EPOCHS and run["time_to_target_s"] <= SHORT_RUN_S
    return RECHECKS_SHORT if short else RECHECKS


def _rerun(
    settings: TrainingSettings, ref: TaskRef, cfg: TrainConfig, log: Path, i: int
) -> dict[str, Any]:
    """``cfg`` run again with seed ``settings.seed + i * RECHECK_SEED``, with no energy cap:
    its full figure is needed."""
    seed = settings.seed + i * RECHECK_SEED
    again = _run_child(settings, ref, cfg, log.with_suffix(f".seed{seed}.log"), seed=seed)
    again["seed"] = seed
    return again


def _seeds(first: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One trial's figures from its runs with several seeds: reached only if every one
    reached, energy and time to target their means, energy and time spent their sums;
    ``seed_runs`` keeps each."""
    runs = (first, *others)
    out = dict(first)
    out["seed_runs"] = [
        {
            k: r.get(k)
            for k in ("seed", "reached", "epochs", "energy_to_target_j", "time_to_target_s")
        }
        | {"energy_j": r["energy_j"], "time_s": r["time_s"], "stopped": r.get("stopped")}
        for r in runs
    ]
    out["reached"] = all(r["reached"] for r in runs)
    out["ran_out"] = any(r.get("ran_out") for r in runs)
    out["energy_j"] = sum(float(r["energy_j"] or 0.0) for r in runs)
    out["time_s"] = sum(float(r["time_s"]) for r in runs)
    if out["reached"]:
        out["energy_to_target_j"] = statistics.fmean(r["energy_to_target_j"] for r in runs)
        out["time_to_target_s"] = statistics.fmean(r["time_to_target_s"] for r in runs)
        out["epochs"] = max(r["epochs"] for r in runs)
    else:
        missed = next(r for r in runs if not r["reached"])
        out["energy_to_target_j"] = out["time_to_target_s"] = None
        out["stopped"] = (
            f"reached the target with seed {first.get('seed')} but not with seed "
            f"{missed.get('seed')}: {missed.get('stopped')}"
        )
    return out


def _run_child(
    settings: TrainingSettings,
    ref: TaskRef,
    cfg: TrainConfig,
    log: Path,
    *,
    max_energy_j: float | None = None,
    save_to: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """One run of ``cfg`` to the study's target, in its own child pinned to its threads
    (``seed``: the study's unless given)."""
    from wattwise.measure import run_isolated

    spec = RunSpec(
        cfg.to_dict(),
        settings.target_accuracy,
        seed=settings.seed if seed is None else seed,
        device=settings.device,
        meter=settings.meter,
        max_energy_j=max_energy_j,
        max_time_s=settings.timeout_per_run_s * 0.9,
        max_slowdown=settings.max_slowdown,
        save_to=save_to,
    )
    run: dict[str, Any] = run_isolated(
        train_job,
        ref,
        spec,
        threads=cfg.threads,
        timeout_s=settings.timeout_per_run_s,
        what=f"training run ({cfg.label()})",
        log_path=log,
    )
    return run


def _objective(
    study: optuna.Study,
    settings: TrainingSettings,
    ref: TaskRef,
    out_dir: Path,
    say: Callable[[str], None],
    outcome: dict[str, Any],
) -> Callable[[optuna.Trial], tuple[float, float]]:
    import optuna

    from wattwise.search._liveness import INTERRUPTED, enqueue_retry, worker_identity
    from wattwise.search._optuna import stored_trial
    from wattwise.search._trials import _taken

    identity = worker_identity()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", identity)
        params = {
            knob: trial.suggest_categorical(knob, list(values))
            for knob, values in settings.space.choices.items()
        }
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        if sum(1 for t in others if t.number < trial.number and _taken(t)) >= settings.trials:
            trial.set_user_attr("fail_reason", "budget reached")
            raise optuna.TrialPruned("budget reached")
        if any(_taken(t) and _key(t.params) == _key(params) for t in others):
            outcome["duplicate"] = True
            trial.set_user_attr("fail_reason", "duplicate")
            raise optuna.TrialPruned("duplicate")
        cfg = settings.space.config(params)
        trial.set_user_attr("label", cfg.label())
        trial.set_user_attr("config", cfg.to_dict())
        best = _best_energy(study)
        cap = best * ENERGY_MARGIN if best is not None else None
        say(f"trial {trial.number}: {cfg.label()}")
        log = out_dir / "logs" / f"train-{trial.number:04d}.log"
        try:
            run = _run_child(settings, ref, cfg, log, max_energy_j=cap)
            run["seed"] = settings.seed
            reruns = _reruns_wanted(run, best, settings)
            if reruns:
                say(f"trial {trial.number}: {_describe(run)}; again with {reruns} other seeds")
                run = _seeds(
                    run, [_rerun(settings, ref, cfg, log, i) for i in range(1, reruns + 1)]
                )
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", f"{INTERRUPTED}: stopped by Ctrl-C")
                enqueue_retry(study, stored_trial(study, trial))
            raise
        except WattwiseError as exc:
            reason = str(exc).splitlines()[0][:300]
            trial.set_user_attr("fail_reason", reason)
            say(f"trial {trial.number}: failed: {reason}")
            raise _RunFailed(reason) from None
        trial.set_user_attr("run", {k: v for k, v in run.items() if k != "config"})
        trial.set_user_attr("reached", bool(run["reached"]))
        trial.set_constraint("target", 0.0 if run["reached"] else 1.0)
        if "seed_runs" in run:
            seeds = " and ".join(str(r["seed"]) for r in run["seed_runs"])
            say(f"trial {trial.number}: seeds {seeds}: {_describe(run)}")
        else:
            say(f"trial {trial.number}: {_describe(run)}")
        if run["reached"]:
            return float(run["energy_to_target_j"]), float(run["time_to_target_s"])
        return float(run["energy_j"] or 0.0), float(run["time_s"])

    return objective


def _describe(run: Mapping[str, Any]) -> str:
    from wattwise.report import fmt_energy_j

    source = f"{run['energy_source']} ±{run['energy_uncertainty']:.0%}"
    if run["reached"]:
        return (
            f"reached {run['accuracy']:.4f} in {run['epochs']} epoch(s): "
            f"{fmt_energy_j(run['energy_to_target_j'])}, {run['time_to_target_s']:.1f} s ({source})"
        )
    accuracy = run["accuracy"]
    at = f"{accuracy:.4f}" if isinstance(accuracy, float) else "no accuracy yet"
    return f"stopped at {at}: {run['stopped']} ({source})"


def _run_trials(
    study: optuna.Study,
    settings: TrainingSettings,
    ref: TaskRef,
    out_dir: Path,
    say: Callable[[str], None],
) -> None:
    """Run candidates until the budget is met (all workers together), the walk and the
    sampler proposing nothing new."""
    from wattwise.search._liveness import count_trials, recover_dead_trials
    from wattwise.search._trials import next_step

    duplicates = 0
    recover_dead_trials(study)
    _ensure_profile(study, settings, ref, out_dir, say)
    while True:
        counts = count_trials(study.get_trials(deepcopy=False))
        step = next_step(counts, duplicates, settings.trials)
        if step in ("done", "exhausted"):
            if step == "exhausted":
                say("every configuration of the space has been tried")
            return
        if step == "wait":
            time.sleep(2.0)
            recover_dead_trials(study)
            continue
        _propose(study, settings.space)
        outcome: dict[str, Any] = {}
        study.optimize(
            _objective(study, settings, ref, out_dir, say, outcome),
            n_trials=1,
            catch=(_RunFailed,),
            gc_after_trial=False,
        )
        duplicates = duplicates + 1 if outcome.get("duplicate") else 0
        recover_dead_trials(study)


def _ensure_profile(
    study: optuna.Study,
    settings: TrainingSettings,
    ref: TaskRef,
    out_dir: Path,
    say: Callable[[str], None],
) -> None:
    """Measure the recipe's step under every precision, thread count and memory format of the
    space, side by side in one child (:mod:`._profile`), once per study; the cheapest joins the
    walk right after the recipe. A profile that fails is noted and the walk goes on without it."""
    from wattwise.measure import run_isolated
    from wattwise.training._profile import profile_job, step_variants

    if PROFILE_ATTR in study.user_attrs:
        return
    space = settings.space
    variants = step_variants(space, space.default_params())
    if len(variants) < 2:
        return
    configs = [space.config(v).to_dict() for v in variants]
    say(f"step profile: {len(variants)} settings of precision, threads and memory format")
    try:
        got = run_isolated(
            profile_job,
            ref,
            configs,
            settings.seed,
            settings.device,
            settings.meter,
            timeout_s=settings.timeout_per_run_s,
            what="training step profile",
            log_path=out_dir / "logs" / "step-profile.log",
        )
    except WattwiseError as exc:
        reason = str(exc).splitlines()[0][:300]
        say(f"step profile failed: {reason}; the walk goes on without it")
        study.set_user_attr(PROFILE_ATTR, {"failed": reason})
        return
    rows = got["rows"]
    for variant, row in zip(variants, rows, strict=True):
        row["params"] = variant
    cheapest = min(rows, key=lambda r: r["j_per_item"])
    recipe = rows[0]
    say(
        f"step profile: cheapest {space.config(cheapest['params']).label()}, "
        f"{recipe['j_per_item'] / cheapest['j_per_item']:.2f}x less per item than the recipe's "
        f"step (median of {got['rounds']} rounds side by side, {got['energy_source']})"
    )
    study.set_user_attr(
        PROFILE_ATTR,
        {**got, "cheapest": cheapest["params"] if cheapest is not recipe else None},
    )


def _rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every finished trial as a plain row (for the file and for choosing)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL) or "config" not in t.user_attrs:
            continue
        run = dict(t.user_attrs.get("run") or {})
        rows.append(
            {
                "trial": t.number,
                "params": dict(t.params),
                "config": t.user_attrs["config"],
                "label": t.user_attrs.get("label"),
                "state": t.state.name.lower(),
                "fail_reason": t.user_attrs.get("fail_reason"),
                "reached": bool(run.get("reached")),
                **{
                    k: run.get(k)
                    for k in (
                        "epochs",
                        "energy_to_target_j",
                        "time_to_target_s",
                        "energy_j",
                        "time_s",
                        "accuracy",
                        "stopped",
                        "energy_source",
                        "energy_uncertainty",
                        "power_limit_w",
                        "prediction",
                        "seed_runs",
                    )
                },
            }
        )
    return rows


def _row_of(rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, Any] | None:
    key = _key(params)
    return next(
        (dict(r) for r in rows if _key(r["params"]) == key and r["state"] == "complete"), None
    )


def front(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs that reached the target and that no other such run beats on both energy and
    time, cheapest first."""
    reached = [r for r in rows if r["reached"]]

    def beaten(r: Mapping[str, Any]) -> bool:
        e, t = r["energy_to_target_j"], r["time_to_target_s"]
        return any(
            o["energy_to_target_j"] <= e
            and o["time_to_target_s"] <= t
            and (o["energy_to_target_j"] < e or o["time_to_target_s"] < t)
            for o in reached
        )

    kept = sorted((r for r in reached if not beaten(r)), key=lambda r: r["energy_to_target_j"])
    return [
        {
            "trial": r["trial"],
            "label": r["label"],
            "config": r["config"],
            "energy_to_target_j": r["energy_to_target_j"],
            "time_to_target_s": r["time_to_target_s"],
        }
        for r in kept
    ]


# ----------------------------------------------------------------------------- confirmation


def _confirm(
    study: optuna.Study,
    settings: TrainingSettings,
    ref: TaskRef,
    out_dir: Path,
    default_row: Mapping[str, Any] | None,
    best_row: Mapping[str, Any] | None,
    rounds: int,
    say: Callable[[str], None],
) -> dict[str, list[dict[str, Any]]] | None:
    """Train the default and the best again side by side, alternating which goes first; the
    best's last run writes the model. ``None`` when there is nothing to confirm. Stored in the
    study, so a rerun with the same best and an artifact in place does not train again.

    Round ``r`` trains both with seed ``settings.seed + 1 + r``: seeds the search never saw, so
    a configuration that won on one lucky initialisation cannot carry its luck into the
    published ratio. Within a round both have the same seed."""
    from wattwise.search._outdir import ARTIFACT_DIR, record_outputs

    if best_row is None or rounds == 0:
        return None
    default_cfg = settings.space.config(settings.space.default_params())
    best_cfg = settings.space.config(best_row["params"])
    key = _key({"best": best_row["params"], "rounds": rounds, "seeds": "search+1+round"})
    stored = study.user_attrs.get(CONFIRM_ATTR)
    artifact = out_dir / ARTIFACT_DIR
    if isinstance(stored, Mapping) and stored.get("key") == key and artifact.is_dir():
        say("the side-by-side rounds of this best are stored: not run again")
        return dict(stored["runs"])
    record_outputs(out_dir, [ARTIFACT_DIR])
    same = default_cfg == best_cfg
    roles = {"default": default_cfg} if same else {"default": default_cfg, "best": best_cfg}
    runs: dict[str, list[dict[str, Any]]] = {role: [] for role in roles}
    say(f"{rounds} side-by-side round(s): " + " vs ".join(c.label() for c in roles.values()))
    for r in range(rounds):
        order = list(roles) if r % 2 == 0 else list(reversed(roles))
        for role in order:
            cfg = roles[role]
            last = r == rounds - 1 and role == ("default" if same else "best")
            log = out_dir / "logs" / f"confirm-{r}-{role}.log"
            run = _run_child(
                settings,
                ref,
                cfg,
                log,
                save_to=str(artifact) if last else None,
                seed=settings.seed + 1 + r,
            )
            run["seed"] = settings.seed + 1 + r
            runs[role].append(run)
            say(f"round {r + 1} (seed {run['seed']}) {role}: {_describe(run)}")
    if same:
        runs["best"] = runs["default"]
    study.set_user_attr(CONFIRM_ATTR, {"key": key, "runs": runs})
    return runs


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _figures(runs: Sequence[Mapping[str, Any]]) -> TrainingFigures:
    """The median run of side-by-side rounds."""
    first = runs[0]
    reached = all(r["reached"] for r in runs)
    return TrainingFigures(
        config=dict(first["config"]),
        label=str(first["label"]),
        reached=reached,
        epochs=int(statistics.median(r["epochs"] for r in runs)),
        energy_to_target_j=_median([r["energy_to_target_j"] for r in runs]) if reached else None,
        time_to_target_s=_median([r["time_to_target_s"] for r in runs]) if reached else None,
        energy_source=str(first["energy_source"]),
        energy_uncertainty=float(first["energy_uncertainty"]),
        accuracy=_median([r["accuracy"] for r in runs]),
        rounds_energy_j=[r["energy_to_target_j"] for r in runs],
        rounds_time_s=[r["time_to_target_s"] for r in runs],
    )


def _row_figures(row: Mapping[str, Any]) -> TrainingFigures:
    return TrainingFigures(
        config=dict(row["config"]),
        label=str(row["label"]),
        reached=bool(row["reached"]),
        epochs=int(row.get("epochs") or 0),
        energy_to_target_j=row.get("energy_to_target_j"),
        time_to_target_s=row.get("time_to_target_s"),
        energy_source=str(row.get("energy_source")),
        energy_uncertainty=float(row.get("energy_uncertainty") or 0.0),
        accuracy=row.get("accuracy"),
    )


def _ratio(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], key: str
) -> tuple[float | None, list[float]]:
    """The default's mean over the best's, over the rounds where both reached the target, and
    the ratio within each of those rounds.

    Not the median of the within-round ratios: each round has its own seed, and under two
    configurations one seed gives two unrelated runs (other batches, another rate), so a round's
    pair is matched in time (the machine's drift cancels) but not in luck. On digits, whether
    a run crosses the target at epoch 2 or 3 is a coin toss per run, and the ratio within a
    round is 1 : 1.5 or 1.5 : 1 by chance; the mean over rounds is what a run costs."""
    pairs = [
        (d[key], b[key])
        for d, b in zip(runs["default"], runs["best"], strict=True)
        if d["reached"] and b["reached"] and b[key]
    ]
    ratios = [d / b for d, b in pairs]
    if not pairs:
        return None, ratios
    return statistics.fmean(d for d, _ in pairs) / statistics.fmean(b for _, b in pairs), ratios


def _report(
    settings: TrainingSettings,
    rows: list[dict[str, Any]],
    default_row: Mapping[str, Any] | None,
    best_row: Mapping[str, Any] | None,
    confirmed: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    *,
    profile: Mapping[str, Any] | None = None,
    rounds: int,
    hardware: dict[str, Any],
    study: str,
    storage: str,
    search_time_s: float,
) -> TrainingReport:
    notes: list[str] = []
    energy_ratio = time_ratio = None
    prediction = None
    default: TrainingFigures | None
    best: TrainingFigures | None
    spent = sum(float(r.get("energy_j") or 0.0) for r in rows)
    if profile and profile.get("rows"):
        spent += float(profile.get("energy_j") or 0.0)
        recipe = profile["rows"][0]
        ranked = sorted(profile["rows"], key=lambda r: r["j_per_item"])
        notes.append(
            "step profile (the recipe's step under each precision, thread count and memory "
            f"format, median of {profile.get('rounds')} rounds side by side, "
            f"{profile.get('energy_source')}): "
            + "; ".join(
                f"{settings.space.config(r['params']).label()} "
                f"{recipe['j_per_item'] / r['j_per_item']:.2f}x"
                for r in ranked
            )
        )
    elif profile and profile.get("failed"):
        notes.append(f"the step profile failed: {profile['failed']}")
    if confirmed is not None:
        default = _figures(confirmed["default"])
        best = _figures(confirmed["best"])
        energy_ratio, ratios = _ratio(confirmed, "energy_to_target_j")
        time_ratio, _ = _ratio(confirmed, "time_to_target_s")
        prediction = confirmed["default"][0].get("prediction")
        distinct = {id(runs): runs for runs in confirmed.values()}.values()  # best may be default
        spent += sum(float(r.get("energy_j") or 0.0) for runs in distinct for r in runs)
        seeds = sorted({r["seed"] for r in confirmed["default"] if "seed" in r})
        if seeds:
            notes.append(
                f"the side-by-side rounds train with seeds {', '.join(map(str, seeds))}, which "
                f"the search (seed {settings.seed}) did not use"
            )
        if ratios:
            notes.append(
                "energy_ratio is the default's mean energy to target over the best's, over "
                f"{len(ratios)} rounds; within each round: "
                f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"
            )
        if not default.reached:
            notes.append("the task's default recipe did not reach the target in every round")
    else:
        default = _row_figures(default_row) if default_row else None
        best = _row_figures(best_row) if best_row else None
        prediction = default_row.get("prediction") if default_row else None
        if best_row is None:
            notes.append("no configuration reached the target")
        elif rounds == 0:
            notes.append("no side-by-side rounds (rounds=0): figures are single runs, no ratio")
    shown = best or default
    source = shown.energy_source if shown is not None else "none"
    uncertainty = shown.energy_uncertainty if shown is not None else 0.0
    if source.startswith("estimated:"):
        notes.append(
            f"energy is {source}, an estimate (±{uncertainty:.0%} absolute); ratios taken side "
            "by side on one machine are far tighter than the absolute joules"
        )
    return TrainingReport(
        task=settings.task_name,
        target_accuracy=settings.target_accuracy,
        meter={"source": source, "uncertainty": uncertainty},
        hardware=hardware,
        default=default,
        best=best,
        energy_ratio=energy_ratio,
        time_ratio=time_ratio,
        rounds=rounds if confirmed is not None else 0,
        front=front(rows),
        prediction=prediction,
        trials=rows,
        search_energy_j=spent,
        search_time_s=search_time_s,
        study=study,
        storage=storage,
        artifact="artifact" if confirmed is not None else None,
        notes=notes,
    )


def write_training(report: TrainingReport, out_dir: Path) -> dict[str, Path]:
    """``training.json`` and ``training.html`` in ``out_dir``, each written whole or not at all."""
    from wattwise._fs import atomic_write_texts, record_outputs
    from wattwise.report import render_training_html

    files = {
        out_dir / "training.json": json.dumps(report.to_dict(), indent=1, default=str) + "\n",
        out_dir / "training.html": render_training_html(report.to_dict()),
    }
    record_outputs(out_dir, [p.name for p in files])
    atomic_write_texts(files)
    paths = {"json": out_dir / "training.json", "html": out_dir / "training.html"}
    if report.artifact and (out_dir / report.artifact).is_dir():
        paths["artifact"] = out_dir / report.artifact
    return paths


# ----------------------------------------------------------------------------- one run


def predict_run(
    task: Task | str = "digits",
    *,
    target_accuracy: float | None = None,
    config: Any = None,
    device: str = "cpu",
    seed: int = 0,
    meter: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Train once (the task's recipe, or ``config``) in a child process, printing the
    prediction for the whole run to stderr after its first epoch; returns the run (see
    :func:`~wattwise.training._run.train_job`), its ``prediction`` settled with the actual
    figures and their error. With ``target_accuracy`` the run stops when it is reached."""
    from wattwise.measure import check_device, run_isolated
    from wattwise.search._objective import TaskRef
    from wattwise.search._optimize import _load_task
    from wattwise.tasks import TrainConfig

    target = None if target_accuracy is None else _number(target_accuracy, "target_accuracy")
    cfg = config if config is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    device = check_device(device)
    task_obj, spec = _load_task(task)
    ref = TaskRef(spec, None if spec is not None else task_obj)
    run = run_isolated(
        train_job,
        ref,
        RunSpec(cfg.to_dict(), target, seed=seed, device=device, meter=meter, announce=True),
        threads=cfg.threads,
        timeout_s=_number(timeout_s, "timeout_s", low=1),
        what="training run",
    )
    return dict(run)


# ----------------------------------------------------------------------------- workers


def find_training_study(storage: str, name: str) -> optuna.Study | None:
    """The study ``name`` if it is a training study, ``None`` if it is another kind.

    Raises:
        InputError: no such study, or the storage cannot be opened.
    """
    from wattwise.search._storage import open_storage, storage_errors
    from wattwise.search._study import quiet_optuna

    with quiet_optuna(), storage_errors(storage):
        study = open_training_study(open_storage(storage), name, None, url=storage, any_kind=True)
    return study if training_settings(study) is not None else None


def run_training_worker(
    storage: str,
    study: str,
    *,
    out: str | Path = "wattwise-worker",
    task: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> int:
    """Join the training study ``study`` in ``storage`` from another process or machine: run
    its candidates until the budget is met. The side-by-side rounds and the files are the
    starting command's. Returns the number of finished trials in the study.

    Raises:
        InputError: no such study, not a training study, a task object's study without
            ``task``, or a ``task`` that is not the study's (its data or recipe differ).
    """
    from wattwise.measure import check_device
    from wattwise.search._objective import TaskRef, task_id
    from wattwise.search._outdir import check_out_dir
    from wattwise.search._space import restore_power_limits
    from wattwise.search._storage import storage_errors
    from wattwise.search._study import quiet_optuna
    from wattwise.tasks import load_task

    the_study = find_training_study(storage, study)
    settings = training_settings(the_study) if the_study is not None else None
    if the_study is None or settings is None:
        raise InputError(f"study {study!r} is not a wattwise training study")
    spec = task if task is not None else settings.task_spec
    if spec is None:
        raise InputError("this study's task was given as a Python object; pass --task SPEC")
    if task_id(load_task(spec), settings.task_spec) != settings.task_id:
        raise InputError(f"task {spec!r} is not study {study!r}'s (its data or recipe differ)")
    if device is not None:
        settings = dataclasses.replace(settings, device=check_device(device))
    restore_power_limits(settings.device)
    out_dir = Path(out).expanduser()
    check_out_dir(out_dir)
    with quiet_optuna(), storage_errors(storage):
        _run_trials(the_study, settings, TaskRef(spec), out_dir, _say(progress))
        return sum(1 for t in the_study.get_trials(deepcopy=False) if t.state.is_finished())
