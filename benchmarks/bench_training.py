"""Training energy: ``wattwise train`` against the task's own recipe, the first-epoch
prediction, and compression's fine-tunes with the tuned configuration.

1. ``digits`` to 0.97: ``tune_training`` (12 configurations), then the recipe and the best
   trained again side by side in 7 alternating rounds, each on a seed the search did not use;
   the ratio is of the means over the rounds (the ratios within rounds, and their median, are
   in the notes). The default's first-epoch prediction is checked against its run.
2. A transformer task (``tinylm`` by default, ``--text-task``) the same way, with fewer
   configurations.
3. The search's own fine-tunes (the half-width student distilled, and 30% pruning's
   fine-tune) built from the same trained baseline with the task's recipe and with the tuned
   configuration, side by side in 3 rounds, each build in its own child process on the meter.

The machine must be quiet: other processes' load is measured for 5 s first, and the run
refuses to start above half a core. Writes ``docs/benchmarks/training.json`` and
``docs/benchmarks/training.md``.

Run: ``.venv/bin/python benchmarks/bench_training.py`` (about 25 min on 2 cores).
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
    report["commit"] = _commit()
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return report


def build_job(task_name: str, baseline: str, recipe: list[dict[str, Any]], config: Any) -> dict:
    """One build of ``recipe`` from the saved baseline, in a child: its passes' joules."""
    import torch

    from wattwise.measure._isolate import pin_threads
    from wattwise.passes import compress
    from wattwise.tasks import TrainConfig, load_task

    # As optimize --training applies it (search/_objective.py): pinned to the fine-tunes'
    # threads, and training the way the configuration runs a step.
    fine_tunes = TrainConfig.from_dict(config).for_fine_tunes() if config is not None else None
    if fine_tunes is not None and fine_tunes.threads:
        pin_threads(fine_tunes.threads)
    task = load_task(task_name)
    if fine_tunes is not None:
        task = dataclasses.replace(task, train_config=fine_tunes)
    model = task.model_factory()
    model.load_state_dict(torch.load(baseline, weights_only=True))
    _built, log = compress(model.eval(), recipe, task=task, seed=0)
    return {
        "energy_j": log.energy_j,
        "time_s": sum(r.time_s for r in log.records),
        "accuracy": log.final.accuracy,
        "energy_source": log.records[0].energy_source,
        # The epochs each fine-tune ran, when it could stop early (None: its whole length).
        "epochs_run": [r.metrics.get("finetune_epochs_run") for r in log.records],
    }


# The roles of the fine-tunes' comparison: the task's recipe as the search runs it today; the
# recipe's knobs, each fine-tune stopping once it is back at the accuracy it started from (what
# a tuned configuration brings besides its knobs); the tuned configuration, stopping likewise.
LEDGER_ROLES = ("recipe", "recipe-to-target", "tuned")


def ledger_case(task_name: str, config: dict[str, Any], rounds: int, workdir: Path) -> dict:
    """The search's fine-tunes under each of :data:`LEDGER_ROLES`, side by side in rotating
    rounds, each build in its own child process on the meter."""
    import torch

    from wattwise.measure import run_isolated
    from wattwise.tasks import TrainConfig, load_task

    task = load_task(task_name)
    torch.manual_seed(task.seed)
    model = task.fit(task.model_factory(), seed=task.seed)
    baseline = workdir / "baseline.pt"
    torch.save(model.state_dict(), baseline)
    tuned = dict(config)
    configs: dict[str, dict[str, Any] | None] = {
        "recipe": None,
        "recipe-to-target": TrainConfig().to_dict(),
        "tuned": tuned,
    }
    out: dict[str, Any] = {"config": tuned, "baseline_accuracy": task.evaluate(model)}
    for name, recipe in LEDGER_RECIPES.items():
        runs: dict[str, list[dict[str, Any]]] = {role: [] for role in LEDGER_ROLES}
        for r in range(rounds):
            order = LEDGER_ROLES[r % len(LEDGER_ROLES) :] + LEDGER_ROLES[: r % len(LEDGER_ROLES)]
            for role in order:
                cfg = configs[role]
                got = run_isolated(
                    build_job,
                    task_name,
                    str(baseline),
                    recipe,
                    cfg,
                    threads=(cfg or {}).get("threads"),
                    timeout_s=1800,
                )
                runs[role].append(got)
                _log(f"  {name} round {r + 1} {role}: {got}")
        case: dict[str, Any] = {"runs": runs}
        for role in LEDGER_ROLES:
            case[role] = {
                "energy_j": statistics.median(x["energy_j"] for x in runs[role]),
                "time_s": statistics.median(x["time_s"] for x in runs[role]),
                "accuracy": statistics.median(x["accuracy"] for x in runs[role]),
                "epochs_run": runs[role][-1]["epochs_run"],
            }
            if role != "recipe":
                ratios = [
                    a["energy_j"] / b["energy_j"]
                    for a, b in zip(runs["recipe"], runs[role], strict=True)
                ]
                case[role]["energy_ratio"] = statistics.median(ratios)
                case[role]["ratios"] = ratios
        out[name] = case
    return out


def _source(case: dict[str, Any]) -> str:
    """The meter label of a case's figures."""
    return str((case.get("meter") or {}).get("source", "unknown source"))


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
    for key in ("digits", "text"):
        case = doc.get(key)
        if not case:
            continue
        p = case.get("prediction") or {}
        lines += [
            "",
            f"**{case['task']}** (commit `{case.get('commit', doc['commit'])}`, "
            f"{len(case.get('trials') or [])} trials, "
            f"{case.get('elapsed_s', 0) / 60:.1f} min, the search's own energy "
            f"{_energy(case.get('search_energy_j'))}, {_source(case)}):",
            "",
        ]
        lines += [f"- {note}" for note in case.get("notes") or []]
        if p:
            low, high = p.get("interval_j") or (None, None)
            err = p.get("energy_error")
            lines.append(
                f"- the default's prediction after epoch 1: {_energy(p.get('predicted_energy_j'))} "
                f"[{_energy(low)} to {_energy(high)}] for its {p.get('epochs')}-epoch schedule; "
                f"it stopped at the target after {p.get('actual_epochs')} epoch(s), "
                f"{_energy(p.get('actual_energy_j'))}, against "
                f"{_energy(p.get('predicted_energy_at_actual_j'))} predicted for as many: "
                + (f"error {err:+.1%}" if err is not None else "no error (nothing predicted)")
                + f" ({p.get('energy_source') or _source(case)})"
            )
    ledger = doc.get("ledger")
    if ledger:
        lines += [
            "",
            "## The search's fine-tunes with the tuned configuration",
            "",
            f"Tuned configuration: `{ledger['config']}`; the fine-tunes take its precision, "
            "compile, threads and memory format (`TrainConfig.for_fine_tunes`), and keep the "
            "pass's batch, rate and length. Each build in its own child process, 3 rounds in rotating order. "
            "*recipe*: the task's recipe, every fine-tune its whole length, as the search runs "
            "without `--training`. *recipe, to target*: the recipe's knobs, each fine-tune "
            "stopping once it is back at the accuracy it started from. *tuned*: the tuned "
            "configuration, stopping likewise (`optimize --training training.json`). Ratios are "
            "medians of the ratios within rounds.",
            "",
            f"Energy source: `{ledger['distill-w0.5']['runs']['recipe'][0]['energy_source']}`.",
            "",
            "| fine-tune | recipe | recipe, to target | tuned | recipe/tuned | accuracy "
            "(recipe / to target / tuned) | epochs run (tuned) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in LEDGER_RECIPES:
            c = ledger[name]
            rec, stop, tuned = (c[role] for role in LEDGER_ROLES)
            lines.append(
                f"| {name} | {_energy(rec['energy_j'])} | {_energy(stop['energy_j'])} "
                f"({stop['energy_ratio']:.2f}x less) | {_energy(tuned['energy_j'])} | "
                f"**{tuned['energy_ratio']:.2f}x** | {rec['accuracy']:.4f} / "
                f"{stop['accuracy']:.4f} / {tuned['accuracy']:.4f} | {tuned['epochs_run']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-task", default="tinylm")
    parser.add_argument("--text-target", type=float, default=0.45)
    parser.add_argument(
        "--skip-text",
        action="store_true",
        help="leave the text task out; one already in training.json is kept, with its own date",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite training.md from training.json"
    )
    args = parser.parse_args()
    if args.render_only:
        atomic_write_text(DOC, render(json.loads(OUT.read_text())))
        return
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
    if args.skip_text and OUT.is_file():
        kept = json.loads(OUT.read_text()).get("text")
        if kept:
            kept.setdefault("commit", "an earlier run's")
            doc["text"] = kept
    with tempfile.TemporaryDirectory(prefix="ww-bench-train-") as tmp:
        work = Path(tmp)
        _log("digits to 0.97: tune_training, 12 configurations, 7 rounds")
        doc["digits"] = tune_case("digits", 0.97, 12, 7, work)
        _write(doc)
        best = doc["digits"].get("best")
        if best is not None:
            _log("the search's fine-tunes with the recipe and the tuned configuration")
            doc["ledger"] = ledger_case("digits", best["config"], 3, work)
            _write(doc)
        if not args.skip_text:
            _log(f"{args.text_task} to {args.text_target}: 8 configurations, 3 rounds")
            doc["text"] = tune_case(args.text_task, args.text_target, 8, 3, work)
            _write(doc)


def _write(doc: dict[str, Any]) -> None:
    """Each stage's figures are written as soon as they exist: a later stage that fails or is
    stopped does not take them with it."""
    atomic_write_text(OUT, json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(DOC, render(doc))
    _log(f"wrote {OUT} and {DOC}")


if __name__ == "__main__":
    main()
