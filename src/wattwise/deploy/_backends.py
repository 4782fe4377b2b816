"""Deployment backends: how a model is prepared to run, registered by name in :data:`BACKENDS`.

``eager`` runs the module as is; ``eager_cl`` in channels_last memory format (what oneDNN and
cuDNN convolutions prefer); ``compile`` through ``torch.compile`` (inductor, with weight
freezing); ``onnxruntime`` (in ``_ort.py``) exports to ONNX and runs an InferenceSession.

Low precision on the torch backends is autocast (weights stay fp32, matmuls/convs run in
bf16/fp16), the form the project's anchors were measured with and the one that keeps
normalisation layers in fp32. ``int8`` on the torch backends means the model is already a PT2E
quantized graph (``wattwise.Quantize(method="pt2e-int8")``): eager runs its quantize/dequantize
ops as they are (a correctness reference, slow), ``compile`` lowers them to int8 oneDNN kernels,
which only happens with inductor's ``freezing`` on.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import io
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from wattwise._core import Availability
from wattwise._registry import Registry
from wattwise.deploy._deployment import (
    CHECK_MAX_CALIBRATION_ITEMS,
    Deployed,
    Deployment,
    DeploymentMismatch,
    compare_outputs,
)
from wattwise.errors import InputError, UnavailableError, WorkloadError

__all__ = [
    "BACKENDS",
    "Availability",
    "Backend",
    "Prepared",
    "is_pt2e_quantized",
    "probe_backends",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """What :meth:`Backend.prepare` returns: the callable, and the ONNX bytes if any."""

    module: Any
    onnx_bytes: bytes | None = None
    notes: tuple[str, ...] = ()


class Backend(abc.ABC):
    """One way to run a model. Subclasses register in :data:`BACKENDS`.

    Attributes:
        name: registry name.
        precisions: every precision the backend can run somewhere; :meth:`unsupported` says
            which of them it can't run for a given device and model.
    """

    name: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abc.abstractmethod
    def probe(cls, device: str = "cpu") -> Availability:
        """Whether this backend can run on ``device`` here, and if not, why (no side effects)."""

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        """Why this backend can't run ``precision`` on ``device`` (for ``model``), or ``None``."""
        if precision not in self.precisions:
            return f"it runs {', '.join(self.precisions)}"
        return None

    def precision_notes(self, precision: str, device: str) -> list[str]:
        """Caveats of a precision that runs but may not pay off here (e.g. emulated bf16)."""
        return _cpu_precision_notes(precision) if device == "cpu" else []

    @abc.abstractmethod
    def prepare(
        self,
        model: Any,
        deployment: Deployment,
        *,
        example_input: tuple[Any, ...],
        calibration: list[tuple[Any, ...]],
    ) -> Prepared:
        """Build the callable. ``model`` is a private CPU copy in eval mode; inputs are tuples."""


BACKENDS: Registry[type[Backend]] = Registry("backend")


def probe_backends(device: str = "cpu") -> dict[str, Availability]:
    """Every registered backend's availability on ``device`` (for ``wattwise doctor``)."""
    return {name: cls.probe(device) for name, cls in BACKENDS.items()}


# ----------------------------------------------------------------------------------- helpers


def is_pt2e_quantized(model: Any) -> bool:
    """Whether ``model`` holds a PT2E-quantized FX graph (quantize/dequantize ops in it)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return False
    for module in model.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                if node.op == "call_function" and getattr(node.target, "namespace", "") in (
                    "quantized_decomposed",
                    "torchao",
                ):
                    return True
    return False


def _set_eval(model: Any) -> None:
    """eval() that tolerates exported graphs, which refuse train()/eval() (they have no modes)."""
    import torch

    if isinstance(model, torch.nn.Module):
        with contextlib.suppress(NotImplementedError):
            model.eval()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_precision_notes(precision: str) -> list[str]:
    flags = _cpu_flags()
    if precision == "bf16" and not flags & {"avx512_bf16", "amx_bf16"}:
        return [
            "bf16 runs, but this CPU has no AVX512-BF16/AMX-BF16: it is emulated, expect it slower than fp32"
        ]
    if precision == "fp16" and not flags & {"avx512_fp16", "amx_fp16"}:
        return [
            "fp16 runs, but this CPU has no AVX512-FP16/AMX-FP16: it is emulated, expect it slower than fp32"
        ]
    return []


def _autocast_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _cuda_probe(device: str) -> Availability | None:
    """``None`` for a CPU device; else whether the CUDA device is usable."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return Availability(
            False, f"{device}: no CUDA GPU visible (torch.cuda.is_available() is False)"
        )
    return Availability(True, "")


# ----------------------------------------------------------------------------------- backends


def _torch_unsupported(precision: str, device: str, model: Any) -> str | None:
    """The precision rules the torch backends share (int8 means a PT2E graph, on CPU)."""
    quantized = is_pt2e_quantized(model)
    if precision == "int8" and not quantized:
        return (
            "int8 on the torch backends needs a model already quantized with "
            "wattwise.Quantize(method='pt2e-int8'); or use backend='onnxruntime', which quantizes itself"
        )
    if precision == "int8" and device != "cpu":
        return "PT2E int8 (X86 inductor quantizer) is a CPU path"
    if quantized and precision != "int8":
        return "the model is already PT2E int8-quantized; deploy it with precision='int8'"
    return None


@BACKENDS.register("eager")
class EagerBackend(Backend):
    """The module as it is, on the device; bf16/fp16 by autocast; int8 for PT2E graphs."""

    name = "eager"
    precisions = ("fp32", "bf16", "fp16", "int8")
    channels_last: ClassVar[bool] = False

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        cuda = _cuda_probe(device)
        return cuda if cuda is not None else Availability(True, "")

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        return super().unsupported(precision, device, model) or _torch_unsupported(
            precision, device, model
        )

    def prepare(
        self,
        model: Any,
        deployment: Deployment,
        *,
        example_input: tuple[Any, ...],
        calibration: list[tuple[Any, ...]],
    ) -> Prepared:
        import torch

        from wattwise.deploy._runners import TorchCore, TorchRunner

        model = model.to(deployment.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        core = TorchCore(
            model, _autocast_dtype(deployment.precision), _device_type(deployment.device)
        )
        return Prepared(
            TorchRunner(core, device=deployment.device, channels_last=self.channels_last)
        )


@BACKENDS.register("eager_cl")
class ChannelsLastBackend(EagerBackend):
    """Eager in channels_last (NHWC) memory format, for 4-D (image) inputs."""

    name = "eager_cl"
    channels_last = True


@BACKENDS.register("compile")
class CompileBackend(Backend):
    """``torch.compile`` with inductor, static shapes, weight freezing.

    On CPU, freezing (weights become constants: folded, pre-packed for oneDNN) is on for every
    precision, since a deployment never trains; it is what turns a PT2E int8 graph into int8
    kernels. On CUDA it adds CUDA graphs (``reduce-overhead``): at the small batches where
    deployment energy is spent, kernel-launch overhead is a large share of each call.
    """

    name = "compile"
    precisions = ("fp32", "bf16", "fp16", "int8")

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        cuda = _cuda_probe(device)
        if cuda is not None and not cuda:
            return cuda
        if cuda is not None:
            import importlib.util

            if importlib.util.find_spec("triton") is None:
                return Availability(
                    False, "torch.compile on CUDA needs triton, which is not installed"
                )
            return Availability(True, "")
        compiler = _cpp_compiler()
        if compiler is None:
            return Availability(
                False,
                "torch.compile on CPU needs a C++ compiler (g++ or clang++; set CXX), none found",
            )
        return Availability(True, f"C++ compiler: {compiler}")

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        return super().unsupported(precision, device, model) or _torch_unsupported(
            precision, device, model
        )

    def prepare(
        self,
        model: Any,
        deployment: Deployment,
        *,
        example_input: tuple[Any, ...],
        calibration: list[tuple[Any, ...]],
    ) -> Prepared:
        import torch
        import torch._inductor

        from wattwise.deploy._runners import TorchCore, TorchRunner

        device = deployment.device
        model = model.to(device)
        core = TorchCore(model, _autocast_dtype(deployment.precision), _device_type(device))
        # Freezing (weights become constants: folded and pre-packed for oneDNN; what lowers a
        # PT2E graph to int8 kernels) is read outside the compiled callable's own options, so
        # the runner sets it globally, scoped to the calls that compile. One compile thread:
        # a pool of worker processes (each importing torch) would compete with the measured
        # process for the cores while it warms up, for little gain on a deployment-sized graph.
        compile_config: dict[str, Any] = {"freezing": True, "compile_threads": 1}
        options: dict[str, Any] = {}
        cudagraphs = device.startswith("cuda")
        if cudagraphs:
            options.update(torch._inductor.list_mode_options("reduce-overhead"))
        # Static shapes: a deployment has one batch size, and static kernels are the fast ones.
        compiled = torch.compile(core, options=options or None, dynamic=False)
        notes = ("compiled lazily: the first call of each input shape compiles (seconds)",)
        return Prepared(
            TorchRunner(
                core,
                device=device,
                compiled=compiled,
                compile_config=compile_config,
                clone_outputs=cudagraphs,
            ),
            notes=notes,
        )


def _cpp_compiler() -> str | None:
    candidates = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    for name in candidates:
        if name and shutil.which(name):
            return name
    return None


# ------------------------------------------------------------------------- preparing + checking


def _as_tuple(value: Any, what: str) -> tuple[Any, ...]:
    import torch

    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InputError(f"{what} must be a tensor or a tuple of tensors")
    for t in items:
        if t.dim() < 1 or t.shape[0] < 1:
            raise InputError(f"{what} needs a batch dimension, got shape {tuple(t.shape)}")
    n = items[0].shape[0]
    if any(t.shape[0] != n for t in items):
        raise InputError(f"{what}: tensors disagree on the batch size")
    return tuple(t.detach().cpu() for t in items)


def _rows(batch: tuple[Any, ...], n: int) -> tuple[Any, ...]:
    """``n`` rows of ``batch``, cycling through its rows if it has fewer."""
    import torch

    have = batch[0].shape[0]
    index = torch.arange(n) % have
    return tuple(t[index].contiguous() for t in batch)


def check_batches(
    example: tuple[Any, ...], calibration: list[tuple[Any, ...]], batch_size: int
) -> list[tuple[Any, ...]]:
    """The batches a deployment is checked on, all of ``batch_size`` rows (static shapes):
    the example input, then up to :data:`CHECK_MAX_CALIBRATION_ITEMS` calibration items."""
    import torch

    batches = [_rows(example, batch_size)]
    if calibration:
        pool = tuple(torch.cat([b[i] for b in calibration]) for i in range(len(calibration[0])))
        total = min(pool[0].shape[0], max(CHECK_MAX_CALIBRATION_ITEMS, batch_size))
        if total >= batch_size:
            for start in range(0, total - batch_size + 1, batch_size):
                batches.append(tuple(t[start : start + batch_size] for t in pool))
        else:
            batches.append(_rows(pool, batch_size))
    return batches


def _run_batches(fn: Any, batches: list[tuple[Any, ...]]) -> list[Any]:
    import torch

    outs = []
    with torch.inference_mode():
        for batch in batches:
            out = fn(*batch)
            outs.append(torch.utils._pytree.tree_map(_to_cpu_float, out))
    return outs


def _to_cpu_float(t: Any) -> Any:
    import torch

    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return t.float() if t.is_floating_point() else t
    return t


def _private_copy(model: Any) -> Any:
    """A CPU copy in eval mode, so preparing (casts, memory format, device moves) never touches
    the caller's model."""
    try:
        copied = copy.deepcopy(model)
    except Exception as exc:
        raise InputError(
            f"cannot copy the model to prepare it ({type(exc).__name__}: {exc})"
        ) from None
    copied = copied.cpu()
    _set_eval(copied)
    return copied


def prepare_checked(
    model: Any,
    deployment: Deployment,
    *,
    example_input: Any,
    calibration: Sequence[Any] | None,
    check: bool = True,
) -> Deployed:
    """Prepare ``model`` for ``deployment`` and check it against eager fp32 (see :func:`deploy`)."""
    import torch

    from wattwise.measure import check_device

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be an nn.Module, got {type(model).__name__}")
    example = _as_tuple(example_input, "example_input")
    if calibration is not None and (
        isinstance(calibration, torch.Tensor) or not isinstance(calibration, Sequence)
    ):
        raise InputError(
            "calibration must be a list of input batches (tensors or tuples of tensors)"
        )
    calib = [_as_tuple(b, f"calibration[{i}]") for i, b in enumerate(calibration or [])]
    if calib and len({len(b) for b in calib} | {len(example)}) != 1:
        raise InputError("calibration batches must have as many tensors as example_input")

    backend = BACKENDS.get(deployment.backend)()
    check_device(deployment.device)  # UnavailableError with the reason for a missing GPU
    available = backend.probe(deployment.device)
    if not available:
        raise UnavailableError(f"backend {deployment.backend!r} can't run here: {available.reason}")
    why = backend.unsupported(deployment.precision, deployment.device, model)
    if why:
        raise InputError(
            f"backend {deployment.backend!r} can't run precision {deployment.precision!r} "
            f"on {deployment.device}: {why}"
        )
    notes = list(backend.precision_notes(deployment.precision, deployment.device))
    if deployment.backend == "eager_cl" and any(t.dim() != 4 for t in example):
        notes.append("channels_last applies to 4-D inputs only; other inputs run as they are")

    source = _private_copy(model)
    try:
        prepared = backend.prepare(
            _private_copy(source), deployment, example_input=example, calibration=calib
        )
    except (InputError, UnavailableError, WorkloadError):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkloadError(
            f"backend {deployment.backend!r} failed to prepare the model at {deployment.precision}: "
            f"{type(exc).__name__}: {first}"
        ) from None
    notes.extend(prepared.notes)

    result = None
    if check:
        batches = check_batches(example, calib, deployment.batch_size)
        try:
            reference = _run_batches(source, batches)
        except Exception as exc:
            raise WorkloadError(
                f"the eager fp32 model raised {type(exc).__name__}: {exc}"
            ) from None
        try:
            outputs = _run_batches(prepared.module, batches)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise WorkloadError(
                f"{deployment.label} raised {type(exc).__name__} on the check batches: {first}"
            ) from None
        result = compare_outputs(reference, outputs, deployment.precision)
        if not result.passed:
            raise DeploymentMismatch(
                f"{deployment.label} differs from eager fp32: {result.describe()}", result
            )
    return Deployed(
        module=prepared.module,
        deployment=deployment,
        check=result,
        example_input=example[0][:1] if len(example) == 1 else tuple(t[:1] for t in example),
        source_model=source,
        onnx_bytes=prepared.onnx_bytes,
        notes=tuple(notes),
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print progress, deprecation notes and, when they fail, whole graphs; a library
    call should not (failures still raise, and we report them in one line)."""
    import logging

    names = (
        "torch.onnx",
        "onnxscript",
        "torch.export",
        "torch._dynamo",
        "torch.fx.experimental.symbolic_shapes",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


# ------------------------------------------------------------------------ rebuilding in a child


def register_quantized_ops(uses_torchao: bool = False) -> None:
    """Register the operator namespaces a PT2E graph refers to, before deserialising one.

    ``quantized_decomposed`` ops are defined by a torch module that only quantization code
    imports; a fresh process loading a saved int8 program must import it first.
    """
    with contextlib.suppress(ImportError):
        import torch.ao.quantization.fx._decomposed  # noqa: F401
    if uses_torchao:
        with contextlib.suppress(ImportError):
            import torchao.quantization  # noqa: F401


class _Rebuild:
    """Picklable zero-argument factory: prepares a torch deployment again in another process.

    Sends the eager model pickled when it pickles, else (PT2E graphs hold local closures that
    don't) as ``torch.export`` bytes with a dynamic batch dimension.
    """

    def __init__(self, deployed: Deployed) -> None:
        self.deployment = deployed.deployment
        self.model_pickle: bytes | None = None
        self.model_pt2: bytes | None = None
        try:
            self.model_pickle = pickle.dumps(deployed.source_model)
        except Exception:
            self.model_pt2 = export_program_bytes(deployed.source_model, deployed.example_input)

    def __call__(self) -> Any:
        import torch

        if self.model_pickle is not None:
            model = pickle.loads(self.model_pickle)  # our own bytes, made in the parent
        else:
            assert self.model_pt2 is not None
            register_quantized_ops(b"torchao" in self.model_pt2)
            model = torch.export.load(io.BytesIO(self.model_pt2)).module()
        backend = BACKENDS.get(self.deployment.backend)()
        return backend.prepare(model, self.deployment, example_input=(), calibration=[]).module


def rebuild_factory(deployed: Deployed) -> Any:
    if deployed.deployment.backend == "onnxruntime":
        return deployed.module  # OrtModule pickles as its ONNX bytes
    return _Rebuild(deployed)


def export_program(model: Any, example_input: Any) -> Any:
    """``torch.export`` ``model`` with a dynamic batch dimension on every input.

    The example is widened to 2 rows because ``torch.export`` specialises a dimension of size 1.
    """
    import torch

    example = _as_tuple(example_input, "example_input")
    args = _rows(example, 2)
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in args)
    with _quiet():
        return torch.export.export(model, args, dynamic_shapes=shapes)


def export_program_bytes(model: Any, example_input: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.export.save(export_program(model, example_input), buf)
    return buf.getvalue()
