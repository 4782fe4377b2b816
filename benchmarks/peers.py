"""The single techniques a user would reach for instead of wattwise, each built with its own
library's public API as that library documents it, and run in a measuring child process.

Every builder takes the trained fp32 model and the task and returns a :class:`Built`: a
picklable zero-argument factory that rebuilds the runnable model inside the child (so the
harness measures it in isolation), its size on disk, its MACs per item and a note. The
factories compile or load and then run a warm call at the batch size they will be measured
at, so compilation never lands in a measured window.

Kept separate from ``bench_peers.py`` (the protocol) so each peer's recipe reads on its own.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wattwise.passes._model import count_macs, state_dict_bytes
from wattwise.tasks import Task


@dataclasses.dataclass
class Built:
    """One peer, ready to measure: ``make(example, batch_size, threads)`` gives the zero-arg
    factory the harness calls in its child process."""

    make: Callable[[torch.Tensor, int, int | None], Callable[[], Any]]
    size_bytes: int
    macs_per_item: float
    note: str


def _warm(fn: Callable[[torch.Tensor], Any], example: torch.Tensor, batch: int) -> None:
    x = example[:1].repeat(batch, *([1] * (example.dim() - 1))).contiguous()
    with torch.inference_mode():
        fn(x)
        fn(x)


# --- children: these run inside the measuring process ---------------------------------------


def _eager_child(model: nn.Module, example: torch.Tensor, batch: int) -> nn.Module:
    model.eval()
    _warm(model, example, batch)
    return model


def _compile_child(model: nn.Module, example: torch.Tensor, batch: int) -> Any:
    # torch.compile's documented default: inductor, no freezing, static shapes after warm-up.
    compiled = torch.compile(model.eval())
    _warm(compiled, example, batch)
    return compiled


def _torchao_child(pt2: bytes, example: torch.Tensor, batch: int) -> Any:
    import io

    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers the q/dq ops)

    # torchao's X86 inductor tutorial: freezing on, so the q/dq pairs fuse into int8 kernels.
    inductor_config.freezing = True
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    module = torch.export.load(io.BytesIO(pt2)).module()
    allow_exported_model_train_eval(module)  # the harness calls .eval()
    compiled = torch.compile(module)
    _warm(compiled, example, batch)
    return compiled


class _OrtRunner:
    """An ONNX Runtime session called like a model (torch tensor in, torch tensor out)."""

    def __init__(self, onnx: bytes, threads: int | None, example: torch.Tensor, batch: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        _warm(self, example, batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.name: x.numpy()})[0])


class _OpenVinoRunner:
    """An OpenVINO compiled model on the CPU plugin, called like a model."""

    def __init__(self, xml: str, threads: int | None, example: torch.Tensor, batch: int):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        self.compiled = ov.Core().compile_model(xml, "CPU", config)
        _warm(self, example, batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.compiled(x.numpy())[0].copy())


def _artifact_child(path: str, example: torch.Tensor, batch: int) -> Any:
    from wattwise.deploy import load_artifact

    loaded = load_artifact(path)
    _warm(loaded.callable, example, batch)
    return loaded.callable


# --- builders: run in the benchmark process ------------------------------------------------


def _factory(child: Callable[..., Any], *args: Any, threads: bool = False) -> Any:
    """``make(batch, threads)`` for a child builder taking ``(*args, [threads], example, batch)``."""

    def make(example: torch.Tensor, batch: int, n_threads: int | None) -> Callable[[], Any]:
        extra = (n_threads,) if threads else ()
        return functools.partial(child, *args, *extra, example, batch)

    return make


def fp32_eager(model: nn.Module, task: Task) -> Built:
    return Built(
        _factory(_eager_child, model),
        state_dict_bytes(model),
        count_macs(model, task.example_input),
        "the trained model, eval mode",
    )


def compile_fp32(model: nn.Module, task: Task) -> Built:
    return Built(
        _factory(_compile_child, model),
        state_dict_bytes(model),
        count_macs(model, task.example_input),
        "torch.compile(model), inductor defaults",
    )


def torchao_int8(model: nn.Module, task: Task) -> tuple[Built, Any]:
    """torchao PT2E static int8 with the X86 inductor quantizer's default config, compiled."""
    import io

    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    calib = task.calibration_batches()
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(
        copy.deepcopy(model).eval(), (calib[0],), dynamic_shapes=({0: batch},)
    ).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for x in calib:
            prepared(x)
    converted = convert_pt2e(prepared)
    buf = io.BytesIO()
    torch.export.save(
        torch.export.export(converted, (calib[0],), dynamic_shapes=({0: batch},)), buf
    )
    pt2 = buf.getvalue()
    allow_exported_model_train_eval(converted)  # so the task's metric may call .eval()
    built = Built(
        _factory(_torchao_child, pt2),
        len(pt2),
        count_macs(model, task.example_input),
        "export → prepare_pt2e(X86InductorQuantizer default) → calibrate → convert_pt2e → "
        "torch.compile with freezing",
    )
    return built, converted


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over the task's calibration batches."""

    def __init__(self, name: str, batches: list[torch.Tensor]):
        self._items = iter([{name: b.numpy()} for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._items, None)


def ort_int8(model: nn.Module, task: Task) -> tuple[Built, Any]:
    """ONNX Runtime static QDQ int8: ``quant_pre_process`` then ``quantize_static`` with its
    defaults (MinMax calibration, per-tensor QInt8), as its quantization guide shows."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from wattwise.deploy._ort import export_onnx

    onnx_fp32, _ = export_onnx(copy.deepcopy(model).eval(), (task.example_input,))
    input_name = onnx.load_from_string(onnx_fp32).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_fp32)
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Calibration(input_name, task.calibration_batches()),
            quant_format=QuantFormat.QDQ,
        )
        onnx.checker.check_model(str(dst))
        data = dst.read_bytes()
    built = Built(
        _factory(_OrtRunner, data, threads=True),
        len(data),
        count_macs(model, task.example_input),
        "quant_pre_process → quantize_static(QDQ, MinMax, per-tensor QInt8) → InferenceSession",
    )
    return built, functools.partial(_OrtRunner, data, None, task.example_input, 1)


def nncf_int8(model: nn.Module, task: Task, workdir: Path) -> tuple[Built, Any]:
    """NNCF post-training quantization of the OpenVINO model (NNCF's documented flow:
    ``ov.convert_model`` → ``nncf.quantize`` with a calibration ``nncf.Dataset``) on the
    OpenVINO CPU runtime, which is what NNCF quantizes for."""
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(copy.deepcopy(model).eval(), example_input=task.example_input)
    calib = [b[i : i + 1] for b in task.calibration_batches() for i in range(len(b))]
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(calib, lambda x: x.numpy()),
        subset_size=len(calib),
    )
    xml = workdir / "nncf_int8.xml"
    ov.save_model(quantized, str(xml))
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    built = Built(
        _factory(_OpenVinoRunner, str(xml), threads=True),
        size,
        count_macs(model, task.example_input),
        "ov.convert_model → nncf.quantize (defaults, all calibration items) → OpenVINO CPU",
    )
    return built, functools.partial(_OpenVinoRunner, str(xml), None, task.example_input, 1)


def torch_pruning_50(model: nn.Module, task: Task, epochs: int) -> tuple[Built, nn.Module]:
    """Torch-Pruning's README recipe: group L2-magnitude importance, 50% of channels per layer,
    the classifier ignored, one step; then fine-tuning with the task's recipe."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    last = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.BasePruner(
        pruned,
        task.example_input,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=last,
    )
    pruner.step()
    if epochs > 0:
        task.fit(pruned, epochs=epochs, seed=task.seed)
    pruned.eval()
    built = Built(
        _factory(_eager_child, pruned),
        state_dict_bytes(pruned),
        count_macs(pruned, task.example_input),
        f"BasePruner(GroupMagnitudeImportance(p=2), pruning_ratio=0.5) → fine-tune {epochs} "
        "epoch(s) → eager fp32",
    )
    return built, pruned


def wattwise_artifact(path: Path, macs: float) -> Built:
    weights = sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and "example" not in f.name
    )
    return Built(
        _factory(_artifact_child, str(path)),
        weights,
        macs,
        "wattwise optimize's exported artifact, loaded with load_artifact",
    )


def default_threads() -> int:
    return len(os.sched_getaffinity(0))
