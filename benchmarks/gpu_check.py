"""One prepared run for a lent NVIDIA machine: the NVML meter checked, and J/image measured.

What it records (JSON to ``--out``):

1. the NVML energy counter: its update period, and counter energy vs integrated polled
   power over the same window (they should agree within a few percent);
2. J/image with the NVML meter through ``wattwise.measure`` (each in its own child process)
   for our MobileNetV3-Large, EfficientNet-Lite0 and ResNet-50 (v1.5) — fp32 at batch 1 and
   256, bf16 at batch 256, bf16 + compile at 256 — beside the project's H200 anchors measured on an
   H200;
3. wattwise's chosen deployment for each: ``wattwise.deploy.select_deployment`` measures the
   CUDA candidates (eager and compile × fp32, bf16, fp16 at batch 256) side by side and picks the
   lowest J/image; its pick is a row of its own.

4. generation on a Llama-3.1-8B-shaped decoder with random weights (our TinyLM at Llama's
   sizes: 32 layers of 4096, 32 query and 8 key/value heads, SwiGLU 14336, vocabulary
   128256): prefill and decode J/token, TTFT and TBT at batch 1, 16 and 64, for bf16, fp8
   and torchao int4 weight-only (``wattwise.deploy.serve_for_generation``), each with
   ``wattwise.measure(generate=...)`` on the NVML meter (``--no-llm`` skips it).

Sized for one prepared run of at most 5 minutes on an H100 (``--max-time-s`` per measurement).

Run there: ``PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT``. Render with
``python benchmarks/gpu_report.py RESULT.json > docs/benchmarks/gpu.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import wattwise
from wattwise import archs
from wattwise.measure._hardware import hardware_info


def _finish(model: torch.nn.Module, dtype: str, compiled: bool) -> torch.nn.Module:
    model = model.to(getattr(torch, dtype)).eval()
    if compiled:
        # channels_last + inductor: the usual fast path for convnets on a GPU. Module.to
        # documents and accepts memory_format=, but torch's typed overloads of it omit it.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return torch.compile(model)  # type: ignore[return-value]
    return model


def _ours(name: str, dtype: str, compiled: bool = False) -> torch.nn.Module:
    return _finish(archs.create(name, num_classes=1000), dtype, compiled)


MODELS = {
    "MobileNetV3-Large (ours)": "mobilenetv3_large",
    "EfficientNet-Lite0 (ours)": "efficientnet_lite0",
    "ResNet-50 (ours)": "resnet50",
}


def _chosen(name: str, x: torch.Tensor, max_time_s: float) -> dict[str, object]:
    """wattwise's pick among the CUDA deployments at batch 256, measured side by side."""
    from wattwise.deploy import offline_candidates, select_deployment

    model = archs.create(name, num_classes=1000).eval()
    cands = offline_candidates(
        ("eager", "compile"), ("fp32", "bf16", "fp16"), (256,), device="cuda", model=model
    )
    sel = select_deployment(model, cands, x, "offline", rounds=1, max_time_s=max_time_s)
    row: dict[str, object] = {"reason": sel.reason, "notes": list(sel.notes)}
    row["candidates"] = [c.to_dict() for c in sel.candidates]
    chosen = sel.chosen
    if chosen is not None and chosen.measurements:
        dep = chosen.deployment
        row |= chosen.measurements[0].to_dict()
        row |= {"dtype": f"wattwise: {dep.label}", "compiled": dep.backend == "compile"}
    else:
        row["error"] = sel.reason
    return row


LLAMA_8B: dict[str, Any] = {
    "vocab_size": 128256,
    "dim": 4096,
    "layers": 32,
    "heads": 32,
    "kv_heads": 8,
    "ffn_dim": 14336,
    "max_seq_len": 256,
    "rope_theta": 500000.0,
}


def _llm_rows(max_time_s: float, out: Path, result: dict[str, object]) -> list[dict[str, object]]:
    """Generation J/token of a Llama-3.1-8B-shaped TinyLM (random weights) per precision and
    batch, measured in this process (16 GB of weights do not travel to a child)."""
    import copy

    from wattwise.archs.tinylm import TinyLM, TinyLMConfig
    from wattwise.deploy import serve_for_generation
    from wattwise.measure import GenerateSpec

    spec = GenerateSpec(prompt_tokens=128, new_tokens=64)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 8 B parameters built in bf16, on the GPU
    try:
        with torch.device("cuda"):
            base = TinyLM(TinyLMConfig(**LLAMA_8B)).eval()
    finally:
        torch.set_default_dtype(previous)
    ids = torch.randint(0, int(LLAMA_8B["vocab_size"]), (1, spec.prompt_tokens))
    rows: list[dict[str, object]] = []
    for precision in ("bf16", "fp8", "int4-weight-only"):
        try:
            model = base if precision == "bf16" else copy.deepcopy(base)
            served = serve_for_generation(model, "eager", precision, device="cuda")
        except Exception as exc:
            rows.append({"precision": precision, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for batch in (1, 16, 64):
            row: dict[str, object] = {"precision": precision, "batch_size": batch}
            try:
                m = wattwise.measure(
                    served.module,
                    ids,
                    device="cuda",
                    batch_size=batch,
                    generate=spec,
                    isolate=False,
                    max_time_s=max_time_s,
                )
                row |= m.to_dict()
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            gen = row.get("generation") or {}
            print(
                json.dumps(
                    {
                        "llm": precision,
                        "batch": batch,
                        "decode_j_per_token": gen.get("decode_energy_j_per_token")
                        if isinstance(gen, dict)
                        else None,
                        "error": row.get("error"),
                    }
                ),
                flush=True,
            )
            rows.append(row)
            _write(out / "gpu_results.json", {**result, "llm_rows": rows})
        if model is not base:
            del model, served
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-time-s", type=float, default=4.0)
    parser.add_argument("--select-time-s", type=float, default=30.0, help="per model's selection")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-llm", dest="llm", action="store_false")
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
    for label, arch in MODELS.items():
        factory = functools.partial(_ours, arch)
        extra = [("bfloat16", 256, True)] if args.compile else []
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
        try:
            chosen = _chosen(arch, x, args.select_time_s)
        except Exception as exc:
            chosen = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append({"model": label, "batch_size": 256, "dtype": "wattwise", **chosen})
        print(
            json.dumps(
                {k: rows[-1].get(k) for k in ("model", "dtype", "energy_j_per_item", "error")}
            ),
            flush=True,
        )
        _write(args.out / "gpu_results.json", {**result, "rows": rows})
    result["rows"] = rows
    if args.llm:
        try:
            result["llm_rows"] = _llm_rows(args.max_time_s, args.out, result)
        except Exception:
            result["llm_rows"] = [{"error": traceback.format_exc()}]
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(args.out / "gpu_results.json", result)


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    main()
