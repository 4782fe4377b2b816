"""The search commands: ``optimize``, ``worker``, ``report`` and ``check``.

:func:`register` adds them to the ``wattwise`` typer app (``cli.py`` calls it). Results go to
stdout (the summary table), progress to stderr. Exit codes as for every command: 0 ok,
1 a budget broken (``check``), 2 bad input, 130 interrupted (after the partial summary).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from wattwise.search import OptimizeResult

__all__ = ["register"]

EXIT_INTERRUPTED = 130


def _fmt_j(value: Any) -> str:
    from wattwise.report import fmt_energy_j

    return fmt_energy_j(value)


def _fmt_num(value: Any, fmt: str = "{:.3g}") -> str:
    if value is None:
        return "—"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _deployment_label(dep: Any) -> str:
    if not isinstance(dep, dict):
        return "—"
    threads = f" t{dep['threads']}" if dep.get("threads") else ""
    return f"{dep.get('backend')}/{dep.get('precision')} b{dep.get('batch_size')}{threads}"


def recipe_text(recipe: Any) -> str:
    """``prune(ratio=0.5, finetune_epochs=5) → quantize(method=pt2e-int8)``; "none" for []."""
    if not recipe:
        return "none (the trained baseline model)"
    parts = []
    for p in recipe:
        if not isinstance(p, dict):
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


def print_summary(result: OptimizeResult, *, file: Any = None) -> None:
    """The summary table: baseline vs best, with sources, ratio, payback and paths."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    res = result.results
    base = res.get("baseline") or {}
    best = res.get("best")
    table = Table(
        title=f"wattwise optimize: {res.get('task')} ({res.get('scenario')}), study {res.get('study')}",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("best", justify="right")
    table.add_column("ratio", justify="right")

    def ratio(key: str, invert: bool = False) -> str:
        a, b = base.get(key), (best or {}).get(key)
        if not isinstance(a, int | float) or not isinstance(b, int | float) or not a or not b:
            return ""
        return f"{(a / b if not invert else b / a):.3g}x"

    def energy(doc: dict[str, Any] | None) -> str:
        if not doc:
            return "—"
        unc = doc.get("energy_uncertainty")
        tail = f" ±{unc:.0%}" if isinstance(unc, int | float) else ""
        return f"{_fmt_j(doc.get('energy_j_per_item'))} ({doc.get('energy_source')}{tail})"

    b = best or {}
    table.add_row("what", _deployment_label(base.get("deployment")), b.get("label") or "—", "")
    table.add_row(
        "accuracy",
        _fmt_num(base.get("accuracy"), "{:.4f}"),
        _fmt_num(b.get("accuracy"), "{:.4f}"),
        _fmt_num(
            -b["accuracy_drop"] * 100 if b.get("accuracy_drop") is not None else None,
            "{:+.2f} pt",
        ),
    )
    table.add_row("energy / item", energy(base), energy(best), ratio("energy_j_per_item"))
    table.add_row(
        "p90 latency / call",
        _fmt_num(base.get("latency_ms_p90"), "{:.3g} ms"),
        _fmt_num(b.get("latency_ms_p90"), "{:.3g} ms"),
        "",
    )
    table.add_row(
        "throughput",
        _fmt_num(base.get("throughput_items_per_s"), "{:.4g} items/s"),
        _fmt_num(b.get("throughput_items_per_s"), "{:.4g} items/s"),
        ratio("throughput_items_per_s", invert=True),
    )
    table.add_row(
        "MACs / item",
        _fmt_num(base.get("macs_per_item"), "{:.4g}"),
        _fmt_num(b.get("macs_per_item"), "{:.4g}"),
        ratio("macs_per_item"),
    )
    table.add_row(
        "params",
        _fmt_num(base.get("params"), "{:,}"),
        _fmt_num(b.get("params"), "{:,}"),
        ratio("params"),
    )
    console.print(table)
    lines = [
        f"trials: {res.get('trials')} of {res.get('trials_budget')} "
        f"({res.get('failed_trials')} failed), Pareto front: {len(res.get('pareto') or [])}",
        f"search energy: {_fmt_j(res.get('search_energy_j'))} ({res.get('search_energy_source')}); "
        + (
            f"pays back after {res['payback_items']:.3g} items"
            if res.get("payback_items") is not None
            else "no payback (the best saves nothing per item)"
        ),
    ]
    if best:
        lines.append(f"recipe: {recipe_text(best.get('recipe'))}")
        lines.append(f"artifact: {best.get('artifact') or '— (not exported)'}")
    for key in ("html", "json", "csv"):
        if key in result.paths:
            lines.append(f"{key}: {result.paths[key]}")
    for note in res.get("notes") or []:
        lines.append(f"note: {note}")
    for line in lines:
        console.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``optimize``, ``worker``, ``report`` and ``check`` to ``app``."""
    from wattwise.cli import _handled as handled  # cli.py calls register() once it is defined

    @app.command()
    @handled
    def optimize(
        task: Annotated[
            str,
            typer.Option(
                help="A built-in task (digits) or package.module:factory (runs your code)."
            ),
        ] = "digits",
        max_accuracy_drop: Annotated[
            float,
            typer.Option(
                "--max-accuracy-drop", help="Largest accepted metric drop (0.01 = 1 point)."
            ),
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
        study: Annotated[
            str | None, typer.Option(help="Study name (default TASK-SCENARIO).")
        ] = None,
        out: Annotated[str, typer.Option(help="Output directory.")] = "wattwise-out",
        device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
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
    ) -> None:
        """Search compression × students × deployments for the least energy per item."""
        from wattwise.search import DEFAULT_TRIALS, load_space
        from wattwise.search import optimize as run

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
        )
        print_summary(result)
        if result.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)

    @app.command()
    @handled
    def worker(
        storage: Annotated[str, typer.Option(help="The study's storage URL.", show_default=False)],
        study: Annotated[str, typer.Option(help="The study's name.", show_default=False)],
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

        result = run_worker(storage, study, out=out, task=task, device=device)
        print_summary(result)
        if result.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)

    @app.command()
    @handled
    def report(
        storage: Annotated[str, typer.Option(help="The study's storage URL.", show_default=False)],
        study: Annotated[str, typer.Option(help="The study's name.", show_default=False)],
        out: Annotated[str, typer.Option(help="Where to write the report.")] = "wattwise-report",
    ) -> None:
        """Write report.html, results.json and trials.csv for a study as it stands."""
        from wattwise.search import report_study

        print_summary(report_study(storage, study, out=out))

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

        energy = (
            parse_quantity(max_energy_per_item, "J") if max_energy_per_item is not None else None
        )
        doc = load_results(results)
        breaches = check_results(
            doc,
            max_energy_j_per_item=energy,
            max_accuracy_drop=max_accuracy_drop,
            max_latency_p90_ms=max_latency_p90_ms,
        )
        if breaches:
            raise CheckFailed("; ".join(b.message for b in breaches))
        best = doc.get("best") or {}
        print(
            f"ok: {results}: best {_fmt_j(best.get('energy_j_per_item'))}/item "
            f"({best.get('energy_source')}), accuracy drop "
            f"{(best.get('accuracy_drop') or 0) * 100:.2f} points: every budget holds"
        )
