"""One prepared run for a lent NVIDIA machine: the NVML meter checked, and J/image measured.

What it records (JSON to ``--out``):

1. the NVML energy counter: its update period, and counter energy vs integrated polled
   power over the same window (they should agree within a few percent);
2. J/image with the NVML meter through ``wattwise.measure`` (each in its own child process)
   for our MobileNetV3-Large, MobileNetV2, EfficientNet-Lite0 and, where torchvision is
   importable, ResNet-50 — fp32 at batch 1 and 256, bf16 at batch 256 — beside the DESIGN.md
   anchors measured on an H200.

Run there: ``PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT``. Render with
``python benchmarks/gpu_report.py RESULT.json > docs/benchmarks/gpu.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

import wattwise
from wattwise import archs
from wattwise.measure._hardware import hardware_info


def _finish(model: torch.nn.Module, dtype: str, compiled: bool) -> torch.nn.Module:
    model = model.to(getattr(torch, dtype)).eval()
    if compiled:
        # channels_last + inductor: the usual fast path for convnets on a GPU.
        model = model.to(memory_format=torch.channels_last)
        return torch.compile(model)  # type: ignore[return-value]
    return model


def _ours(name: str, dtype: str, compiled: bool = False) -> torch.nn.Module:
    return _finish(archs.create(name, num_classes=1000), dtype, compiled)


def _resnet50(dtype: str, compiled: bool = False) -> torch.nn.Module:
    import torchvision

    return _finish(torchvision.models.resnet50(weights=None), dtype, compiled)


def _models() -> dict[str, object]:
    out: dict[str, object] = {
        "MobileNetV3-Large (ours)": functools.partial(_ours, "mobilenetv3_large"),
        "MobileNetV2 (ours)": functools.partial(_ours, "mobilenetv2"),
        "EfficientNet-Lite0 (ours)": functools.partial(_ours, "efficientnet_lite0"),
    }
    try:
        import torchvision  # noqa: F401

        out["ResNet-50 (torchvision)"] = _resnet50
    except Exception as exc:  # not importable beside every torch
        print(f"no torchvision: {exc}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-time-s", type=float, default=4.0)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result["hardware"] = hardware_info()
    result["torch"] = torch.__version__
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,power.limit", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    result["nvidia_smi"] = smi.stdout.strip()

    from wattwise.measure.meters.nvml import nvml_counter_probe

    try:
        result["counter_probe"] = nvml_counter_probe(device_index=0, seconds=4.0)
    except Exception:
        result["counter_probe"] = {"error": traceback.format_exc()}
    print(json.dumps(result["counter_probe"], indent=1), flush=True)

    rows = []
    x = torch.randn(1, 3, 224, 224)
    configs = [("float32", 1, False), ("float32", 256, False), ("bfloat16", 256, False)]
    compile_for = {"MobileNetV3-Large (ours)", "ResNet-50 (torchvision)"}
    for label, factory in _models().items():
        extra = [("bfloat16", 256, True)] if label in compile_for and args.compile else []
        for dtype, batch, compiled in configs + extra:
            row: dict[str, object] = {
                "model": label,
                "dtype": dtype,
                "batch_size": batch,
                "compiled": compiled,
            }
            try:
                m = wattwise.measure(
                    functools.partial(factory, dtype=dtype, compiled=compiled),  # type: ignore[arg-type]
                    x.to(getattr(torch, dtype)),
                    device="cuda",
                    batch_size=batch,
                    max_time_s=args.max_time_s,
                )
                row.update(m.to_dict())
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            print(
                json.dumps(
                    {
                        k: row.get(k)
                        for k in (
                            "model",
                            "dtype",
                            "batch_size",
                            "energy_j_per_item",
                            "energy_source",
                            "latency_ms_p50",
                            "error",
                        )
                    }
                ),
                flush=True,
            )
            rows.append(row)
            _write(args.out / "gpu_results.json", {**result, "rows": rows})
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(args.out / "gpu_results.json", {**result, "rows": rows})


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    main()
