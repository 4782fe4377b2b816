"""Training energy: ``wattwise train`` against the task's own recipe, the first-epoch
prediction, and compression's fine-tunes with the tuned configuration.

1. ``digits`` to 0.97: ``tune_training`` (12 configurations), then the recipe and the best
   trained again side by side in 5 alternating rounds; the ratio is the median of the ratios
   within rounds. The default's first-epoch prediction is checked against its run.
2. A transformer task (``tinylm`` by default, ``--text-task``) the same way, with fewer
   configurations.
3. The search's own fine-tunes (the half-width student distilled, and 30% pruning's
   fine-tune) built from the same trained baseline with the task's recipe and with the tuned
   configuration, side by side in 3 rounds, each build in its own child process on the meter.

The machine must be quiet: other processes' load is measured for 5 s first, and the run
refuses to start above half a core. Writes ``docs/benchmarks/training.json`` and
``docs/benchmarks/training.md``.

Run: ``.venv/bin/python benchmarks/bench_training.py`` (about 30 min on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_peers import LOAD_LIMIT_CORES, _commit, _versions, machine_load
from wattwise._fs import atomic_write_text
from wattwise.measure._hardware import hardware_info

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks" / "training.json"
DOC = ROOT / "docs" / "benchmarks" / "training.md"
# Fine-tunes the default search runs on digits (search/_space.py): the half-width student and
# 30% pruning with its fine-tune.
LEDGER_RECIPES = {
    "distill-w0.5": [
        {"type": "distill", "student": "task", "student_kwargs": {"width": 0.5}, "epochs": 15}
    ],
    "prune30": [{"type": "prune", "ratio": 0.3, "finetune_epochs": 3}],
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tune_case(task: str, target: float, trials: int, rounds: int, workdir: Path) -> dict[str, Any]:
    import wattwise as ww

    t0 = time.perf_counter()
    result = ww.tune_training(
        task, target_accuracy=target, trials=trials, rounds=rounds, out=workdir / task
    )
    report = result.report.to_dict()
    report["elapsed_s"] = time.perf_counter() - t0
    return report


def build_job(task_name: str, baseline: str, recipe: list[dict[str, Any]], config: Any) -> dict:
    """One build of ``recipe`` from the saved baseline, in a child: its passes' joules."""
    import torch

    from wattwise.passes import compress
    from wattwise.tasks import TrainConfig, load_task

    task = load_task(task_name)
    if config is not None:
        task = dataclasses.replace(task, train_config=TrainConfig.from_dict(config))
    model = task.model_factory()
    model.load_state_dict(torch.load(baseline, weights_only=True))
    _built, log = compress(model.eval(), recipe, task=task, seed=0)
    return {
        "energy_j": log.energy_j,
        "time_s": sum(r.time_s for r in log.records),
        "accuracy": log.final.accuracy,
        "energy_source": log.records[0].energy_source,
    }


def ledger_case(task_name: str, config: dict[str, Any], rounds: int, workdir: Path) -> dict:
    """The search's fine-tunes with the task's recipe and with ``config``, side by side."""
    import torch

    from wattwise.measure import run_isolated
    from wattwise.tasks import TrainConfig, load_task

    task = load_task(task_name)
    torch.manual_seed(task.seed)
    model = task.fit(task.model_factory(), seed=task.seed)
    baseline = workdir / "baseline.pt"
    torch.save(model.state_dict(), baseline)
    # The fine-tunes keep their own length: the schedule's length is the pass's, not the run's.
    tuned = {**config, "epochs": None}
    TrainConfig.from_dict(tuned)
    out: dict[str, Any] = {"config": tuned, "baseline_accuracy": task.evaluate(model)}
    for name, recipe in LEDGER_RECIPES.items():
        runs: dict[str, list[dict[str, Any]]] = {"recipe": [], "tuned": []}
        for r in range(rounds):
            order = ["recipe", "tuned"] if r % 2 == 0 else ["tuned", "recipe"]
            for role in order:
                cfg = None if role == "recipe" else tuned
                threads = tuned.get("threads") if role == "tuned" else None
                got = run_isolated(
                    build_job,
                    task_name,
                    str(baseline),
                    recipe,
                    cfg,
                    threads=threads,
                    timeout_s=1800,
                )
                runs[role].append(got)
                _log(f"  {name} round {r + 1} {role}: {got}")
        ratios = [
            a["energy_j"] / b["energy_j"]
            for a, b in zip(runs["recipe"], runs["tuned"], strict=True)
        ]
        out[name] = {
            "runs": runs,
            "energy_ratio": statistics.median(ratios),
            "ratios": ratios,
            "recipe_energy_j": statistics.median(r["energy_j"] for r in runs["recipe"]),
            "tuned_energy_j": statistics.median(r["energy_j"] for r in runs["tuned"]),
            "recipe_accuracy": statistics.median(r["accuracy"] for r in runs["recipe"]),
            "tuned_accuracy": statistics.median(r["accuracy"] for r in runs["tuned"]),
        }
    return out


def _energy(j: float | None) -> str:
    from wattwise.report import fmt_energy_j

    return fmt_energy_j(j) if j is not None else "—"


def render(doc: dict[str, Any]) -> str:
    lines = [
        "# Training energy: `wattwise train` against the task's recipe",
        "",
        f"`benchmarks/bench_training.py`, {doc['date']}, commit `{doc['commit']}`; machine: "
        f"{doc['hardware'].get('cpu_model')}, {doc['hardware'].get('cpus_allowed')} vCPUs. "
        f"Other processes' load before: {doc['load_before_cores']:.2f} cores. Raw: "
        "`training.json`.",
        "",
        f"Energy source: `{(doc.get('digits') or {}).get('meter', {}).get('source')}` "
        f"(±{(doc.get('digits') or {}).get('meter', {}).get('uncertainty', 0):.0%} absolute): read "
        "the ratios, taken side by side in alternating rounds, not the joules.",
        "",
        "| task | target | default recipe | best configuration | energy default/best | time default/best | prediction error (default) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("digits", "text"):
        case = doc.get(key)
        if not case:
            continue
        d, b, p = case.get("default") or {}, case.get("best") or {}, case.get("prediction") or {}
        ratio = case.get("energy_ratio")
        tr = case.get("time_ratio")
        err = p.get("energy_error")
        lines.append(
            f"| {case['task']} | {case['target_accuracy']} | {d.get('label')}: "
            f"{_energy(d.get('energy_to_target_j'))}, {d.get('epochs')} ep | {b.get('label')}: "
            f"{_energy(b.get('energy_to_target_j'))}, {b.get('epochs')} ep | "
            f"{f'{ratio:.2f}x' if ratio else '—'} | {f'{tr:.2f}x' if tr else '—'} | "
            f"{f'{err:+.1%}' if err is not None else '—'} |"
        )
    ledger = doc.get("ledger")
    if ledger:
        lines += [
            "",
            "## The search's fine-tunes with the tuned configuration",
            "",
            f"Configuration: `{ledger['config']}`. Each build in its own child, 3 alternating rounds.",
            "",
            f"Energy source: `{ledger['distill-w0.5']['runs']['recipe'][0]['energy_source']}`.",
            "",
            "| fine-tune | recipe | tuned | recipe/tuned | accuracy recipe → tuned |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in LEDGER_RECIPES:
            c = ledger[name]
            lines.append(
                f"| {name} | {_energy(c['recipe_energy_j'])} | {_energy(c['tuned_energy_j'])} | "
                f"{c['energy_ratio']:.2f}x | {c['recipe_accuracy']:.4f} → {c['tuned_accuracy']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-task", default="tinylm")
    parser.add_argument("--text-target", type=float, default=0.45)
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    before = machine_load()
    if before > LOAD_LIMIT_CORES:
        sys.exit(f"other processes use {before:.2f} cores: benchmark on a quiet machine")
    doc: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "hardware": hardware_info(),
        "versions": _versions(),
        "load_before_cores": before,
    }
    with tempfile.TemporaryDirectory(prefix="ww-bench-train-") as tmp:
        work = Path(tmp)
        _log("digits to 0.97: tune_training, 12 configurations, 5 rounds")
        doc["digits"] = tune_case("digits", 0.97, 12, 5, work)
        best = doc["digits"].get("best")
        if best is not None:
            _log("the search's fine-tunes with the recipe and the tuned configuration")
            doc["ledger"] = ledger_case("digits", best["config"], 3, work)
        if not args.skip_text:
            _log(f"{args.text_task} to {args.text_target}: 6 configurations, 3 rounds")
            doc["text"] = tune_case(args.text_task, args.text_target, 6, 3, work)
    atomic_write_text(OUT, json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(DOC, render(doc))
    _log(f"wrote {OUT} and {DOC}")


if __name__ == "__main__":
    main()
