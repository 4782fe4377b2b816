"""A synthetic study for the report tests (importable by name, unlike a conftest).

The results document is schema 1 as optimize wrote it before the confirmation stage existed
(no ``confirmation``, ``baseline_same_batch``, ratios or ``payback_basis``): the report still
reads such files, and computes their payback itself. ``tests/search/test_results.py`` checks
the report against a real, confirmed optimize run.
"""

from __future__ import annotations

import copy
from typing import Any

XSS_STUDY = "<script>alert(1)</script>"
XSS_TASK = 'digits <img src=x onerror="alert(2)">'
XSS_RECIPE = "</script><script>alert(3)</script>"
XSS_STUDENT = "<b>mobilenetv3</b>_small"
PASSWORD = "hunter2-S3cret"
STORAGE = f"postgresql://wattwise:{PASSWORD}@db.internal:5432/studies"

BASE_J = 2.4e-3


def _pass(kind: str, **params: Any) -> dict[str, Any]:
    return {"type": kind, "version": 1, **params}


def _dep(backend: str, precision: str, batch: int, threads: int | None = 2) -> dict[str, Any]:
    return {
        "backend": backend,
        "precision": precision,
        "batch_size": batch,
        "threads": threads,
        "device": "cpu",
    }


def _trial(
    number: int,
    recipe: list[dict[str, Any]],
    dep: dict[str, Any],
    *,
    acc: float,
    j: float,
    p90: float,
    pareto: bool = False,
    student: str | None = None,
    source: str = "measured:rapl",
    unc: float = 0.05,
) -> dict[str, Any]:
    drop = round(0.975 - acc, 6)
    return {
        "number": number,
        "state": "complete",
        "fail_reason": None,
        "label": f"trial-{number} {dep['backend']}/{dep['precision']} b{dep['batch_size']}",
        "recipe": recipe,
        "student": student,
        "deployment": dep,
        "accuracy": acc,
        "accuracy_drop": drop,
        "energy_j_per_item": j,
        "energy_source": source,
        "energy_uncertainty": unc,
        "latency_ms_p50": p90 * 0.8,
        "latency_ms_p90": p90,
        "throughput_items_per_s": dep["batch_size"] / (p90 * 0.8e-3),
        "co2e_g_per_million_items": j * 1e6 / 3.6e6 * 480,
        "macs_per_item": 5.6e6 * (0.5 if recipe else 1.0),
        "params": 120_000,
        "size_bytes": 480_000,
        "disturbed_windows": 0,
        "build_energy_j": 35.0,
        "search_energy_source": source,
        "measure_energy_j": 12.5,
        "duration_s": 41.0,
        "pareto": pareto,
        "feasible": drop <= 0.01,
    }


def _failed(number: int, state: str, reason: str | None, recipe: list[dict[str, Any]]) -> dict:
    return {
        "number": number,
        "state": state,
        "fail_reason": reason,
        "recipe": recipe,
        "student": None,
        "deployment": _dep("onnxruntime", "int8", 32),
        "accuracy": None,
        "accuracy_drop": None,
        "energy_j_per_item": None,
        "energy_source": None,
        "energy_uncertainty": None,
        "latency_ms_p50": None,
        "latency_ms_p90": None,
        "throughput_items_per_s": None,
        "macs_per_item": None,
        "params": None,
        "size_bytes": None,
        "build_energy_j": 3.0 if state == "failed" else None,
        "measure_energy_j": None,
        "duration_s": 4.2,
        "pareto": False,
        "feasible": False,
    }


def _entry(trial: dict[str, Any]) -> dict[str, Any]:
    """A trial as results.json lists it (``best``, ``pareto``): its figures, what it was."""
    figures = (
        "accuracy",
        "energy_j_per_item",
        "energy_source",
        "energy_uncertainty",
        "latency_ms_p50",
        "latency_ms_p90",
        "throughput_items_per_s",
        "co2e_g_per_million_items",
        "macs_per_item",
        "params",
        "size_bytes",
        "disturbed_windows",
    )
    return {
        "number": trial["number"],
        "label": trial["label"],
        **{k: trial[k] for k in figures},
        "accuracy_drop": trial["accuracy_drop"],
        "recipe": copy.deepcopy(trial["recipe"]),
        "student": trial["student"],
        "deployment": dict(trial["deployment"]),
    }


def make_study() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results, trials) as the search would produce them."""
    prune5 = _pass("prune", ratio=0.5, scope="global", importance="magnitude")
    prune3 = _pass("prune", ratio=0.3, scope="global", importance="magnitude")
    quant = _pass("quantize", method="pt2e-int8", calibration_batches=8)
    distill = _pass("distill", epochs=3, temperature=4.0, note=XSS_RECIPE)
    trials = [
        _trial(0, [], _dep("eager", "fp32", 1), acc=0.975, j=2.3e-3, p90=2.0),
        _trial(1, [prune5], _dep("eager", "fp32", 32), acc=0.968, j=4.1e-4, p90=9.5),
        _trial(
            2,
            [prune5, quant],
            _dep("onnxruntime", "int8", 32),
            acc=0.969,
            j=1.6e-4,
            p90=6.0,
            pareto=True,
        ),
        _trial(
            3,
            [prune3, quant],
            _dep("onnxruntime", "int8", 32),
            acc=0.972,
            j=2.1e-4,
            p90=6.5,
            pareto=True,
        ),
        _trial(
            4, [quant], _dep("onnxruntime", "int8", 1), acc=0.974, j=9.0e-4, p90=0.9, pareto=True
        ),
        _trial(
            5,
            [prune5, quant],
            _dep("onnxruntime", "int8", 1, threads=1),
            acc=0.955,
            j=7.0e-4,
            p90=1.1,
        ),
        _trial(
            6,
            [distill],
            _dep("eager", "fp32", 32),
            acc=0.940,
            j=9.0e-5,
            p90=3.0,
            student=XSS_STUDENT,
        ),
        _trial(
            7,
            [distill, quant],
            _dep("onnxruntime", "int8", 32),
            acc=0.971,
            j=1.2e-4,
            p90=2.5,
            student="mobilenetv3_small",
            pareto=True,
            source="estimated:roofline-cpu",
            unc=0.3,
        ),
        _trial(8, [prune3], _dep("compile", "bf16", 32), acc=0.973, j=6.0e-4, p90=5.0),
        {"number": 9, "state": "complete", "recipe": [prune3], "deployment": None},
        _failed(10, "failed", "onnxruntime: child process died with signal 11 (SIGSEGV)", [quant]),
        _failed(
            11, "failed", f"deploy check failed: max |Δ| 0.31 > 0.05 {XSS_RECIPE}", [prune5, quant]
        ),
        _failed(12, "pruned", "pruned at step 1 (accuracy below the floor)", [prune5]),
        _failed(13, "running", None, [prune3]),
    ]
    best = trials[7]
    results: dict[str, Any] = {
        "schema": 1,
        "task": XSS_TASK,
        "study": XSS_STUDY,
        "storage": STORAGE,
        "scenario": "offline",
        "max_accuracy_drop": 0.01,
        "hardware": {
            "cpu_model": "AMD EPYC 9654 96-Core Processor",
            "cpu_cores_physical": 96,
            "cpu_logical": 192,
            "cpus_allowed": 2,
            "cpu_quota": 2.0,
            "ram_bytes": 8_000_000_000,
            "os": "Linux 6.1",
            "python": "3.11.2",
            "torch": "2.13.0+cpu",
            "torch_cuda": None,
            "cuda_devices": [],
        },
        "meter": {"source": "measured:rapl", "uncertainty": 0.05, "domains": ["package-0"]},
        "baseline": {
            "accuracy": 0.975,
            "energy_j_per_item": BASE_J,
            "energy_source": "measured:rapl",
            "energy_uncertainty": 0.04,
            "latency_ms_p50": 1.8,
            "latency_ms_p90": 2.1,
            "throughput_items_per_s": 555.0,
            "co2e_g_per_million_items": BASE_J * 1e6 / 3.6e6 * 480,
            "macs_per_item": 5.6e6,
            "params": 120_000,
            "size_bytes": 480_000,
            "disturbed_windows": 0,
            "recipe": [],
            "deployment": _dep("eager", "fp32", 1, threads=None),
        },
        "best": {
            **_entry(best),
            "artifact": "wattwise-out/artifacts/trial-7/model.onnx",
            "trial_energy_j_per_item": best["energy_j_per_item"],
        },
        # As optimize writes it: the front's entries, lowest J/item first.
        "pareto": [
            _entry(t)
            for t in sorted(trials[:9], key=lambda t: t["energy_j_per_item"])
            if t["pareto"]
        ],
        "trials": len(trials),
        "failed_trials": 2,
        "search_energy_j": 1.25e3,
        "search_energy_source": "measured:rapl",
        "payback_items": None,
        "grid_intensity_g_per_kwh": 480.0,
        "price_per_kwh": 0.15,
    }
    return results, trials
