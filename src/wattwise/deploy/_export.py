"""Export a prepared deployment as a self-contained directory, and load it back.

The directory::

    model.onnx | model.pt2     the model (ONNX for onnxruntime, torch.export for torch backends,
      | model.xml + model.bin  OpenVINO IR for openvino)
    example_input.npy          one input batch (``example_input_<i>.npy`` for several inputs;
                               each entry in deployment.json has its ``name`` for dict inputs)
    expected_output_<i>.npy    what the deployment answered to it, for checking a reload
    deployment.json            schema 1: deployment, input, expected energy with its source, ...
    MODEL_CARD.md              the same for people

Loading (:func:`load_artifact`) lives in ``_safe_load``: the one loader for every artifact
kind, which runs no code from the files it reads (see ``docs/artifacts.md``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from wattwise._core import first_line
from wattwise._fs import temp_dir_beside
from wattwise._inputs import take_rows
from wattwise._units import format_energy as _fmt_j
from wattwise.deploy._inputs import as_batch, run_batches
from wattwise.deploy._prepare import Deployed
from wattwise.deploy._program import export_program
from wattwise.deploy._safe_load import MANIFEST, SCHEMA, LoadedArtifact, first_rows, load_artifact
from wattwise.errors import InputError, WorkloadError

CARD = "MODEL_CARD.md"
ONNX_FILE = "model.onnx"
PT2_FILE = "model.pt2"
IR_FILE, IR_WEIGHTS = "model.xml", "model.bin"

__all__ = ["LoadedArtifact", "export_deployment", "load_artifact"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def hardware_description(device: str = "cpu") -> dict[str, Any]:
    """The machine this process runs on, as results files describe it, plus runtime versions."""
    from wattwise.measure._hardware import hardware_info

    info = hardware_info(include_cuda=device.startswith("cuda"))
    info["onnxruntime"] = _version("onnxruntime")
    info["openvino"] = _version("openvino")
    info["wattwise"] = _version("wattwise")
    return info


def _save_npy(path: Path, tensor: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    np.save(path, t.numpy(), allow_pickle=False)
    return {"file": path.name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}


def export_deployment(
    deployed: Deployed,
    out_dir: str | os.PathLike[str],
    *,
    measurement: Any = None,
    accuracy: float | None = None,
    task_name: str | None = None,
    how_made: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``deployed`` as a self-contained directory (see the module docstring).

    The directory is written next to ``out_dir`` under a temporary name and renamed into place,
    so a failure never leaves a half-written artifact.

    Args:
        deployed: from :func:`deploy`.
        out_dir: the directory to create.
        measurement: a :class:`Measurement` of this deployment, made on this machine; its J/item,
            source and uncertainty become the artifact's expected energy.
        accuracy: the task metric of the deployed model (e.g. 0.981).
        task_name: the task it was judged on.
        how_made: one paragraph for the model card (recipe, search, ...).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        The directory's path.

    Example:
        >>> export_deployment(dep, "out/digits-int8", measurement=m, accuracy=0.98, task_name="digits")
    """
    if not isinstance(deployed, Deployed):
        raise InputError(
            f"export_deployment needs a Deployed (from wattwise.deploy), got {type(deployed).__name__}"
        )
    if accuracy is not None and not (isinstance(accuracy, int | float) and 0 <= accuracy <= 1):
        raise InputError(f"accuracy must be a number in [0, 1], got {accuracy!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        _write(deployed, tmp, measurement, accuracy, task_name, how_made)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(
    deployed: Deployed,
    tmp: Path,
    measurement: Any,
    accuracy: float | None,
    task_name: str | None,
    how_made: str,
) -> None:
    import torch

    dep = deployed.deployment
    notes = list(deployed.notes)
    example = as_batch(deployed.positional_example(), "example_input")
    names = deployed.input_names
    runtime: str
    runner = deployed.module  # what answers the example: the artifact reloads as the same
    model_files: list[str] = []
    if dep.backend == "onnxruntime":
        assert deployed.onnx_bytes is not None
        (tmp / ONNX_FILE).write_bytes(deployed.onnx_bytes)
        model_file, runtime = ONNX_FILE, "onnxruntime"
    elif dep.backend == "openvino":
        assert deployed.ir_bytes is not None
        (tmp / IR_FILE).write_bytes(deployed.ir_bytes[0])
        (tmp / IR_WEIGHTS).write_bytes(deployed.ir_bytes[1])
        model_file, runtime = IR_FILE, "openvino"
        model_files.append(IR_WEIGHTS)
    else:
        try:
            torch.export.save(export_program(deployed.source_model, example), tmp / PT2_FILE)
            model_file, runtime = PT2_FILE, "torch.export"
        except Exception as exc:
            # Keep the deployment usable elsewhere: the same model as ONNX, run by onnxruntime.
            from wattwise.deploy._ort import export_onnx

            reason = f"torch.export failed ({type(exc).__name__}: {first_line(exc)})"
            try:
                onnx_bytes, _ = export_onnx(deployed.source_model, example)
            except WorkloadError as onnx_exc:
                raise WorkloadError(f"cannot export the model: {reason}; {onnx_exc}") from None
            (tmp / ONNX_FILE).write_bytes(onnx_bytes)
            model_file, runtime = ONNX_FILE, "onnxruntime"
            notes.append(
                f"{reason}; the model is stored as ONNX (fp32) and reloads with onnxruntime"
            )
            dep = dataclasses.replace(dep, backend="onnxruntime", precision="fp32")
            from wattwise.deploy._runners import OrtModule

            runner = OrtModule(onnx_bytes, threads=dep.threads)

    if len(example) == 1:
        inputs = [_save_npy(tmp / "example_input.npy", example[0][:1])]
    else:
        inputs = [_save_npy(tmp / f"example_input_{i}.npy", t[:1]) for i, t in enumerate(example)]
    if names is not None:
        # A dict-input model: the loader gives the reloaded model its inputs by these names.
        for entry, name in zip(inputs, names, strict=True):
            entry["name"] = name
    # The deployment's answer to the example, at its own batch size (static shapes), first row.
    batch = take_rows(example, deployed.deployment.batch_size)
    answer = first_rows(run_batches(runner, [batch])[0])
    outputs = [_save_npy(tmp / f"expected_output_{i}.npy", t) for i, t in enumerate(answer)]

    files = {
        name: {"sha256": _sha256(tmp / name), "size_bytes": (tmp / name).stat().st_size}
        for name in [model_file, *model_files] + [d["file"] for d in inputs + outputs]
    }
    expected = None
    if measurement is not None:
        expected = {
            "energy_j_per_item": measurement.energy_j_per_item,
            "energy_source": measurement.energy_source,
            "energy_uncertainty": measurement.energy_uncertainty,
            "energy_above_idle_j_per_item": measurement.energy_above_idle_j_per_item,
            "co2e_g_per_million_items": measurement.co2e_g_per_million_items,
            "grid_intensity_g_per_kwh": measurement.grid_intensity_g_per_kwh,
            "latency_ms_p50": measurement.latency_ms_p50,
            "latency_ms_p90": measurement.latency_ms_p90,
            "throughput_items_per_s": measurement.throughput_items_per_s,
            "batch_size": measurement.batch_size,
            "threads": measurement.threads,
            "device": measurement.device,
        }
        if measurement.batch_size != dep.batch_size:
            notes.append(
                f"energy was measured at batch {measurement.batch_size}, the deployment runs batch {dep.batch_size}"
            )
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "deployment": dep.to_dict(),
        "runtime": runtime,
        "model_file": model_file,
        **({"weights_file": IR_WEIGHTS} if runtime == "openvino" else {}),
        "inputs": inputs,
        "outputs": outputs,
        "files": files,
        "expected": expected,
        "hardware": hardware_description(dep.device),
        "accuracy": {"value": accuracy, "task": task_name}
        if accuracy is not None or task_name
        else None,
        "check": deployed.check.to_dict() if deployed.check else None,
        "how_made": how_made,
        "notes": notes,
    }
    (tmp / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    (tmp / CARD).write_text(_model_card(manifest), encoding="utf-8")


# Characters that make Markdown or HTML out of text: the card shows task names, recipes and
# notes that callers (and a search's user) wrote, and renderers (GitHub, model hubs) turn raw
# HTML and links into active content.
_CARD_ESCAPES = str.maketrans({"|": "&#124;", "`": "&#96;", "[": "&#91;", "]": "&#93;"})


def _text(value: Any, *, one_line: bool = True) -> str:
    """``value`` as inert card text: HTML-escaped, Markdown tables, code and links defused."""
    text = html.escape(str(value), quote=True).translate(_CARD_ESCAPES)
    return " ".join(text.split()) if one_line else text


def _model_card(m: dict[str, Any]) -> str:
    dep = m["deployment"]
    acc = m["accuracy"] or {}
    exp = m["expected"]
    hw = m["hardware"]
    lines = [
        f"# Model card: {_text(acc.get('task') or 'model')} on {_text(dep['backend'])} / {_text(dep['precision'])}",
        "",
        "Made by wattwise. Every energy figure below says where it comes from: `measured:*` is a",
        "hardware counter, `estimated:*` a power model; ± is its relative uncertainty.",
        "",
        "## Results",
        "",
        "| quantity | value |",
        "| --- | --- |",
    ]
    if acc.get("value") is not None:
        lines.append(
            f"| accuracy ({_text(acc.get('task') or 'task metric')}) | {acc['value']:.4f} |"
        )
    else:
        lines.append("| accuracy | not evaluated |")
    if exp:
        unc = f"±{exp['energy_uncertainty']:.0%}"
        lines += [
            f"| energy per item | {_fmt_j(exp['energy_j_per_item'])} ({_text(exp['energy_source'])}, {unc}) |",
            f"| CO2e per million items | {exp['co2e_g_per_million_items']:.3g} g (grid {exp['grid_intensity_g_per_kwh']:.0f} g/kWh) |",
            f"| latency p50 / p90 per call | {exp['latency_ms_p50']:.3g} / {exp['latency_ms_p90']:.3g} ms |",
            f"| throughput | {exp['throughput_items_per_s']:.4g} items/s |",
            f"| measured at | batch {exp['batch_size']}, {exp['threads']} thread(s), {_text(exp['device'])} |",
        ]
    else:
        lines.append("| energy per item | not measured |")
    check = m.get("check")
    if check:
        lines.append(
            f"| equivalence with eager fp32 | {check['metric']} {check['value']:.4g} (bound {check['threshold']:g}) |"
        )
    lines += [
        "",
        "## Deployment",
        "",
        f"- backend {_text(dep['backend'])}, precision {_text(dep['precision'])}, batch {dep['batch_size']}, "
        f"threads {dep['threads'] or 'default'}, device {_text(dep['device'])}",
        f"- model file {_text(m['model_file'])} ({_text(m['runtime'])}); inputs "
        + ", ".join(f"{_text(i['shape'])} {_text(i['dtype'])}" for i in m["inputs"])
        + " (batch dimension first, any batch size)",
        f"- exported on: {_text(', '.join(hw.get('cuda_devices') or []) or hw.get('cpu_model'))} "
        f"({_text(hw.get('cpus_allowed'))} CPU cores allowed), torch {_text(hw.get('torch'))}, "
        f"onnxruntime {_text(hw.get('onnxruntime'))}"
        + (f", openvino {_text(hw.get('openvino'))}" if m["runtime"] == "openvino" else ""),
        "",
        "## How it was made",
        "",
        _text(m["how_made"], one_line=False) if m["how_made"] else "Not described.",
        "",
    ]
    if m["notes"]:
        lines += ["## Notes", "", *[f"- {_text(n)}" for n in m["notes"]], ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from wattwise.deploy import load_artifact",
        "art = load_artifact('THIS_DIRECTORY')",
        "y = art(art.example_input)",
        "```",
        "",
        "or `wattwise measure THIS_DIRECTORY` to measure it on your hardware: energy figures are",
        "properties of the machine they were measured on.",
        "",
    ]
    return "\n".join(lines)
