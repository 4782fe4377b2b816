"""The search commands: ``optimize``, ``worker``, ``report`` and ``check``.

Results go to stdout (the summary table), progress to stderr. Exit codes as for every
command (:mod:`wattwise.cli._errors`): 0 ok, 1 a budget broken (``check``), 2 bad input,
130 or 143 interrupted by SIGINT or SIGTERM (after the partial summary).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise._units import MISSING, format_energy, format_energy_figure
from wattwise.cli._app import app
from wattwise.cli._errors import EXIT_INTERRUPTED, EXIT_TERMINATED, handled
from wattwise.cli._options import Currency, Device, StudyName, StudyStorage, TaskSpec
from wattwise.cli._output import stdout_to_stderr
from wattwise.errors import InputError
from wattwise.results import Figures, Results

if TYPE_CHECKING:
    from wattwise.search import OptimizeResult

__all__ = ["print_summary", "recipe_text"]


def _exit_if_interrupted(result: OptimizeResult) -> None:
    if result.interrupted:
        raise typer.Exit(
            EXIT_TERMINATED if result.interrupted_by == "SIGTERM" else EXIT_INTERRUPTED
        )


def _fmt_num(value: Any, fmt: str = "{:.3g}") -> str:
    if value is None:
        return MISSING
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _deployment_label(dep: Mapping[str, Any] | None) -> str:
    if not isinstance(dep, Mapping):
        return MISSING
    threads = f" t{dep['threads']}" if dep.get("threads") else ""
    return f"{dep.get('backend')}/{dep.get('precision')} b{dep.get('batch_size')}{threads}"


def recipe_text(recipe: Any) -> str:
    """``prune(ratio=0.5, finetune_epochs=5) → quantize(method=pt2e-int8)``; "none" for []."""
    if not recipe:
        return "none (the trained baseline model)"
    parts = []
    for p in recipe:
        if not isinstance(p, Mapping):
            parts.append(str(p))
            continue
        args = []
        for key, value in p.items():
            if key in ("type", "version"):
                continue
            if isinstance(value, dict):
                value = "(" + ", ".join(f"{k}={v}" for k, v in value.items()) + ")"
            args.append(f"{key}={value}")
        parts.append(f"{p.get('type')}({', '.join(args)})")
    return " → ".join(parts)


def _ratio_words(res: Results) -> list[str]:
    """Both headline ratios in words: what batching and threads give alone, and what
    compression plus the runtime add on top."""
    total, same = res.energy_ratio, res.energy_ratio_same_batch
    if same is None or total is None:
        return []
    conf = res.confirmation
    rounds = conf.rounds if conf is not None else None
    spread = conf.spread if conf is not None else None
    where = f"median of {rounds} side-by-side rounds" + (
        f"; widest spread of a candidate's rounds {spread:.0%} of its median"
        if spread is not None
        else ""
    )
    sb = res.baseline_same_batch
    return [
        f"headline: {same:.3g}x less energy per item than fp32 eager at the same batch "
        f"({_deployment_label(sb.deployment if sb else None)}) ({where})",
        f"  from fp32 eager at batch 1: {total:.3g}x in all = {total / same:.3g}x from "
        f"batching and threads alone × {same:.3g}x from compression and the runtime",
    ]


def _token_energy(joules: float | None, source: Figures) -> str:
    """A per-token energy with its source (the baseline's: one meter measures a run)."""
    if joules is None:
        return MISSING
    return format_energy_figure(joules, source.energy_source, source.energy_uncertainty)


def _energy(figures: Figures | None) -> str:
    if figures is None:
        return MISSING
    n = figures.disturbed_windows
    disturbed = f" ⚠ {n} disturbed" if n else ""
    return (
        format_energy_figure(
            figures.energy_j_per_item, figures.energy_source, figures.energy_uncertainty
        )
        + disturbed
    )


def print_summary(result: OptimizeResult, *, file: Any = None) -> None:
    """The summary table: baseline, fp32 eager at the winner's batch, and best, with sources,
    both ratios in words, payback and paths."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    res = result.document
    base = res.baseline.figures
    same = res.baseline_same_batch.figures if res.baseline_same_batch is not None else None
    best = res.best.figures if res.best is not None else None
    table = Table(
        title=f"wattwise optimize: {res.task} ({res.scenario}), study {res.study}",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("baseline", justify="right")
    if same:
        table.add_column("fp32 eager, same batch", justify="right")
    table.add_column("best", justify="right")
    table.add_column("ratio (same batch)", justify="right")
    ref = same or base

    def ratio(key: str, invert: bool = False) -> str:
        if res.energy_ratio_same_batch is None and key in (
            "energy_j_per_item",
            "throughput_items_per_s",
        ):
            return ""  # single measurements minutes apart: not a ratio we publish
        if key == "energy_j_per_item":  # the median of within-round ratios, as published
            return f"{res.energy_ratio_same_batch:.3g}x"
        a, b = getattr(ref, key), getattr(best, key) if best is not None else None
        if not a or not b:
            return ""
        return f"{(a / b if not invert else b / a):.3g}x"

    b = best or Figures()
    s = same or Figures()

    def row(name: str, a: str, sb: str, c: str, r: str) -> None:
        table.add_row(name, a, *([sb] if same else []), c, r)

    def figure_row(name: str, key: str, fmt: str, r: str) -> None:
        a, sb, c = (_fmt_num(getattr(f, key), fmt) for f in (base, s, b))
        row(name, a, sb, c, r)

    row(
        "what",
        _deployment_label(res.baseline.deployment),
        _deployment_label(res.baseline_same_batch.deployment if res.baseline_same_batch else None),
        (res.best.label if res.best else None) or MISSING,
        "",
    )
    drop = res.best.accuracy_drop if res.best is not None else None
    figure_row(
        "accuracy",
        "accuracy",
        "{:.4f}",
        _fmt_num(-drop * 100 if drop is not None else None, "{:+.2f} pt"),
    )
    generative = base.decode_energy_j_per_token is not None
    row(
        "energy / response" if generative else "energy / item",
        _energy(base),
        _energy(same),
        _energy(best),
        ratio("energy_j_per_item"),
    )
    if generative:
        # Each phase's ratio is the confirmation's median of within-round ratios.
        conf = res.confirmation
        for phase in ("prefill", "decode"):
            key = f"{phase}_energy_j_per_token"
            paired = conf.ratio(f"{phase}_energy_ratio_same_batch") if conf else None
            row(
                f"{phase} energy / token",
                _token_energy(getattr(base, key), base),
                _token_energy(getattr(s, key), base),
                _token_energy(getattr(b, key), base),
                f"{paired:.3g}x" if paired is not None and res.energy_ratio_same_batch else "",
            )
        figure_row("p90 time to first token", "ttft_ms_p90", "{:.3g} ms", "")
        figure_row("p90 time between tokens", "tbt_ms_p90", "{:.3g} ms", "")
        figure_row("tokens / s", "tokens_per_s", "{:.4g}", ratio("tokens_per_s", invert=True))
    else:
        figure_row("p90 latency / call", "latency_ms_p90", "{:.3g} ms", "")
    figure_row(
        "throughput",
        "throughput_items_per_s",
        "{:.4g} items/s",
        ratio("throughput_items_per_s", invert=True),
    )
    figure_row("MACs / item", "macs_per_item", "{:.4g}", ratio("macs_per_item"))
    figure_row("params", "params", "{:,}", ratio("params"))
    console.print(table)
    lines = _ratio_words(res)
    lines += [
        f"trials: {res.trials} of {res.trials_budget} "
        f"({res.failed_trials} failed), Pareto front: {len(res.pareto)}",
        f"search energy: {format_energy(res.search_energy_j)} ({res.search_energy_source}); "
        + (
            f"pays back after {res.payback_items:.3g} items (against fp32 eager at the same "
            "batch: the conservative figure)"
            if res.payback_items is not None
            else "no payback figure (no confirmed saving per item at the same batch)"
        ),
    ]
    if res.best is not None:
        lines.append(f"recipe: {recipe_text(res.best.recipe)}")
        lines.append(f"artifact: {res.best.artifact or '— (not exported)'}")
    for key in ("html", "json", "csv"):
        if key in result.paths:
            lines.append(f"{key}: {result.paths[key]}")
    for note in res.notes:
        lines.append(f"note: {note}")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
@handled
def optimize(
    task: TaskSpec = "digits",
    max_accuracy_drop: Annotated[
        float,
        typer.Option("--max-accuracy-drop", help="Largest accepted metric drop (0.01 = 1 point)."),
    ] = 0.01,
    latency_p90_ms: Annotated[
        float | None,
        typer.Option("--latency-p90-ms", help="Bound on the p90 latency of one call, ms."),
    ] = None,
    scenario: Annotated[
        str, typer.Option(help="offline (batches free) or online (one query at a time).")
    ] = "offline",
    trials: Annotated[
        int | None,
        typer.Option(help="Trial budget, counted across reruns and workers (resumes)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL (default sqlite:///OUT/wattwise.db; postgresql://... for workers)."
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default TASK-SCENARIO).")] = None,
    out: Annotated[str, typer.Option(help="Output directory.")] = "wattwise-out",
    device: Device = "cpu",
    seed: Annotated[int, typer.Option(min=0, help="Seed for training and sampling.")] = 0,
    timeout_per_trial: Annotated[
        float,
        typer.Option(
            "--timeout-per-trial-s",
            min=1.0,
            help="Kill and fail a trial after this many seconds.",
        ),
    ] = 300.0,
    max_time_s: Annotated[
        float,
        typer.Option(
            "--max-time-s", min=0.1, help="Soft cap on measuring each candidate, seconds."
        ),
    ] = 2.0,
    space: Annotated[
        str | None,
        typer.Option(
            help="YAML/JSON file with the candidate space (models, deployments, "
            "batch_sizes, threads); default: chosen for the task and scenario."
        ),
    ] = None,
    confirm_rounds: Annotated[
        int | None,
        typer.Option(
            "--confirm-rounds",
            min=0,
            help="Side-by-side rounds that confirm the headline (default 3; 0 skips it "
            "and publishes no ratio).",
        ),
    ] = None,
    grid_intensity: Annotated[
        float | None,
        typer.Option(
            "--grid-intensity",
            help="Grid carbon intensity, g CO2e/kWh (default: world average 480).",
        ),
    ] = None,
    price_per_kwh: Annotated[
        float | None,
        typer.Option("--price-per-kwh", help="Electricity price per kWh (default 0.15)."),
    ] = None,
    currency: Currency = "USD",
    training: Annotated[
        str | None,
        typer.Option(
            help="A training.json from 'wattwise train': the search's fine-tunes train with "
            "its best configuration (default: the task's recipe)."
        ),
    ] = None,
) -> None:
    """Search compression × students × deployments for the least energy per item."""
    from wattwise.search import DEFAULT_TRIALS, load_space
    from wattwise.search import optimize as run
    from wattwise.training import load_training

    train_config = None
    if training is not None:
        tuned = load_training(training)
        if tuned.best is None:
            raise InputError(f"{training}: no configuration reached its target; nothing to use")
        train_config = tuned.best.train_config

    # The user's task is imported and built in this process: what it prints goes to stderr,
    # so stdout holds the summary alone (trials' output goes to OUT/logs/).
    with stdout_to_stderr():
        result = run(
            task,
            space=load_space(space) if space is not None else None,
            max_accuracy_drop=max_accuracy_drop,
            latency_p90_ms=latency_p90_ms,
            scenario=scenario,
            trials=DEFAULT_TRIALS if trials is None else trials,
            storage=storage,
            study=study,
            out=out,
            device=device,
            seed=seed,
            timeout_per_trial_s=timeout_per_trial,
            max_time_s=max_time_s,
            confirm_rounds=confirm_rounds,
            grid_intensity_g_per_kwh=grid_intensity,
            price_per_kwh=price_per_kwh,
            currency=currency,
            training=train_config,
        )
    print_summary(result)
    _exit_if_interrupted(result)


@app.command()
@handled
def worker(
    storage: StudyStorage,
    study: StudyName,
    out: Annotated[
        str, typer.Option(help="This worker's directory (model cache, results copy).")
    ] = "wattwise-worker",
    task: Annotated[
        str | None,
        typer.Option(help="Task spec, only for studies started from a Python Task object."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device to measure on (default: the study's).")
    ] = None,
) -> None:
    """Join a study from this machine and run its trials until its budget is used."""
    from wattwise.search import run_worker
    from wattwise.training import find_training_study, run_training_worker

    with stdout_to_stderr():
        training = find_training_study(storage, study)
        if training is not None:  # a `wattwise train` study: its runs, no summary of ours
            n = run_training_worker(storage, study, out=out, task=task, device=device)
    if training is not None:
        typer.echo(f"study {study}: {n} trial(s); the starting `wattwise train` writes the results")
        return
    with stdout_to_stderr():
        result = run_worker(storage, study, out=out, task=task, device=device)
    print_summary(result)
    _exit_if_interrupted(result)


@app.command()
@handled
def report(
    storage: StudyStorage,
    study: StudyName,
    out: Annotated[str, typer.Option(help="Where to write the report.")] = "wattwise-report",
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm",
            help="Measure the headline again here, side by side (baseline, fp32 eager at "
            "the winner's batch, winner, runner-up) before reporting.",
        ),
    ] = False,
    confirm_rounds: Annotated[
        int, typer.Option("--confirm-rounds", min=3, help="Rounds for --confirm.")
    ] = 3,
    grid_intensity: Annotated[
        float | None,
        typer.Option("--grid-intensity", help="Grid carbon intensity, g CO2e/kWh."),
    ] = None,
    price_per_kwh: Annotated[
        float | None, typer.Option("--price-per-kwh", help="Electricity price per kWh.")
    ] = None,
    currency: Currency = "USD",
) -> None:
    """Write report.html, results.json and trials.csv for a study as it stands."""
    from wattwise.search import report_study

    with stdout_to_stderr():
        result = report_study(
            storage,
            study,
            out=out,
            confirm_rounds=confirm_rounds if confirm else 0,
            grid_intensity_g_per_kwh=grid_intensity,
            price_per_kwh=price_per_kwh,
            currency=currency,
        )
    print_summary(result)


@app.command()
@handled
def check(
    results: Annotated[
        str,
        typer.Argument(help="A results.json written by wattwise optimize.", show_default=False),
    ],
    max_energy_per_item: Annotated[
        str | None,
        typer.Option("--max-energy-per-item", help="Budget per item, e.g. 2mJ or 0.5J."),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option("--max-accuracy-drop", help="Budget on the metric drop (0.01 = 1 point)."),
    ] = None,
    max_latency_p90_ms: Annotated[
        float | None, typer.Option("--max-latency-p90-ms", help="Budget on p90 latency, ms.")
    ] = None,
) -> None:
    """Exit 1 if the best deployment in RESULTS breaks a budget (a CI gate)."""
    from wattwise._units import parse_quantity
    from wattwise.errors import CheckFailed
    from wattwise.search import check_results, load_results

    energy = parse_quantity(max_energy_per_item, "J") if max_energy_per_item is not None else None
    doc = load_results(results)
    breaches = check_results(
        doc,
        max_energy_j_per_item=energy,
        max_accuracy_drop=max_accuracy_drop,
        max_latency_p90_ms=max_latency_p90_ms,
    )
    if breaches:
        raise CheckFailed("; ".join(b.message for b in breaches))
    best = doc.best.figures if doc.best is not None else Figures()
    drop = (doc.best.accuracy_drop if doc.best is not None else None) or 0
    print(
        f"ok: {results}: best {format_energy(best.energy_j_per_item)}/item "
        f"({best.energy_source}), accuracy drop {drop * 100:.2f} points: every budget holds"
    )
