"""MiniLM (all-MiniLM-L6-v2) on ``minilm-embed`` and ``minilm-topics``: wattwise's deployment
against the single techniques a user would reach for, measured side by side.

Peers, each built with its own library's documented API:

* **fp32 eager**: the model as it is;
* **torch.compile fp32**: inductor, its defaults;
* **torchao dynamic int8**: ``quantize_(model, Int8DynamicActivationInt8WeightConfig())`` on
  every Linear, run eagerly;
* **Optimum ORT dynamic int8**: ONNX Runtime's ``quantize_dynamic`` with the settings of
  Optimum's ``AutoQuantizationConfig.avx2(is_static=False, per_channel=False)`` (this CPU has
  AVX2, no AVX-512): u8 weights and activations, per tensor, on the fully connected MatMuls;
* **OpenVINO + NNCF int8**: OpenVINO's documented recipe for BERT-like models:
  ``ov.convert_model(model, example_input=...)``, then ``nncf.quantize(...,
  model_type=nncf.ModelType.TRANSFORMER)`` on 256 calibration sentences, compiled for the CPU
  with OpenVINO's defaults;
* **wattwise**: the artifact a ``wattwise optimize --task minilm-...`` exported
  (``--artifact TASK=DIR``), or, without one, wattwise's ``onnxruntime/int8-dynamic``
  deployment of the same model (int8 weights per channel) so the table still compares the
  recipe.

Protocol: every peer at one batch size per scenario (online: 1, offline: 64), all allowed
cores; each measurement in its own child process (``wattwise.measure``); ``--rounds`` rotating
rounds (A B C D, B C D A, ...); a peer's figure is the median of its rounds, and its ratio to
fp32 eager the median of the per-round ratios (each taken within one round). Quality is the
task's own metric on its held-out sentences: accuracy for topics, the mean cosine similarity
to fp32 embeddings for embed. Energy is labelled with its source; on a machine without a
counter it is an estimate.

Run: ``python benchmarks/bench_minilm.py [--rounds 3] [--artifact minilm-topics=DIR]``; writes
``docs/benchmarks/minilm.json`` and ``docs/benchmarks/minilm.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import wattwise
from wattwise._units import format_energy
from wattwise.tasks import Task, load_task

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "benchmarks"
SCENARIOS = {"online": 1, "offline": 64}
PEERS = (
    "fp32 eager",
    "torch.compile fp32",
    "torchao dynamic int8",
    "Optimum ORT dynamic int8",
    "OpenVINO + NNCF int8",
    "wattwise",
)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- built inside the measuring child -------------------------------------------------------


def _load(factory: Callable[[], nn.Module], state_path: str) -> nn.Module:
    model = factory()
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()


def _eager(factory: Callable[[], nn.Module], state_path: str) -> nn.Module:
    return _load(factory, state_path)


def _compiled(factory: Callable[[], nn.Module], state_path: str) -> Any:
    return torch.compile(_load(factory, state_path))


def _torchao(factory: Callable[[], nn.Module], state_path: str) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = _load(factory, state_path)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


class _Session(nn.Module):
    """An ONNX Runtime session called by name, like the model."""

    def __init__(self, onnx: bytes, names: tuple[str, ...]) -> None:
        import onnxruntime as ort

        super().__init__()
        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = names

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        feed = {i: x[n].numpy() for i, n in zip(self.inputs, self.names, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _ort(onnx: bytes, names: tuple[str, ...]) -> nn.Module:
    return _Session(onnx, names)


class _OvCompiled(nn.Module):
    """An OpenVINO model compiled for the CPU with its defaults, called by name."""

    def __init__(self, xml: str) -> None:
        import openvino as ov

        super().__init__()
        self.compiled = ov.Core().compile_model(xml, "CPU")

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        out = self.compiled({k: v.numpy() for k, v in x.items()})
        return torch.from_numpy(out[self.compiled.output(0)].copy())


def _ov(xml: str) -> nn.Module:
    return _OvCompiled(xml)


def _artifact(path: str) -> Any:
    from wattwise.deploy import load_artifact

    return load_artifact(path).callable


# --- built here -------------------------------------------------------------------------------


def _optimum_dynamic_int8(model: nn.Module, example: dict[str, torch.Tensor]) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from wattwise.deploy._named import ByPosition
    from wattwise.deploy._ort import export_onnx

    names = tuple(example)
    fp32, _ = export_onnx(ByPosition(model, names), tuple(example.values()))
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        Path(src).write_bytes(fp32)
        quantize_dynamic(
            src,
            out,
            per_channel=False,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul"],
        )
        return Path(out).read_bytes()


def _openvino_nncf_int8(task: Task, model: nn.Module, workdir: str) -> str:
    """OpenVINO's BERT recipe: convert from PyTorch, NNCF's transformer scheme; the IR's path."""
    import logging

    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    ov_model = ov.convert_model(model, example_input=dict(task.example_input))
    calibration = task.calibration_batches(n_items=256, batch_size=32)
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(calibration, lambda b: {k: v.numpy() for k, v in b.items()}),
        subset_size=len(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
    )
    xml = os.path.join(workdir, "nncf_int8.xml")
    ov.save_model(quantized, xml)
    return xml


def _wattwise_factory(
    model: nn.Module, task: Task, artifact: str | None
) -> tuple[Callable[[], Any], str]:
    if artifact:
        return functools.partial(_artifact, artifact), f"wattwise optimize artifact {artifact}"
    dep = wattwise.deploy(model, "onnxruntime", "int8-dynamic", example_input=task.example_input)
    assert dep.onnx_bytes is not None
    names = tuple(task.example_input)
    return functools.partial(
        _ort, dep.onnx_bytes, names
    ), "onnxruntime/int8-dynamic of the task model"


def _quality(task: Task, factory: Callable[[], Any]) -> float:
    built = factory()
    module = built if isinstance(built, nn.Module) else _Callable(built)
    return float(task.evaluate(module))


class _Callable(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def run_task(
    task_name: str, rounds: int, max_time_s: float, artifact: str | None
) -> dict[str, Any]:
    task = load_task(task_name)
    model = task.model_factory()
    if task.epochs:
        _log(f"{task_name}: training the fp32 model ({task.epochs} epoch(s))")
        task.fit(model)
    model.eval()
    tmp = tempfile.mkdtemp(prefix="bench-minilm-")
    state = os.path.join(tmp, "model.pt")
    torch.save(model.state_dict(), state)
    names = tuple(task.example_input)
    factories: dict[str, tuple[Callable[[], Any], str]] = {
        "fp32 eager": (functools.partial(_eager, task.model_factory, state), "the model as it is"),
        "torch.compile fp32": (
            functools.partial(_compiled, task.model_factory, state),
            "inductor defaults",
        ),
        "torchao dynamic int8": (
            functools.partial(_torchao, task.model_factory, state),
            "Int8DynamicActivationInt8WeightConfig on every Linear, run eagerly (not compiled)",
        ),
        "Optimum ORT dynamic int8": (
            functools.partial(_ort, _optimum_dynamic_int8(model, task.example_input), names),
            "quantize_dynamic as AutoQuantizationConfig.avx2(is_static=False, per_channel=False)",
        ),
        "OpenVINO + NNCF int8": (
            functools.partial(_ov, _openvino_nncf_int8(task, model, tmp)),
            "ov.convert_model, nncf.quantize(model_type=TRANSFORMER, 256 sentences), CPU defaults",
        ),
        "wattwise": _wattwise_factory(model, task, artifact),
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, (factory, note) in factories.items():
        _log(f"{task_name}: quality of {name}")
        try:
            rows[name] = {"note": note, "quality": _quality(task, factory)}
        except Exception as exc:
            rows[name] = {"note": note, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    result: dict[str, Any] = {"task": task_name, "peers": rows, "scenarios": {}}
    ok = [n for n in PEERS if "error" not in rows[n]]
    for scenario, batch in SCENARIOS.items():
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in ok}
        for r in range(rounds):
            order = ok[r % len(ok) :] + ok[: r % len(ok)]
            for name in order:
                try:
                    m = wattwise.measure(
                        factories[name][0],
                        task.example_input,
                        batch_size=batch,
                        max_time_s=max_time_s,
                        count_macs=name == "fp32 eager",
                    )
                    runs[name].append(m.to_dict())
                except Exception as exc:
                    runs[name].append({"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            _log(f"{task_name} {scenario}: round {r + 1}/{rounds} done")
        result["scenarios"][scenario] = _summarise(runs, batch)
    return result


def _summarise(runs: dict[str, list[dict[str, Any]]], batch: int) -> dict[str, Any]:
    base = runs["fp32 eager"]
    out: dict[str, Any] = {"batch_size": batch, "peers": {}}
    for name, rows in runs.items():
        good = [r for r in rows if "energy_j_per_item" in r]
        ratios = [
            b["energy_j_per_item"] / r["energy_j_per_item"]
            for b, r in zip(base, rows, strict=True)
            if "energy_j_per_item" in r and "energy_j_per_item" in b
        ]
        out["peers"][name] = {
            "energy_j_per_item": statistics.median(r["energy_j_per_item"] for r in good)
            if good
            else None,
            "energy_source": good[0]["energy_source"] if good else None,
            "energy_uncertainty": good[0].get("energy_uncertainty") if good else None,
            "latency_ms_p90": statistics.median(r["latency_ms_p90"] for r in good)
            if good
            else None,
            "tokens_per_item": good[0].get("tokens_per_item") if good else None,
            "ratio_vs_fp32_eager": statistics.median(ratios) if ratios else None,
            "round_ratios": ratios,
            "errors": [r["error"] for r in rows if "error" in r],
        }
    return out


def _machine(m: dict[str, Any]) -> str:
    return (
        f"{m.get('cpu_model')}, {m.get('cpus_allowed')} CPUs allowed, torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime')}"
    )


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# MiniLM: wattwise vs single techniques",
        "",
        f"Measured {doc['date']} on {_machine(doc['machine'])} (commit {doc['commit']}), by "
        "`benchmarks/bench_minilm.py`: each figure the median of "
        f"{doc['rounds']} rotating rounds, each measurement in its own child process; ratios "
        "are medians of per-round ratios to fp32 eager at the same batch size. Energy sources "
        "are given per row; `estimated:` figures come from a CPU-time model, not a counter.",
        "",
        "Published anchor: sentence-transformers reports 3.08x for MiniLM-class ONNX int8 on "
        "AVX-512-VNNI CPUs (speed, not energy); this machine has AVX2 only.",
        "",
    ]
    for t in doc["tasks"]:
        quality = "accuracy" if t["task"] == "minilm-topics" else "mean cosine to fp32"
        lines += [f"## {t['task']}", ""]
        for scenario, s in t["scenarios"].items():
            lines += [
                f"### {scenario} (batch {s['batch_size']})",
                "",
                f"| peer | {quality} | J/item | source | ratio vs fp32 eager | p90 ms |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for name in PEERS:
                peer = t["peers"][name]
                row = s["peers"].get(name)
                if "error" in peer or row is None or row["energy_j_per_item"] is None:
                    why = peer.get("error") or (row or {}).get("errors") or "not measured"
                    lines.append(f"| {name} | — | failed: {str(why)[:80]} | | | |")
                    continue
                unc = row["energy_uncertainty"]
                source = row["energy_source"] + (f" ±{unc:.0%}" if unc else "")
                lines.append(
                    f"| {name} | {peer['quality']:.3f} | {format_energy(row['energy_j_per_item'])} "
                    f"| {source} | {row['ratio_vs_fp32_eager']:.2f}× | {row['latency_ms_p90']:.1f} |"
                )
            lines.append("")
        lines += ["Peers: " + "; ".join(f"**{n}**: {t['peers'][n]['note']}" for n in PEERS), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-time-s", type=float, default=3.0)
    parser.add_argument("--tasks", default="minilm-embed,minilm-topics")
    parser.add_argument("--artifact", action="append", default=[], help="TASK=DIR")
    args = parser.parse_args()
    artifacts = dict(a.split("=", 1) for a in args.artifact)
    from wattwise.deploy import hardware_description

    doc: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": hardware_description(),
        "commit": os.popen("git -C " + str(ROOT) + " rev-parse --short HEAD").read().strip(),
        "rounds": args.rounds,
        "tasks": [
            run_task(name, args.rounds, args.max_time_s, artifacts.get(name))
            for name in args.tasks.split(",")
        ],
    }
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "minilm.json").write_text(json.dumps(doc, indent=1) + "\n")
    (DATA / "minilm.md").write_text(_markdown(doc))
    _log(f"wrote {DATA / 'minilm.json'} and {DATA / 'minilm.md'}")


if __name__ == "__main__":
    main()
