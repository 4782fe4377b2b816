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


def _warm(fn: Callable[..., Any], example: Any, batch: int) -> None:
    """Two calls at ``batch``: one tensor, or (a text model's) a dict of named tensors."""

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t[:1].repeat(batch, *([1] * (t.dim() - 1))).contiguous()

    with torch.inference_mode():
        for _ in range(2):
            if isinstance(example, dict):
                fn(**{k: rows(v) for k, v in example.items()})
            else:
                fn(rows(example))


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


# --- text models (inputs: a dict of named tensors) ----------------------------------------------
#
# The recipes are bench_minilm.py's (Optimum's dynamic int8, OpenVINO's BERT recipe, torchao's
# dynamic int8): the same peers, here with threads and a warm call at the measured batch.


def _torchao_dynamic_child(model: nn.Module, example: Any, batch: int) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model.eval(), Int8DynamicActivationInt8WeightConfig())
    _warm(model, example, batch)
    return model


class _NamedOrt(nn.Module):
    """An ONNX Runtime session called by name, like the text model."""

    def __init__(
        self, onnx: bytes, names: tuple[str, ...], threads: int | None, example: Any, batch: int
    ) -> None:
        import onnxruntime as ort

        super().__init__()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = names
        _warm(self, example, batch)

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        feed = {i: x[n].numpy() for i, n in zip(self.inputs, self.names, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _NamedOv(nn.Module):
    """An OpenVINO model compiled for the CPU with its defaults, called by name."""

    def __init__(self, xml: str, threads: int | None, example: Any, batch: int) -> None:
        import openvino as ov

        super().__init__()
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        self.compiled = ov.Core().compile_model(xml, "CPU", config)
        _warm(self, example, batch)

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        out = self.compiled({k: v.numpy() for k, v in x.items()})
        return torch.from_numpy(out[self.compiled.output(0)].copy())


def torchao_dynamic_int8(model: nn.Module, task: Task) -> tuple[Built, Any]:
    """torchao's ``Int8DynamicActivationInt8WeightConfig`` on every Linear, run eagerly."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    scorer = copy.deepcopy(model).eval()
    quantize_(scorer, Int8DynamicActivationInt8WeightConfig())
    built = Built(
        _factory(_torchao_dynamic_child, model),
        state_dict_bytes(model) // 4,
        count_macs(model, task.example_input),
        "quantize_(Int8DynamicActivationInt8WeightConfig()) on every Linear, eager",
    )
    return built, scorer


def optimum_ort_dynamic_int8(model: nn.Module, task: Task) -> tuple[Built, Any]:
    """ONNX Runtime's ``quantize_dynamic`` as Optimum's ``AutoQuantizationConfig.avx2``."""
    from bench_minilm import _optimum_dynamic_int8

    data = _optimum_dynamic_int8(model, task.example_input)
    names = tuple(task.example_input)
    built = Built(
        _factory(_NamedOrt, data, names, threads=True),
        len(data),
        count_macs(model, task.example_input),
        "quantize_dynamic as AutoQuantizationConfig.avx2(is_static=False, per_channel=False)",
    )
    return built, functools.partial(_NamedOrt, data, names, None, task.example_input, 1)


def openvino_nncf_transformer_int8(
    model: nn.Module, task: Task, workdir: Path
) -> tuple[Built, Any]:
    """OpenVINO's BERT recipe: ``ov.convert_model``, NNCF's transformer scheme, CPU defaults."""
    from bench_minilm import _openvino_nncf_int8

    xml = _openvino_nncf_int8(task, copy.deepcopy(model).eval(), str(workdir))
    size = Path(xml).stat().st_size + Path(xml).with_suffix(".bin").stat().st_size
    built = Built(
        _factory(_NamedOv, xml, threads=True),
        size,
        count_macs(model, task.example_input),
        "ov.convert_model → nncf.quantize(model_type=TRANSFORMER, 256 sentences) → CPU",
    )
    return built, functools.partial(_NamedOv, xml, None, task.example_input, 1)


# --- generative models (measured generating: J per response, prefill and decode apart) ---------


def _warm_generation(model: Any, example: Any, batch: int, spec: Any) -> None:
    """A few whole responses at the measured batch, so compilation and autotuning never land
    in a measured window (the harness's own warm-up is shorter than inductor's first compile)."""
    from wattwise.measure._generate import generator_for, prompt_ids

    with torch.inference_mode():
        gen = generator_for(model, prompt_ids(example, batch, spec.prompt_tokens), spec)
        for _ in range(2):
            tokens = gen.prefill()
            for _ in range(spec.new_tokens - 1):
                tokens = gen.step(tokens)


def _generation_child(model: nn.Module, how: str, spec: Any, example: Any, batch: int) -> Any:
    model = model.eval()
    if how == "bf16":
        model = model.to(torch.bfloat16)
    elif how == "torchao int8 weight-only":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig())
    if how in ("compile", "torchao int8 weight-only"):
        model.compile()  # nn.Module.compile: forward keeps its signature (and the cache)
    _warm_generation(model, example, batch, spec)
    return model


def generation_peer(model: nn.Module, task: Task, how: str) -> tuple[Built, Any]:
    """A generative peer: ``fp32`` (the model as it is), ``compile`` (``model.compile()``,
    inductor defaults), ``bf16`` (``model.to(torch.bfloat16)``) or ``torchao int8
    weight-only`` (``quantize_(model, Int8WeightOnlyConfig())`` then compiled, as torchao's
    README pairs them); each keeps the model's own KV cache."""
    notes = {
        "fp32": "the trained model, eval mode, its static KV cache",
        "compile": "model.compile(), inductor defaults",
        "bf16": "model.to(torch.bfloat16)",
        "torchao int8 weight-only": "quantize_(Int8WeightOnlyConfig()) → model.compile()",
    }
    scorer = copy.deepcopy(model).eval()
    if how == "bf16":
        scorer = scorer.to(torch.bfloat16)
    elif how == "torchao int8 weight-only":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(scorer, Int8WeightOnlyConfig())
    size = state_dict_bytes(model)
    size = size // 2 if how == "bf16" else size // 4 if how.startswith("torchao") else size
    built = Built(
        _factory(_generation_child, model, how, task.generate),
        size,
        count_macs(model, task.example_input),
        notes[how],
    )
    return built, scorer


def _served_child(
    model: nn.Module, backend: str, precision: str, spec: Any, example: Any, batch: int
) -> Any:
    from wattwise.deploy import serve_for_generation

    served = serve_for_generation(model.eval(), backend, precision)
    _warm_generation(served.module, example, batch, spec)
    return served.module


def wattwise_generative(model: nn.Module, task: Task, backend: str, precision: str) -> Built:
    """The winner of a generative search, rebuilt: its model (the search's recipe, same seed)
    served as the search served it (``serve_for_generation``)."""
    return Built(
        _factory(_served_child, model, backend, precision, task.generate),
        state_dict_bytes(model),
        count_macs(model, task.example_input),
        f"wattwise optimize's winner: its recipe rebuilt, serve_for_generation({backend}, "
        f"{precision})",
    )


def default_threads() -> int:
    return len(os.sched_getaffinity(0))
