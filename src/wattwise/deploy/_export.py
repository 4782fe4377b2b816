"""Export a prepared deployment as a self-contained directory, and load it back.

The directory::

    model.onnx | model.pt2     the model (ONNX for onnxruntime, torch.export for torch backends)
    example_input.npy          one input batch (``example_input_<i>.npy`` for several inputs)
    expected_output_<i>.npy    what the deployment answered to it, for checking a reload
    deployment.json            schema 1: deployment, input, expected energy with its source, ...
    MODEL_CARD.md              the same for people

Loading never unpickles arbitrary objects: the manifest is JSON, arrays are ``.npy`` read with
``allow_pickle=False``, ONNX is parsed from bytes, and a ``.pt2`` archive is scanned first and
refused if it holds any pickled payload, before ``torch.export.load`` reads it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from wattwise._fs import temp_dir_beside
from wattwise.deploy._backends import BACKENDS, _quiet, export_program
from wattwise.deploy._deployment import Deployed, Deployment, DeploymentMismatch, compare_outputs
from wattwise.errors import InputError, UnavailableError, WorkloadError

SCHEMA = 1
MANIFEST = "deployment.json"
CARD = "MODEL_CARD.md"
ONNX_FILE = "model.onnx"
PT2_FILE = "model.pt2"

__all__ = ["LoadedArtifact", "export_deployment", "load_artifact"]


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedArtifact:
    """A deployment read back from an exported directory.

    Attributes:
        callable: the model, prepared for :attr:`deployment` (call it like the model).
        deployment: the :class:`Deployment` it was exported with (device possibly overridden).
        example_input: the stored input batch (a tensor, or a tuple for several inputs).
        manifest: the parsed ``deployment.json``.
        path: the directory.
        expected_outputs: what the deployment answered to ``example_input`` when exported.
    """

    callable: Any
    deployment: Deployment
    example_input: Any
    manifest: dict[str, Any]
    path: Path
    expected_outputs: tuple[Any, ...] = ()

    def __call__(self, *args: Any) -> Any:
        return self.callable(*args)

    def verify(self) -> Any:
        """Run the example input and compare with the stored outputs (the precision's tolerance).

        Returns:
            The :class:`CheckResult`.

        Raises:
            DeploymentMismatch: the reloaded model answers differently.
        """
        from wattwise.deploy._backends import _as_tuple, _rows, _run_batches

        batch = _rows(_as_tuple(self.example_input, "example_input"), self.deployment.batch_size)
        got = _run_batches(self.callable, [batch])[0]
        first = _first_rows(got)
        result = compare_outputs([self.expected_outputs], [first], self.deployment.precision)
        if not result.passed:
            raise DeploymentMismatch(
                f"{self.path}: reloaded model differs from the exported one: {result.describe()}",
                result,
            )
        return result


def _first_rows(out: Any) -> tuple[Any, ...]:
    import torch

    flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return tuple(
        t[:1].detach().cpu().float() if t.dim() else t.detach().cpu().float() for t in flat
    )


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

    from wattwise.deploy._backends import _as_tuple, _rows, _run_batches

    dep = deployed.deployment
    notes = list(deployed.notes)
    example = _as_tuple(deployed.example_input, "example_input")
    runtime: str
    runner = deployed.module  # what answers the example: the artifact reloads as the same
    if dep.backend == "onnxruntime":
        assert deployed.onnx_bytes is not None
        (tmp / ONNX_FILE).write_bytes(deployed.onnx_bytes)
        model_file, runtime = ONNX_FILE, "onnxruntime"
    else:
        try:
            torch.export.save(export_program(deployed.source_model, example), tmp / PT2_FILE)
            model_file, runtime = PT2_FILE, "torch.export"
        except Exception as exc:
            # Keep the deployment usable elsewhere: the same model as ONNX, run by onnxruntime.
            from wattwise.deploy._ort import export_onnx

            reason = f"torch.export failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
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
    # The deployment's answer to the example, at its own batch size (static shapes), first row.
    batch = _rows(example, deployed.deployment.batch_size)
    answer = _first_rows(_run_batches(runner, [batch])[0])
    outputs = [_save_npy(tmp / f"expected_output_{i}.npy", t) for i, t in enumerate(answer)]

    files = {
        name: {"sha256": _sha256(tmp / name), "size_bytes": (tmp / name).stat().st_size}
        for name in [model_file] + [d["file"] for d in inputs + outputs]
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
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "deployment": dep.to_dict(),
        "runtime": runtime,
        "model_file": model_file,
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


def _fmt_j(j: float) -> str:
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)):
        if abs(j) >= scale:
            return f"{j / scale:.3g} {unit}"
    return f"{j:.3g} J"


def _model_card(m: dict[str, Any]) -> str:
    dep = m["deployment"]
    acc = m["accuracy"] or {}
    exp = m["expected"]
    hw = m["hardware"]
    lines = [
        f"# Model card: {acc.get('task') or 'model'} on {dep['backend']} / {dep['precision']}",
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
        lines.append(f"| accuracy ({acc.get('task') or 'task metric'}) | {acc['value']:.4f} |")
    else:
        lines.append("| accuracy | not evaluated |")
    if exp:
        unc = f"±{exp['energy_uncertainty']:.0%}"
        lines += [
            f"| energy per item | {_fmt_j(exp['energy_j_per_item'])} ({exp['energy_source']}, {unc}) |",
            f"| CO2e per million items | {exp['co2e_g_per_million_items']:.3g} g (grid {exp['grid_intensity_g_per_kwh']:.0f} g/kWh) |",
            f"| latency p50 / p90 per call | {exp['latency_ms_p50']:.3g} / {exp['latency_ms_p90']:.3g} ms |",
            f"| throughput | {exp['throughput_items_per_s']:.4g} items/s |",
            f"| measured at | batch {exp['batch_size']}, {exp['threads']} thread(s), {exp['device']} |",
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
        f"- backend `{dep['backend']}`, precision `{dep['precision']}`, batch {dep['batch_size']}, "
        f"threads {dep['threads'] or 'default'}, device `{dep['device']}`",
        f"- model file `{m['model_file']}` ({m['runtime']}); inputs "
        + ", ".join(f"{i['shape']} {i['dtype']}" for i in m["inputs"])
        + " (batch dimension first, any batch size)",
        f"- exported on: {', '.join(hw.get('cuda_devices') or []) or hw.get('cpu_model')} "
        f"({hw.get('cpus_allowed')} CPU cores allowed), torch {hw.get('torch')}, "
        f"onnxruntime {hw.get('onnxruntime')}",
        "",
        "## How it was made",
        "",
        m["how_made"] or "Not described.",
        "",
    ]
    if m["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in m["notes"]], ""]
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


# ------------------------------------------------------------------------------------- loading


def _bad(path: Path, why: str) -> InputError:
    return InputError(f"{path}: {why}")


def load_artifact(path: str | os.PathLike[str], *, device: str | None = None) -> LoadedArtifact:
    """Load a directory written by :func:`export_deployment`, without unpickling anything.

    Args:
        path: the directory.
        device: run on this device instead of the exported one (e.g. ``"cpu"`` for a CUDA
            artifact on a machine without a GPU).

    Returns:
        A :class:`LoadedArtifact` whose ``callable`` is prepared for the deployment (a compiled
        one compiles on its first call).

    Raises:
        InputError: a missing or invalid file, named in a one-line message.
        UnavailableError: the deployment's device or backend can't run here.
    """
    import numpy as np
    import torch

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory (an exported wattwise artifact is a directory)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise _bad(manifest_path, "missing; this is not an exported wattwise artifact")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(manifest_path, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _bad(manifest_path, "must hold a JSON object")
    if manifest.get("schema") != SCHEMA:
        raise _bad(
            manifest_path,
            f"schema {manifest.get('schema')!r} is not supported (this wattwise reads {SCHEMA})",
        )
    try:
        deployment = Deployment.from_dict(manifest["deployment"])
        model_file = str(manifest["model_file"])
        runtime = str(manifest["runtime"])
        inputs = list(manifest["inputs"])
        outputs = list(manifest.get("outputs") or [])
        files = dict(manifest.get("files") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(manifest_path, f"invalid or missing field: {exc}") from None
    if device is not None:
        deployment = dataclasses.replace(deployment, device=device)

    def checked(name: str) -> Path:
        if not isinstance(name, str) or Path(name).name != name:  # no paths out of the directory
            raise _bad(manifest_path, f"bad file name {name!r}")
        p = root / name
        if not p.is_file():
            raise _bad(p, "missing")
        want = (files.get(name) or {}).get("sha256")
        if want and _sha256(p) != want:
            raise _bad(p, "checksum differs from deployment.json (truncated or modified)")
        return p

    def array(entry: Any) -> Any:
        p = checked(entry["file"] if isinstance(entry, dict) else entry)
        try:
            return torch.from_numpy(np.load(p, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise _bad(p, f"not a readable .npy array ({exc})") from None

    model_path = checked(model_file)
    example = tuple(array(e) for e in inputs)
    expected = tuple(array(e) for e in outputs)
    if not example:
        raise _bad(manifest_path, "lists no inputs")

    if runtime == "onnxruntime":
        module = _load_onnx(model_path, deployment)
    elif runtime == "torch.export":
        program = _load_pt2(model_path)
        backend = BACKENDS.get(deployment.backend)()
        available = backend.probe(deployment.device)
        if not available:
            raise UnavailableError(
                f"backend {deployment.backend!r} can't run here: {available.reason}"
            )
        module = backend.prepare(
            program.module(), deployment, example_input=example, calibration=[]
        ).module
    else:
        raise _bad(manifest_path, f"unknown runtime {runtime!r}")
    return LoadedArtifact(
        callable=module,
        deployment=deployment,
        example_input=example[0] if len(example) == 1 else example,
        manifest=manifest,
        path=root,
        expected_outputs=expected,
    )


def _load_onnx(path: Path, deployment: Deployment) -> Any:
    import onnx

    from wattwise.deploy._runners import OrtModule

    data = path.read_bytes()
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:
        raise _bad(path, f"not a valid ONNX model ({type(exc).__name__}; truncated?)") from None
    if deployment.device.startswith("cuda"):
        from wattwise.measure import check_device

        check_device(deployment.device)
    module = OrtModule(data, threads=deployment.threads, device=deployment.device)
    try:
        _ = module.session
    except InputError as exc:
        raise _bad(path, str(exc)) from None
    return module


def _load_pt2(path: Path) -> Any:
    """Scan a ``.pt2`` archive for pickled payloads, then ``torch.export.load`` it."""
    import torch

    from wattwise.deploy._backends import register_quantized_ops

    uses_torchao = False
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.testzip() is not None:
                raise _bad(path, "a member of the archive is corrupt")
            for name in zf.namelist():
                if "/models/" in name and name.endswith(".json"):
                    uses_torchao = uses_torchao or b'"torchao.' in zf.read(name)
                # Weights and constants: refused if stored pickled (tensor subclasses, opaque
                # objects) — torch.export.load would unpickle them without weights_only.
                if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
                    config = json.loads(zf.read(name)).get("config", {})
                    for fqn, meta in config.items():
                        if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(
                            ("weight_", "tensor_")
                        ):
                            raise _bad(
                                path, f"{fqn} is stored as a pickled object; refusing to load it"
                            )
                # torch.save'd members (sample inputs, legacy weights) are read weights-only
                # first, with a full unpickle as fallback: make sure weights-only succeeds.
                if name.endswith(".pt"):
                    torch.load(io.BytesIO(zf.read(name)), weights_only=True)
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _bad(path, f"not a readable .pt2 archive ({exc}; truncated?)") from None
    except Exception as exc:
        raise _bad(
            path, f"refusing to load: {type(exc).__name__}: {str(exc).strip()[:200]}"
        ) from None
    register_quantized_ops(uses_torchao)
    try:
        with _quiet():
            return torch.export.load(path)
    except Exception as exc:
        raise _bad(
            path, f"torch.export.load failed ({type(exc).__name__}: {str(exc).strip()[:200]})"
        ) from None
