"""Compression and deployment vs peers: wattwise optimize against each single technique a user
would pick instead, side by side in one run, on the same model, data and accuracy limit.

For each model (the digits CNN; a ResNet-style and a MobileNetV3-style network on digits
upsampled to 32×32; pretrained EfficientNet-Lite0 at 224×224 on the fidelity task;
all-MiniLM-L6-v2 fine-tuned on ``minilm-topics``, against the text peers of
``bench_minilm.py``; ``tinylm`` generating, against fp32, ``model.compile()``, bf16 and torchao
int8 weight-only + compile, J per response):

1. train the fp32 baseline once (the pretrained Lite0 is used as it is);
2. build every peer from that same trained model (``peers.py``): fp32 eager, ``torch.compile``
   fp32, torchao PT2E int8 + compile, ONNX Runtime static int8 (QDQ), NNCF PTQ on OpenVINO,
   Torch-Pruning 50% + fine-tuning; and run ``wattwise.optimize`` for each scenario (online:
   batch 1; offline: any batch) under the same ≤1-point drop, exporting its best deployment;
3. score each on the task's validation set (top-1 accuracy; for Lite0, top-1 agreement with
   the fp32 model on crops of the scikit-learn sample photos);
4. per scenario, give each peer its best batch size and thread count from a short pre-pass
   (online: batch 1 with 1 or all threads; offline: the batch sizes below × those threads), as
   a user tuning that tool would; wattwise's deployment keeps the batch and threads its search
   chose;
5. measure all of them in rotating rounds (A B C … , B C … A, …), each measurement in its own
   child process, and report medians and ratios to fp32 eager from the same rounds.

The machine must be quiet: other processes' CPU use is measured for 5 s before each model
and during every measurement (the harness records it), and a model measured while they used
more than half a core is not written (the run stops saying so).

Writes ``docs/benchmarks/peers.json`` (the raw rounds too); ``benchmarks/run.py`` turns it into
``docs/BENCHMARKS.md``. Checkpoints per model: rerunning skips models already done unless
``--fresh``.

Run: ``make bench`` (installs the ``bench`` extra) or ``.venv/bin/python benchmarks/bench_peers.py``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import functools
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
import wattwise
from run import verdict
from wattwise._fs import atomic_write_text
from wattwise.deploy._base import native_bf16
from wattwise.measure._hardware import hardware_info
from wattwise.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks" / "peers.json"
MAX_DROP = 0.01
SCENARIOS = ("online", "offline")
# Results measured while other processes used more than this many cores are not written: on
# a 2-vCPU machine half a core of neighbour moves single measurements by 1.3x or more.
LOAD_LIMIT_CORES = 0.5


def machine_load(seconds: float = 5.0) -> float:
    """Cores other processes kept busy over ``seconds`` (the machine's busy time less ours)."""
    import os

    from wattwise.measure._harness import parse_proc_stat

    ticks = float(os.sysconf("SC_CLK_TCK"))

    def busy() -> float:
        return parse_proc_stat(Path("/proc/stat").read_text(encoding="ascii"), ticks)[0]

    b0, own0, t0 = busy(), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    used = (busy() - b0) - (time.process_time() - own0)
    return max(0.0, used) / (time.perf_counter() - t0)


def load_during(runs: dict[str, list[dict[str, Any]]], tried: list[dict[str, Any]]) -> float:
    """The most cores other processes used during any one measurement of a case (each
    measurement records its own ``foreign_cpu_cores``)."""
    values = [r.get("foreign_cpu_cores") for rows in runs.values() for r in rows]
    values += [t.get("foreign_cpu_cores") for t in tried]
    return max((float(v) for v in values if v is not None), default=0.0)


@dataclasses.dataclass(frozen=True)
class Case:
    """One model of the benchmark and how to treat it."""

    key: str
    title: str
    make_task: Callable[[], Task]
    offline_batches: tuple[int, ...]
    trials: dict[str, int]
    # Lite0's crops of two photos can't fine-tune anything honestly: deployments only.
    space_models: tuple[dict[str, Any], ...] | None = None
    # "image" (one tensor: the CNN peers) or "text" (named token tensors: the MiniLM peers).
    kind: str = "image"


def _digits32(arch: str, **kw: Any) -> Task:
    task = wattwise.tasks.digits(size=32)
    factory = functools.partial(
        wattwise.archs.create, arch, num_classes=10, in_chans=1, resolution=32, **kw
    )
    return dataclasses.replace(task, name=f"digits32-{arch}", model_factory=factory)


def _task_case(key: str, title: str, offline_batches: tuple[int, ...], kind: str) -> Case:
    """A case on a built-in task of that name, its own model, with the transformer budget."""
    task = functools.partial(wattwise.tasks.load_task, key)
    return Case(key, title, task, offline_batches, {"online": 6, "offline": 10}, kind=kind)


CASES: dict[str, Case] = {
    c.key: c
    for c in (
        Case(
            "digits-cnn",
            "digits CNN (8×8)",
            wattwise.tasks.digits,
            (16, 64, 256),
            {"online": 8, "offline": 14},
        ),
        Case(
            "resnet-digits32",
            "ResNet-18-style, width 0.25, small stem (digits 32×32)",
            functools.partial(_digits32, "resnet18", width=0.25, stem="small"),
            (16, 64, 256),
            {"online": 8, "offline": 14},
        ),
        Case(
            "mobilenetv3-digits32",
            "MobileNetV3-Small (digits 32×32)",
            # BatchNorm momentum 0.1 (PyTorch's default) instead of the paper's TF 0.01: the
            # task trains for a few hundred steps, too few for running statistics at 0.01.
            functools.partial(_digits32, "mobilenetv3_small", bn_momentum=0.1),
            (16, 64, 256),
            {"online": 8, "offline": 14},
        ),
        Case(
            "lite0-224",
            "EfficientNet-Lite0, ImageNet weights (224×224, fidelity on photo crops)",
            functools.partial(wattwise.tasks.lite0_photos, n_train=128, n_val=256),
            (16, 64),
            {"online": 5, "offline": 8},
            space_models=({"name": "base"},),
        ),
        _task_case(
            "minilm-topics",
            "all-MiniLM-L6-v2 fine-tuned on CPython help topics (text, 8 classes)",
            (16, 64),
            "text",
        ),
        _task_case(
            "tinylm",
            "tinylm, a Llama-style decoder (64 prompt bytes + 64 generated; J per response)",
            (8, 32),
            "generative",
        ),
    )
}


class _Callable(torch.nn.Module):
    """Lets ``task.metric`` (which calls ``.eval()``) score any callable."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]):
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _score(task: Task, fn: Any) -> float:
    with torch.inference_mode():
        return task.evaluate(fn if isinstance(fn, torch.nn.Module) else _Callable(fn))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_peers(
    case: Case, task: Task, model: torch.nn.Module, workdir: Path
) -> dict[str, dict[str, Any]]:
    """Every single-technique peer: ``{name: {built, accuracy, build_s} | {error}}``."""
    prune_epochs = max(2, task.epochs // 3) if task.epochs else 2
    makers: dict[str, Callable[[], tuple[peers.Built, Any]]] = {
        "fp32 eager": lambda: (peers.fp32_eager(model, task), model),
        "torch.compile fp32": lambda: (peers.compile_fp32(model, task), model),
    }
    if case.kind == "generative":
        makers = {
            name: functools.partial(peers.generation_peer, model, task, how)
            for name, how in (
                ("fp32 eager", "fp32"),
                ("torch.compile fp32", "compile"),
                ("bf16", "bf16"),
                ("torchao int8 weight-only + compile", "torchao int8 weight-only"),
            )
        }
    elif case.kind == "text":
        makers |= {
            "torchao dynamic int8": lambda: peers.torchao_dynamic_int8(model, task),
            "Optimum ORT dynamic int8": lambda: peers.optimum_ort_dynamic_int8(model, task),
            "OpenVINO + NNCF int8 (transformer)": lambda: peers.openvino_nncf_transformer_int8(
                model, task, workdir
            ),
        }
    else:
        makers |= {
            "torchao PT2E int8 + compile": lambda: peers.torchao_int8(model, task),
            "ONNX Runtime static int8": lambda: peers.ort_int8(model, task),
            "NNCF PTQ int8 (OpenVINO)": lambda: peers.nncf_int8(model, task, workdir),
            "Torch-Pruning 50% + fine-tune": lambda: peers.torch_pruning_50(
                model, task, prune_epochs
            ),
        }
    out: dict[str, dict[str, Any]] = {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        try:
            built, scorer = make()
            scorer = scorer() if isinstance(scorer, functools.partial) else scorer
            acc = _score(task, scorer)
        except Exception as exc:  # a peer that fails is a row that says why, not a crash
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            _log(f"  {name}: FAILED {out[name]['error']}")
            traceback.print_exc()
            continue
        out[name] = {"built": built, "accuracy": acc, "build_s": time.perf_counter() - t0}
        _log(f"  {name}: accuracy {acc:.4f}, built in {out[name]['build_s']:.0f} s")
    return out


def run_wattwise(
    case: Case, task: Task, model: torch.nn.Module, scenario: str, workdir: Path
) -> dict[str, Any]:
    """``wattwise.optimize`` for one scenario; its exported best as a peer-shaped entry."""
    from wattwise.search import ModelChoice, default_space

    space = default_space(task, scenario)
    if case.space_models is not None:
        models = tuple(ModelChoice(**m) for m in case.space_models)
        space = dataclasses.replace(space, models=models)
    if scenario == "offline":
        space = dataclasses.replace(space, batch_sizes=(1, *case.offline_batches))
    # One output directory for both scenarios: the second search reuses the models the first
    # trained (its cache/); each scenario is its own study, and its artifact is moved aside.
    out = workdir / "wattwise"
    t0 = time.perf_counter()
    result = wattwise.optimize(
        task,
        scenario=scenario,
        max_accuracy_drop=MAX_DROP,
        trials=case.trials[scenario],
        out=out,
        space=space,
        progress=False,
    )
    doc, best = result.document, result.best
    info: dict[str, Any] = {
        "search_s": time.perf_counter() - t0,
        "search_energy_j": doc.search_energy_j,
        "search_energy_source": doc.search_energy_source,
        "trials": doc.trials,
        "failed_trials": doc.failed_trials,
        # What the search saw, trial by trial: why it chose what it chose.
        "search_trials": [
            {
                "number": r.number,
                "label": r.label,
                "state": r.state,
                "fidelity": r.fidelity,
                "feasible": r.feasible,
                "accuracy": r.figures.accuracy,
                "energy_j_per_item": r.figures.energy_j_per_item,
                "fail_reason": r.fail_reason,
            }
            for r in result.rows
        ],
    }
    generative = task.generate is not None
    if best is None or best.deployment is None or not (generative or (out / "artifact").is_dir()):
        return {**info, "error": "no feasible trial within the accuracy limit"}
    dep = best.deployment
    threads = dep.get("threads") or None
    if generative:
        # No artifact format for a generative winner yet: its recipe is rebuilt from the same
        # trained model with the search's seed (compress is deterministic), then served alike.
        from wattwise.deploy import serve_for_generation

        recipe = [dict(p) for p in best.recipe or ()]
        rebuilt = wattwise.compress(model, recipe, task=task)[0] if recipe else model
        built = peers.wattwise_generative(rebuilt, task, dep["backend"], dep["precision"])
        served = serve_for_generation(copy.deepcopy(rebuilt), dep["backend"], dep["precision"])
        acc = _score(task, served.eager)
    else:
        artifact = workdir / f"artifact-{scenario}"
        (out / "artifact").rename(artifact)
        built = peers.wattwise_artifact(artifact, float(best.figures.macs_per_item or 0.0))
        loaded = wattwise.deploy.load_artifact(artifact)
        acc = _score(task, loaded.callable)
    return {
        **info,
        "built": built,
        "accuracy": acc,
        "search_accuracy": best.figures.accuracy,
        "choice": {
            "label": best.label,
            "recipe": list(best.recipe) if best.recipe is not None else None,
            "student": best.student,
            "backend": dep["backend"],
            "precision": dep["precision"],
            "batch_size": int(dep["batch_size"]),
            "threads": threads,
        },
    }


def _configs(case: Case, scenario: str) -> list[tuple[int, int | None]]:
    """(batch, threads) choices a peer is tuned over; ``None`` threads = every allowed core."""
    threads: list[int | None] = [1, None] if peers.default_threads() > 1 else [None]
    batches = (1,) if scenario == "online" else case.offline_batches
    return [(b, t) for b in batches for t in threads]


def _measure(
    entry: dict[str, Any], task: Task, batch: int, threads: int | None, max_time_s: float
) -> dict[str, Any]:
    factory = entry["built"].make(task.example_input, batch, threads)
    m = wattwise.measure(
        factory,
        task.example_input,
        batch_size=batch,
        threads=threads,
        max_time_s=max_time_s,
        generate=task.generate,
    )
    return m.to_dict()


class _Tried(TypedDict):
    """One (batch, threads) choice measured while tuning a peer: its J/item, or why it failed."""

    batch_size: int
    threads: int | None
    energy_j_per_item: NotRequired[float]
    foreign_cpu_cores: NotRequired[float | None]
    error: NotRequired[str]


def _tune(
    entries: dict[str, dict[str, Any]], case: Case, task: Task, scenario: str, max_time_s: float
) -> dict[str, dict[str, Any]]:
    """Each peer's best (batch, threads) by one short measurement of each choice."""
    chosen: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        if "error" in entry:
            continue
        if name == "wattwise optimize":
            c = entry["choice"]
            chosen[name] = {"batch_size": c["batch_size"], "threads": c["threads"], "tried": []}
            continue
        tried: list[_Tried] = []
        for batch, threads in _configs(case, scenario):
            try:
                m = _measure(entry, task, batch, threads, max_time_s)
            except Exception as exc:
                tried.append({"batch_size": batch, "threads": threads, "error": str(exc)[:200]})
                continue
            tried.append(
                {
                    "batch_size": batch,
                    "threads": threads,
                    "energy_j_per_item": m["energy_j_per_item"],
                    "foreign_cpu_cores": m.get("foreign_cpu_cores"),
                }
            )
        ok = [t for t in tried if "energy_j_per_item" in t]
        if not ok:
            entry["error"] = f"every batch/threads choice failed: {tried[0].get('error')}"
            continue
        best = min(ok, key=lambda t: t["energy_j_per_item"])
        chosen[name] = {
            "batch_size": best["batch_size"],
            "threads": best["threads"],
            "tried": tried,
        }
    return chosen


def _rounds(
    entries: dict[str, dict[str, Any]],
    chosen: dict[str, dict[str, Any]],
    task: Task,
    rounds: int,
    max_time_s: float,
) -> dict[str, list[dict[str, Any]]]:
    names = [n for n in entries if n in chosen]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            c = chosen[name]
            try:
                runs[name].append(
                    _measure(entries[name], task, c["batch_size"], c["threads"], max_time_s)
                )
            except Exception as exc:
                runs[name].append({"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        _log(f"  round {r + 1}/{rounds} done")
    return runs


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else None


def _table(
    entries: dict[str, dict[str, Any]],
    chosen: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    base_acc: float,
) -> list[dict[str, Any]]:
    base = runs.get("fp32 eager", [])
    ref = {k: _median(base, k) for k in ("energy_j_per_item", "latency_ms_p50", "latency_ms_p90")}
    ref_size = entries["fp32 eager"]["built"].size_bytes
    ref_macs = entries["fp32 eager"]["built"].macs_per_item
    rows = []
    for name, entry in entries.items():
        row: dict[str, Any] = {"method": name}
        if "error" in entry:
            rows.append({**row, "error": entry["error"]})
            continue
        rs = [r for r in runs.get(name, []) if "error" not in r]
        built: peers.Built = entry["built"]
        drop = (base_acc - entry["accuracy"]) * 100
        row |= {
            "note": built.note,
            "accuracy": entry["accuracy"],
            "drop_points": drop,
            "within_limit": drop <= MAX_DROP * 100 + 1e-9,
            "batch_size": chosen.get(name, {}).get("batch_size"),
            "threads": chosen.get(name, {}).get("threads"),
            "tuning": chosen.get(name, {}).get("tried", []),
            "size_bytes": built.size_bytes,
            "size_ratio": built.size_bytes / ref_size,
            "macs_per_item": built.macs_per_item,
            "macs_ratio": built.macs_per_item / ref_macs if ref_macs else None,
            "rounds_j_per_item": [r["energy_j_per_item"] for r in rs],
            "round_errors": [r["error"] for r in runs.get(name, []) if "error" in r],
        }
        if not rs:
            rows.append({**row, "error": "no round measured"})
            continue
        for key in ("energy_j_per_item", "latency_ms_p50", "latency_ms_p90"):
            value = _median(rs, key)
            row[key] = value
            ref_value = ref[key]
            row[key.replace("energy_j_per_item", "energy") + "_ratio"] = (
                value / ref_value if value is not None and ref_value else None
            )
        row["energy_source"] = rs[0]["energy_source"]
        row["energy_uncertainty"] = rs[0]["energy_uncertainty"]
        row["converged_rounds"] = sum(bool(r.get("converged")) for r in rs)
        row["notes"] = sorted({n for r in rs for n in r.get("notes", [])})
        if name == "wattwise optimize":
            row["choice"] = entry["choice"]
            row["search_energy_j"] = entry.get("search_energy_j")
            row["search_s"] = entry.get("search_s")
        rows.append(row)
    return rows


def run_case(case: Case, rounds: int, max_time_s: float, tune_time_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    _log(f"{case.key}: task and fp32 baseline")
    task = case.make_task()
    torch.manual_seed(task.seed)
    model = (
        task.fit(task.model_factory(), seed=task.seed).eval()
        if task.epochs
        else (task.model_factory().eval())
    )
    base_acc = _score(task, model)
    _log(f"  baseline accuracy {base_acc:.4f}")
    with tempfile.TemporaryDirectory(prefix=f"ww-bench-{case.key}-") as tmp:
        workdir = Path(tmp)
        entries = build_peers(case, task, model, workdir)
        scenarios: dict[str, Any] = {}
        for scenario in SCENARIOS:
            _log(f"  {scenario}: wattwise optimize ({case.trials[scenario]} trials)")
            try:
                ours = run_wattwise(case, task, model, scenario, workdir)
            except Exception as exc:
                traceback.print_exc()
                ours = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            _log(f"  {scenario}: wattwise chose {ours.get('choice', ours.get('error'))}")
            both = {**entries, "wattwise optimize": ours}
            chosen = _tune(both, case, task, scenario, tune_time_s)
            runs = _rounds(both, chosen, task, rounds, max_time_s)
            rows = _table(both, chosen, runs, base_acc)
            tries = [t for c in chosen.values() for t in c.get("tried", [])]
            scenarios[scenario] = {
                "rows": rows,
                "verdict": verdict(rows),
                "foreign_cpu_cores_max": load_during(runs, tries),
                "wattwise_search": {
                    k: ours.get(k)
                    for k in (
                        "search_s",
                        "search_energy_j",
                        "search_energy_source",
                        "trials",
                        "search_trials",
                    )
                },
            }
            _log(f"  {scenario}: {scenarios[scenario]['verdict']}")
    return {
        "key": case.key,
        "title": case.title,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        # Per case, so a file whose cases were run in different sessions stays honest.
        "hardware": {**hardware_info(), "native_bf16": native_bf16()},
        "versions": _versions(),
        "task": task.name,
        "baseline_accuracy": base_acc,
        "metric": {"lite0-224": "top-1 agreement with fp32", "tinylm": "next-byte accuracy"}.get(
            case.key, "top-1 accuracy"
        ),
        "val_items": len(task.val_data),  # type: ignore[arg-type]
        "offline_batches": list(case.offline_batches),
        "trials": case.trials,
        "elapsed_s": time.perf_counter() - t0,
        "scenarios": scenarios,
    }


def _commit() -> str | None:
    """The wattwise commit measured (the search's choices depend on it), if in a git checkout."""
    import subprocess

    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in (
        "wattwise",
        "torchao",
        "onnxruntime",
        "nncf",
        "openvino",
        "torch-pruning",
        "optuna",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-time-s", type=float, default=2.0, help="per measurement")
    parser.add_argument("--tune-time-s", type=float, default=0.5, help="per pre-pass measurement")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="redo the --models already in --out (the others are kept)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 3-4 trials, 1 round (not for the docs)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
        for key, case in CASES.items():
            CASES[key] = dataclasses.replace(case, trials={"online": 3, "offline": 4})

    doc: dict[str, Any] = {}
    if args.out.exists():
        doc = json.loads(args.out.read_text())
    doc.setdefault("cases", {})
    for case in doc["cases"].values():  # older cases: the run-wide record was theirs
        for field in ("hardware", "versions"):
            case.setdefault(field, doc.get(field))
        case.setdefault("finished", doc.get("date"))
    for key in args.models:
        if key in doc["cases"] and not args.fresh:
            _log(f"{key}: already in {args.out}, skipped (--fresh to redo)")
            continue
        before = machine_load()
        if before > LOAD_LIMIT_CORES:
            why = f"other processes use {before:.2f} cores (limit {LOAD_LIMIT_CORES})"
            if not args.quick:  # a smoke test's figures are not for the docs
                sys.exit(f"{key}: {why}: benchmark on a quiet machine")
            _log(f"{key}: {why}; measuring anyway (--quick)")
        done = run_case(CASES[key], args.rounds, args.max_time_s, args.tune_time_s)
        during = max(s["foreign_cpu_cores_max"] for s in done["scenarios"].values())
        if during > LOAD_LIMIT_CORES and not args.quick:
            sys.exit(
                f"{key}: a measurement ran while other processes used {during:.2f} cores "
                f"(limit {LOAD_LIMIT_CORES}); not written: rerun on a quiet machine"
            )
        doc["cases"][key] = {**done, "load": {"before_cores": before, "during_max_cores": during}}
        doc |= {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "hardware": hardware_info(),
            "versions": _versions(),
            "protocol": {
                "rounds": args.rounds,
                "max_time_s": args.max_time_s,
                "tune_time_s": args.tune_time_s,
                "max_accuracy_drop_points": MAX_DROP * 100,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(doc, indent=1, default=str) + "\n")
        _log(f"{key}: written to {args.out}")


if __name__ == "__main__":
    main()
