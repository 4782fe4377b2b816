"""Deployment benchmarks, each a set of ratios measured side by side in one run.

1. **int8 on the digits task** (issue: compression passes): the digits CNN trained, then
   int8 by torchao's PT2E flow (run through ``torch.compile`` with freezing) and by ONNX
   Runtime static QDQ, against fp32 eager and fp32 ``torch.compile``, at batch 64: accuracy,
   J/item and p50 latency, as ratios to fp32 eager. Rounds rotate the order (A B C D, B C D A,
   ...) and each figure is the median over rounds.
2. **MobileNetV3-small widths** (issue: architectures): widths 0.5, 0.75, 1.0 at 224×224 in
   the offline scenario (batch 32): MACs and J/item must rise with width.

Run: ``.venv/bin/python benchmarks/bench_deploy.py`` (a few minutes on 2 cores). Writes
``docs/benchmarks/deploy.json`` and ``docs/benchmarks/deploy.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch

import wattwise
from wattwise._fs import atomic_write_text
from wattwise.deploy import deploy
from wattwise.measure._hardware import hardware_info

ROOT = Path(__file__).resolve().parent.parent


def _interleaved(
    cands: dict[str, Any], x: torch.Tensor, batch: int, rounds: int, threads: int, max_time_s: float
) -> dict[str, list[dict]]:
    names = list(cands)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            m = wattwise.measure(
                cands[name], x, batch_size=batch, threads=threads, max_time_s=max_time_s
            )
            runs[name].append(m.to_dict())
    return runs


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def int8_digits(rounds: int, threads: int, max_time_s: float) -> dict[str, Any]:
    task = wattwise.tasks.digits()
    torch.manual_seed(0)
    model = task.fit(task.model_factory(), seed=0).eval()
    x = task.example_input
    calib = task.calibration_batches()
    q_model, _ = wattwise.compress(model, [wattwise.Quantize(method="pt2e-int8")], task=task)
    deployed = {
        "fp32 eager": deploy(
            model, "eager", "fp32", example_input=x, batch_size=64, threads=threads
        ),
        "fp32 compile": deploy(
            model, "compile", "fp32", example_input=x, batch_size=64, threads=threads
        ),
        "int8 torchao PT2E + compile": deploy(
            q_model, "compile", "int8", example_input=x, batch_size=64, threads=threads
        ),
        "int8 ONNX Runtime QDQ": deploy(
            model,
            "onnxruntime",
            "int8",
            example_input=x,
            calibration=calib,
            batch_size=64,
            threads=threads,
        ),
    }
    accuracy = {name: task.evaluate(d.module) for name, d in deployed.items()}
    runs = _interleaved(
        {n: d.factory() for n, d in deployed.items()}, x, 64, rounds, threads, max_time_s
    )
    base_j = _median(runs["fp32 eager"], "energy_j_per_item")
    base_ms = _median(runs["fp32 eager"], "latency_ms_p50")
    rows = []
    for name, rs in runs.items():
        rows.append(
            {
                "deployment": name,
                "accuracy": accuracy[name],
                "accuracy_drop_points": (accuracy["fp32 eager"] - accuracy[name]) * 100,
                "energy_j_per_item": _median(rs, "energy_j_per_item"),
                "energy_ratio": _median(rs, "energy_j_per_item") / base_j,
                "latency_ms_p50": _median(rs, "latency_ms_p50"),
                "latency_ratio": _median(rs, "latency_ms_p50") / base_ms,
                "energy_source": rs[0]["energy_source"],
                "energy_uncertainty": rs[0]["energy_uncertainty"],
                "rounds_j_per_item": [r["energy_j_per_item"] for r in rs],
            }
        )
    return {"batch_size": 64, "threads": threads, "rounds": rounds, "rows": rows}


def widths(rounds: int, threads: int, max_time_s: float) -> dict[str, Any]:
    import functools

    x = torch.randn(1, 3, 224, 224)
    cands = {
        f"width {w}": functools.partial(wattwise.archs.create, "mobilenetv3_small", width=w)
        for w in (0.5, 0.75, 1.0)
    }
    runs = _interleaved(cands, x, 32, rounds, threads, max_time_s)
    rows = [
        {
            "model": f"mobilenetv3_small {name}",
            "macs_per_item": rs[0]["macs_per_item"],
            "params": rs[0]["params"],
            "energy_j_per_item": _median(rs, "energy_j_per_item"),
            "latency_ms_p50": _median(rs, "latency_ms_p50"),
            "energy_source": rs[0]["energy_source"],
            "energy_uncertainty": rs[0]["energy_uncertainty"],
            "rounds_j_per_item": [r["energy_j_per_item"] for r in rs],
        }
        for name, rs in runs.items()
    ]
    increasing = all(
        a["macs_per_item"] < b["macs_per_item"] and a["energy_j_per_item"] < b["energy_j_per_item"]
        for a, b in itertools.pairwise(rows)
    )
    return {
        "batch_size": 32,
        "threads": threads,
        "rounds": rounds,
        "rows": rows,
        "rises_with_width": increasing,
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "deploy.json", json.dumps(result, indent=2) + "\n")
    i8, wd = result["int8_digits"], result["widths"]
    src = i8["rows"][0]["energy_source"]
    unc = i8["rows"][0]["energy_uncertainty"]
    lines = [
        "# Deployment benchmarks",
        "",
        f"Generated by `benchmarks/bench_deploy.py` on {result['date']}; {result['hardware'].get('cpu_model')},",
        f"{result['hardware'].get('cpus_allowed')} vCPUs, torch {result['torch']}. Energy: **{src}** (±{unc:.0%} absolute;",
        "the ratios below compare figures from the same run and meter). Each figure is the median",
        "of rotating rounds, every measurement in its own child process.",
        "",
        f"## int8 on digits, batch {i8['batch_size']}, {i8['threads']} thread(s), {i8['rounds']} rounds",
        "",
        "| deployment | accuracy | drop (points) | J/item | × fp32 eager | p50 ms/batch | × fp32 eager |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in i8["rows"]:
        lines.append(
            f"| {r['deployment']} | {r['accuracy']:.4f} | {r['accuracy_drop_points']:.2f} | "
            f"{r['energy_j_per_item'] * 1e6:.2f} µJ | {r['energy_ratio']:.2f} | {r['latency_ms_p50']:.3f} | {r['latency_ratio']:.2f} |"
        )
    lines += [
        "",
        f"## MobileNetV3-small widths, 224×224, offline batch {wd['batch_size']}, {wd['rounds']} rounds",
        "",
        "| model | MACs/item | params | J/item | p50 ms/batch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in wd["rows"]:
        lines.append(
            f"| {r['model']} | {r['macs_per_item'] / 1e6:.1f} M | {r['params'] / 1e6:.2f} M | "
            f"{r['energy_j_per_item'] * 1e3:.2f} mJ | {r['latency_ms_p50']:.1f} |"
        )
    lines += [
        "",
        f"MACs and J/item rise with width: **{'yes' if wd['rises_with_width'] else 'NO'}**.",
        "",
    ]
    atomic_write_text(out / "deploy.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-time-s", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hardware": hardware_info(),
        "torch": torch.__version__,
        "int8_digits": int8_digits(args.rounds, args.threads, args.max_time_s),
        "widths": widths(args.rounds, args.threads, args.max_time_s),
    }
    write(result, args.out)
    print((args.out / "deploy.md").read_text())


if __name__ == "__main__":
    main()
