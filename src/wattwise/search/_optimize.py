"""``optimize``: the energy-aware search, end to end, and the results it writes.

The loop (see DESIGN.md): train and measure the baseline (fp32 eager) → run trials (each a
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
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError
from wattwise.search._objective import JobContext, TaskRef, baseline_job, export_job, task_id
from wattwise.search._outdir import check_out_dir
from wattwise.search._progress import SearchProgress
from wattwise.search._space import Candidate, SearchSpace, default_space, seed_params
from wattwise.search._study import (
    BASELINE_ATTR,
    FIGURES,
    SearchSettings,
    count_trials,
    counts_for_budget,
    default_storage,
    open_storage,
    open_study,
    quiet_optuna,
    run_trials,
    storage_errors,
    trial_rows,
)

if TYPE_CHECKING:
    import optuna

    from wattwise.tasks import Task

__all__ = ["DEFAULT_TRIALS", "OptimizeResult", "optimize", "report_study", "run_worker"]

# The default search: sized so that on a 2-core CPU the digits task (training included) ends
# in a few minutes, leaving room under the 10-minute budget for a busier machine.
DEFAULT_TRIALS = 20
DEFAULT_MAX_TIME_S = 2.0
DEFAULT_TIMEOUT_PER_TRIAL_S = 300.0
BASELINE_TIMEOUT_S = 3600.0
RESULTS_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize` found.

    Attributes:
        results: the ``results.json`` document (DESIGN.md, schema 1).
        trials: one dict per trial (the rows of ``trials.csv``).
        out_dir: the output directory.
        paths: ``json``, ``csv``, ``html`` (and ``artifact`` when one was exported).
        interrupted: the search was stopped by Ctrl-C before its budget was used.
    """

    results: dict[str, Any]
    trials: list[dict[str, Any]]
    out_dir: Path
    paths: dict[str, Path]
    interrupted: bool = False

    @property
    def baseline(self) -> dict[str, Any]:
        return dict(self.results.get("baseline") or {})

    @property
    def best(self) -> dict[str, Any] | None:
        best = self.results.get("best")
        return dict(best) if best else None

    @property
    def energy_ratio(self) -> float | None:
        """Baseline J/item over best J/item (5.0 = five times less energy per item)."""
        value = self.results.get("energy_ratio")
        return float(value) if value is not None else None

    @property
    def payback_items(self) -> float | None:
        value = self.results.get("payback_items")
        return float(value) if value is not None else None


def _load_task(task: Any) -> tuple[Task, str | None]:
    from wattwise.tasks import Task, load_task

    if isinstance(task, Task):
        return task, None
    if isinstance(task, str):
        return load_task(task), task.strip()
    raise InputError(
        f"task must be a wattwise Task or a name / 'package.module:factory', got {type(task).__name__}"
    )


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
    on_trial: Callable[[dict[str, Any]], None] | None = None,
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

    Returns:
        An :class:`OptimizeResult`. With Ctrl-C, the trial in flight is failed as interrupted
        (it is queued again for the next run) and the partial results are returned with
        ``interrupted=True``.

    Raises:
        InputError: bad arguments, a task that can't be loaded, an unwritable output
            directory, an unreachable storage, or a study name used for another task.

    Example:
        >>> result = wattwise.optimize("digits", max_accuracy_drop=0.01, trials=20)
        >>> result.best["energy_j_per_item"], result.best["energy_source"], result.payback_items
    """
    from wattwise.measure import check_device

    # Cheap checks first: a bad argument must fail before anything is trained or written.
    if not isinstance(scenario, str) or scenario not in ("offline", "online"):
        raise InputError(f"scenario must be 'offline' or 'online', got {scenario!r}")
    device = check_device(device)
    if study is not None and (not isinstance(study, str) or not study.strip()):
        raise InputError(f"study must be a non-empty name, got {study!r}")
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
    )
    created = check_out_dir(out_dir)
    url = storage if storage is not None else default_storage(out_dir)
    name = study.strip() if study else f"{task_obj.name}-{scenario}"
    try:
        store = open_storage(url)
        with quiet_optuna(), storage_errors(url):
            the_study, settings = open_study(
                store, name, settings, url=url, seeds=seed_params(space)
            )
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    ctx = JobContext(
        task=TaskRef(spec, None if spec is not None else task_obj),
        task_id=settings.task_id,
        cache_dir=str(out_dir / "cache"),
        seed=settings.seed,
        device=device,
        meter=meter,
    )
    return _search(
        the_study,
        settings,
        ctx,
        out_dir=out_dir,
        url=url,
        export=export,
        progress=progress,
        on_trial=on_trial,
    )


def run_worker(
    storage: str,
    study: str,
    *,
    out: str | os.PathLike[str] = "wattwise-worker",
    task: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> OptimizeResult:
    """Join an existing study (``wattwise worker``): run its trials on this machine until its
    budget is used, then write results from all workers' trials to ``out``.

    Args:
        storage: the study's RDB URL (usually ``postgresql://...``).
        study: the study's name.
        out: this worker's output directory (its model cache and a copy of the results).
        task: the task spec, needed only when the study was started from a Python ``Task``.
        device: where this worker measures (default: the study's device).
    """
    from wattwise.measure import check_device

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
    check_out_dir(out_dir)
    dev = check_device(device or settings.device)
    ctx = JobContext(
        task=TaskRef(spec),
        task_id=settings.task_id,
        cache_dir=str(out_dir / "cache"),
        seed=settings.seed,
        device=dev,
        meter=settings.meter,
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
    )


def _ensure_baseline(
    the_study: optuna.Study, settings: SearchSettings, ctx: JobContext, progress: SearchProgress
) -> dict[str, Any]:
    """The study's baseline: measured once (stored in the study), reused by every run."""
    from wattwise.measure import run_isolated

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
    )
    cache.mkdir(parents=True, exist_ok=True)
    the_study.set_user_attr(BASELINE_ATTR, result)
    return result  # type: ignore[no-any-return]


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    feasible = [r for r in rows if r["feasible"]]
    if not feasible:
        return None
    # Lowest J/item; ties (within the same figure) go to the higher accuracy, then lower p90.
    return min(
        feasible,
        key=lambda r: (r["energy_j_per_item"], -r["accuracy"], r["latency_ms_p90"], r["number"]),
    )


def _search(
    the_study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    *,
    out_dir: Path,
    url: str,
    export: bool,
    progress: bool | None,
    on_trial: Callable[[dict[str, Any]], None] | None,
) -> OptimizeResult:
    """Run the search; a database failing under it (a server restart) becomes one line."""
    with storage_errors(url):
        import io

        start = time.monotonic()
        stream = io.StringIO() if progress is False else None
        counts = count_trials(the_study.get_trials(deepcopy=False))
        interrupted = False
        notes: list[str] = []
        export_ledger: dict[str, Any] = {}
        with SearchProgress(settings.trials, done=counts.counted, stream=stream) as bar:
            baseline = _ensure_baseline(the_study, settings, ctx, bar)
            base_acc = float(baseline["accuracy"])
            bar.message(
                f"baseline: accuracy {base_acc:.4f}, "
                f"{baseline['energy_j_per_item'] * 1e3:.4g} mJ/item ({baseline['energy_source']} "
                f"±{baseline['energy_uncertainty']:.0%}), p90 {baseline['latency_ms_p90']:.3g} ms"
            )

            def on_end(trial: optuna.trial.FrozenTrial) -> None:
                rows = trial_rows(the_study.get_trials(deepcopy=False), base_acc, settings)
                row = next((r for r in rows if r["number"] == trial.number), None)
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
                notes.append("interrupted (Ctrl-C): rerun the same command to resume the search")

            all_trials = the_study.get_trials(deepcopy=False)
            rows = trial_rows(all_trials, base_acc, settings)
            best = _best(rows)
            artifact: Path | None = None
            if best is not None and export and not interrupted:
                artifact, export_ledger, note = _export_best(
                    the_study, settings, ctx, best, out_dir, bar
                )
                if note:
                    notes.append(note)
        results = _results(
            the_study,
            settings,
            baseline,
            rows,
            best,
            artifact,
            url=url,
            export_ledger=export_ledger,
            elapsed_s=time.monotonic() - start,
            interrupted=interrupted,
            notes=notes,
        )
        paths = _write_outputs(results, rows, out_dir)
        if artifact is not None:
            paths["artifact"] = artifact
        return OptimizeResult(results, rows, out_dir, paths, interrupted)


def _export_best(
    the_study: optuna.Study,
    settings: SearchSettings,
    ctx: JobContext,
    best: Mapping[str, Any],
    out_dir: Path,
    bar: SearchProgress,
) -> tuple[Path | None, dict[str, Any], str | None]:
    """Export the best candidate to ``OUT/artifact`` unless it is there already."""
    from wattwise.measure import run_isolated

    target = out_dir / "artifact"
    trial = the_study.trials[best["number"]]
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
            best.get("accuracy"),
            how,
            timeout_s=settings.timeout_per_trial_s,
            what="export",
        )
    except Exception as exc:
        return None, {}, f"the best deployment was not exported: {' '.join(str(exc).split())}"
    return Path(done["path"]), done.get("ledger") or {}, None


def _figures(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in FIGURES}


def _search_energy(
    baseline: Mapping[str, Any], trials: list[optuna.trial.FrozenTrial], export: Mapping[str, Any]
) -> tuple[float, str | None, float | None, dict[str, float]]:
    """Joules the whole search spent (every worker, every trial, failed ones too)."""
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
    add(export, "export_")
    total = sum(by_phase.values())
    source = "+".join(sorted(sources)) if sources else None
    return total, source, (max(uncertainties) if uncertainties else None), by_phase


def _results(
    the_study: optuna.Study,
    settings: SearchSettings,
    baseline: Mapping[str, Any],
    rows: list[dict[str, Any]],
    best: Mapping[str, Any] | None,
    artifact: Path | None,
    *,
    url: str,
    export_ledger: Mapping[str, Any],
    elapsed_s: float,
    interrupted: bool,
    notes: list[str],
) -> dict[str, Any]:
    from wattwise.measure._hardware import hardware_info
    from wattwise.report import redact_url

    trials = the_study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    search_j, source, unc, by_phase = _search_energy(baseline, trials, export_ledger)
    base: dict[str, Any] = {
        **{k: baseline.get(k) for k in FIGURES},
        "recipe": [],
        "deployment": baseline.get("deployment"),
    }
    best_doc = None
    ratio = payback = None
    if best is not None:
        best_doc = {
            "number": best["number"],
            **_figures(best),
            "accuracy_drop": best["accuracy_drop"],
            "recipe": best["recipe"],
            "student": best["student"],
            "deployment": best["deployment"],
            "label": best.get("label"),
            "artifact": str(artifact) if artifact is not None else None,
        }
        saving = float(baseline["energy_j_per_item"]) - float(best["energy_j_per_item"])
        ratio = float(baseline["energy_j_per_item"]) / float(best["energy_j_per_item"])
        payback = search_j / saving if saving > 0 else None
        if best["energy_source"] != baseline.get("energy_source"):
            notes.append(
                f"baseline and best were measured by different meters ({baseline.get('energy_source')} "
                f"vs {best['energy_source']}): their ratio mixes sources"
            )
    else:
        notes.append("no candidate met the constraints: there is no best deployment")
    if str(baseline.get("energy_source", "")).startswith("estimated:"):
        notes.append(
            f"energy figures are estimates ({baseline.get('energy_source')}, "
            f"±{float(baseline.get('energy_uncertainty') or 0):.0%}): this machine has no energy "
            "counter; ratios between candidates measured here are much firmer than absolute joules"
        )
    pareto = [
        {
            "number": r["number"],
            **_figures(r),
            "accuracy_drop": r["accuracy_drop"],
            "recipe": r["recipe"],
            "student": r["student"],
            "deployment": r["deployment"],
            "label": r.get("label"),
        }
        for r in sorted((r for r in rows if r["pareto"]), key=lambda r: r["energy_j_per_item"])
    ]
    return {
        "schema": RESULTS_SCHEMA,
        "task": settings.task_name,
        "task_spec": settings.task_spec,
        "study": the_study.study_name,
        "storage": redact_url(url),
        "scenario": settings.scenario,
        "max_accuracy_drop": settings.max_accuracy_drop,
        "latency_p90_ms": settings.latency_p90_ms,
        "hardware": hardware_info(include_cuda=settings.device.startswith("cuda")),
        "meter": {
            "source": baseline.get("energy_source"),
            "uncertainty": baseline.get("energy_uncertainty"),
        },
        "baseline": base,
        "best": best_doc,
        "energy_ratio": ratio,
        "pareto": pareto,
        "trials": counts.counted,
        "failed_trials": counts.failed,
        "trials_budget": settings.trials,
        "interrupted_trials": counts.interrupted,
        "search_energy_j": search_j,
        "search_energy_source": source,
        "search_energy_uncertainty": unc,
        "search_energy_by_phase_j": by_phase,
        "payback_items": payback,
        "elapsed_s": elapsed_s,
        "interrupted": interrupted,
        "notes": notes,
    }


def _write_outputs(
    results: dict[str, Any], rows: list[dict[str, Any]], out_dir: Path
) -> dict[str, Path]:
    from wattwise.report import render_report

    try:
        return render_report(results, rows, out_dir)
    except OSError as exc:
        raise InputError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None


def report_study(
    storage: str, study: str, *, out: str | os.PathLike[str] = "wattwise-report"
) -> OptimizeResult:
    """Write ``results.json``, ``trials.csv`` and ``report.html`` for a study as it stands now
    (``wattwise report``), running nothing."""
    with quiet_optuna():
        store = open_storage(storage)
        the_study, settings = open_study(store, study, None, url=storage)
    baseline = the_study.user_attrs.get(BASELINE_ATTR)
    if not isinstance(baseline, dict) or not baseline.get("ok"):
        raise InputError(f"study {study!r} has no measured baseline yet: nothing to report")
    out_dir = Path(out).expanduser()
    check_out_dir(out_dir)
    rows = trial_rows(the_study.get_trials(deepcopy=False), float(baseline["accuracy"]), settings)
    best = _best(rows)
    results = _results(
        the_study,
        settings,
        baseline,
        rows,
        best,
        None,
        url=storage,
        export_ledger={},
        elapsed_s=0.0,
        interrupted=False,
        notes=[],
    )
    return OptimizeResult(results, rows, out_dir, _write_outputs(results, rows, out_dir))
