"""``wattwise train``: the training configuration with the least energy to a target, or (with
``--predict``) one run's energy and time predicted after its first epoch.

The summary goes to stdout (a table, or ``training.json`` itself with ``--json``), progress to
stderr. Exit codes as for every command: 0 ok, 2 bad input, 130/143 interrupted.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from wattwise._units import format_energy
from wattwise.cli._app import app
from wattwise.cli._errors import handled
from wattwise.cli._options import Device, JsonOut, TaskSpec
from wattwise.cli._output import stdout_to_stderr

__all__: list[str] = []


def _energy(value: Any) -> str:
    return format_energy(value) if isinstance(value, int | float) else "—"


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "—"


def _prediction_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return ["prediction: none (the run stopped before its first epoch ended)"]
    low, high = p["interval_j"]
    lines = [
        f"predicted after epoch 1 for {p['epochs']} epoch(s): {_energy(p['predicted_energy_j'])} "
        f"[{_energy(low)} - {_energy(high)}] ({p['energy_source']}), "
        f"{_seconds(p['predicted_time_s'])}",
    ]
    if p.get("actual_energy_j") is not None:
        err_e = p.get("energy_error")
        err_t = p.get("time_error")
        lines.append(
            f"actual for the {p['actual_epochs']} epoch(s) run: {_energy(p['actual_energy_j'])}, "
            f"{_seconds(p['actual_time_s'])} ({p['energy_source']}); predicted for those: "
            f"{_energy(p['predicted_energy_at_actual_j'])}, "
            f"{_seconds(p['predicted_time_at_actual_s'])}; error "
            + (f"{err_e:+.1%} energy" if err_e is not None else "— energy")
            + (f", {err_t:+.1%} time" if err_t is not None else "")
        )
    return lines + [f"  note: {n}" for n in p.get("notes") or []]


@app.command()
@handled
def train(
    task: TaskSpec = "digits",
    target_accuracy: Annotated[
        float | None,
        typer.Option(
            "--target-accuracy", help="The validation metric every run must reach (early stop)."
        ),
    ] = None,
    out: Annotated[str, typer.Option(help="Output directory.")] = "wattwise-train",
    trials: Annotated[
        int, typer.Option(min=1, help="Configurations to try, counted across reruns (resumes).")
    ] = 12,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL (default sqlite:///OUT/wattwise.db)."),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default TASK-train).")] = None,
    device: Device = "cpu",
    seed: Annotated[int, typer.Option(min=0, help="Seed of every run (the same for all).")] = 0,
    rounds: Annotated[
        int,
        typer.Option(
            min=0, help="Side-by-side rounds of the default and the best at the end (0: none)."
        ),
    ] = 3,
    timeout_per_run: Annotated[
        float,
        typer.Option("--timeout-per-run-s", min=1.0, help="Stop and fail a run after this long."),
    ] = 900.0,
    max_slowdown: Annotated[
        float,
        typer.Option(
            "--max-slowdown",
            min=0.0,
            help="GPU: the most a profiled power limit may slow a step (0.1 = 10%).",
        ),
    ] = 0.1,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            min=1,
            help="Seeds a run near or below the best is trained with before it counts (their "
            "mean). Default: 3, or 5 for a run of at most 3 epochs and 30 s. 1: no reruns.",
        ),
    ] = None,
    predict: Annotated[
        bool,
        typer.Option(
            "--predict",
            help="Train once with the task's recipe: predict the run's energy and time after "
            "its first epoch, then state the actual figures and the error. Writes nothing.",
        ),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Find the training configuration with the least energy to reach a target metric."""
    from wattwise.training import predict_run, tune_training

    if predict:
        with stdout_to_stderr():
            run = predict_run(task, target_accuracy=target_accuracy, device=device, seed=seed)
        if json_out:
            typer.echo(json.dumps(run, indent=1, default=str))
            return
        typer.echo(
            f"{run['label']}: {run['epochs']} epoch(s), accuracy {run['accuracy']}, "
            f"{_energy(run['energy_j'])} ({run['energy_source']} ±{run['energy_uncertainty']:.0%}), "
            f"{_seconds(run['time_s'])}"
        )
        for line in _prediction_lines(run.get("prediction")):
            typer.echo(line)
        return
    with stdout_to_stderr():
        result = tune_training(
            task,
            target_accuracy,
            trials=trials,
            out=out,
            storage=storage,
            study=study,
            device=device,
            seed=seed,
            rounds=rounds,
            timeout_per_run_s=timeout_per_run,
            max_slowdown=max_slowdown,
            seeds=seeds,
        )
    report = result.report
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=1, default=str))
        return
    source = f"{report.meter['source']} ±{report.meter['uncertainty']:.0%}"
    typer.echo(f"wattwise train: {report.task} to {report.target_accuracy} ({source})")
    for role, fig in (("default", report.default), ("best", report.best)):
        if fig is None:
            typer.echo(f"  {role:8} none reached the target")
            continue
        typer.echo(
            f"  {role:8} {fig.label}: "
            + (
                f"{_energy(fig.energy_to_target_j)} ({fig.energy_source}), "
                f"{_seconds(fig.time_to_target_s)}, {fig.epochs} epoch(s)"
                if fig.reached
                else f"did not reach the target in {fig.epochs} epoch(s)"
            )
        )
    if report.energy_ratio is not None:
        time_ratio = f"{report.time_ratio:.2f}x" if report.time_ratio is not None else "—"
        typer.echo(
            f"  default / best: {report.energy_ratio:.2f}x the energy to target, {time_ratio} "
            f"the time (ratio of the means over {report.rounds} side-by-side rounds, each on "
            "its own seed; the figures above are their medians)"
        )
    for line in _prediction_lines(report.prediction):
        typer.echo(f"  {line}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    for name, path in result.paths.items():
        typer.echo(f"  {name}: {path}")
