"""The callables prepared deployments run as: :class:`TorchRunner` (eager, channels_last,
compile), :class:`OrtModule` (ONNX Runtime) and :class:`OvModule` (OpenVINO).

They live in their own module because they subclass ``nn.Module`` and so need torch at import;
the backend registry (``_base.py``), the backends and ``wattwise doctor`` stay importable
without it. All are ``nn.Module``s so task metrics (``model.eval()``, ``model(x)``) and the measuring
harness (``.to(device)``) treat them like any model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wattwise._core import first_line
from wattwise.deploy._base import BF16_FLOAT_LAYERS
from wattwise.errors import InputError, UnavailableError


class TorchCore(nn.Module):
    """The model, run under autocast when the precision asks for it (the part ``compile`` compiles).

    Args:
        model: the eager model (or PT2E graph), already on the device.
        autocast_dtype: ``torch.bfloat16``/``torch.float16``, or ``None`` for none.
        device_type: ``"cpu"`` or ``"cuda"``, for autocast.
    """

    def __init__(
        self, model: nn.Module, autocast_dtype: torch.dtype | None, device_type: str
    ) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.device_type = device_type

    def forward(self, *args: Any) -> Any:
        if self.autocast_dtype is None:
            return self.model(*args)
        with torch.autocast(self.device_type, dtype=self.autocast_dtype):
            return self.model(*args)

    def train(self, mode: bool = True) -> TorchCore:
        # A deployment is inference-only, and exported graphs refuse train()/eval().
        self.training = mode
        return self


class TorchRunner(nn.Module):
    """A prepared torch deployment: puts inputs on the device (in channels_last if asked) and
    runs the core, compiled or not, under ``inference_mode``.

    Args:
        core: a :class:`TorchCore`.
        device: where the model lives; inputs elsewhere are moved there.
        channels_last: convert 4-D inputs to channels_last (NHWC) memory format.
        compiled: ``torch.compile(core)`` for the ``compile`` backend.
        compile_config: inductor config set (scoped) while ``compiled`` compiles.
        clone_outputs: copy outputs (CUDA graphs reuse their output buffers on the next replay).
    """

    def __init__(
        self,
        core: TorchCore,
        *,
        device: str,
        channels_last: bool = False,
        compiled: Any = None,
        compile_config: dict[str, Any] | None = None,
        clone_outputs: bool = False,
    ) -> None:
        super().__init__()
        self.core = core
        self.compiled = compiled
        self.compile_config = dict(compile_config or {})
        self.device = device
        self.channels_last = channels_last
        self.clone_outputs = clone_outputs
        self._torch_device = torch.device(device)
        self._compiled_for: set[Any] = set()

    def _place(self, t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if t.device != self._torch_device and not (
            self._torch_device.type == "cuda" and self._torch_device.index is None and t.is_cuda
        ):
            t = t.to(self._torch_device)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def forward(self, *args: Any) -> Any:
        args = tuple(self._place(a) for a in args)
        with torch.inference_mode():
            if self.compiled is None:
                out = self.core(*args)
            elif self.compile_config:
                out = self._call_compiled(args)
            else:
                out = self.compiled(*args)
        if self.clone_outputs:
            out = torch.utils._pytree.tree_map(
                lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out
            )
        return out

    def _call_compiled(self, args: tuple[Any, ...]) -> Any:
        # Some inductor settings (freezing above all) are read outside the compiled callable's
        # own options, so they must be set globally while dynamo compiles: that is during the
        # first call of each input signature. Later calls skip the patch (~13 µs, a few percent
        # of a small model's call).
        signature = tuple(
            (tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else type(a)
            for a in args
        )
        if signature in self._compiled_for:
            return self.compiled(*args)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(**self.compile_config):
            out = self.compiled(*args)
        self._compiled_for.add(signature)
        return out

    def train(self, mode: bool = True) -> TorchRunner:
        self.training = mode
        return self


# ONNX element types (as InferenceSession reports them) → numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _rebuild_ort_module(
    onnx_bytes: bytes, threads: int | None, device: str, spinning: bool
) -> OrtModule:
    return OrtModule(onnx_bytes, threads=threads, device=device, spinning=spinning)


class _RuntimeModule(nn.Module):
    """A module whose work happens in another runtime's session: calling it skips
    ``nn.Module``'s hook dispatch unless a hook is registered (on it, or globally). That
    dispatch cost about 3 µs a call, a tenth of the digits CNN's whole int8 call at batch 1
    on ONNX Runtime (34 against 28 µs for the bare session, measured on a Xeon)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch.nn.modules import module as hooks

        if (
            self._forward_hooks
            or self._forward_pre_hooks
            or hooks._global_forward_hooks
            or hooks._global_forward_pre_hooks
        ):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)


class OrtModule(_RuntimeModule):
    """An ONNX Runtime InferenceSession behind an ``nn.Module`` interface.

    Takes and returns torch tensors (fp32 outputs for an fp16 model). Pickles as its ONNX bytes
    and settings and builds its session lazily on the first call, so
    ``wattwise.measure(OrtModule(...), x, isolate=True)`` can send it to a child process.

    Args:
        onnx_bytes: a serialised ONNX model.
        threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
        device: ``"cpu"``, or ``"cuda"``/``"cuda:N"`` (needs the CUDAExecutionProvider).
        spinning: let idle intra-op threads spin-wait for work. Off by default: spinning cuts
            latency a little when calls come back to back, but burns a core's power between
            calls, which is the energy this project exists to save.

    Example:
        >>> m = OrtModule(onnx_bytes, threads=2)
        >>> m(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        onnx_bytes: bytes,
        *,
        threads: int | None = None,
        device: str = "cpu",
        spinning: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(onnx_bytes, bytes | bytearray) or not onnx_bytes:
            raise InputError("OrtModule needs the ONNX model as non-empty bytes")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"OrtModule.threads must be None or an integer >= 1, got {threads!r}")
        self.onnx_bytes = bytes(onnx_bytes)
        self.threads = threads
        self.device = device
        self.spinning = spinning
        self._session: Any = None
        self._inputs: list[tuple[str, str]] = []
        self._outputs: list[str] = []
        # A one-input session on the CPU: its input's name and torch dtype, for the fast path.
        self._single: tuple[str, torch.dtype] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # The session (a C++ object) never travels; the bytes do and it is rebuilt on first use.
        return (_rebuild_ort_module, (self.onnx_bytes, self.threads, self.device, self.spinning))

    def extra_repr(self) -> str:
        return f"{len(self.onnx_bytes)} bytes, threads={self.threads}, device={self.device!r}"

    @property
    def session(self) -> Any:
        """The InferenceSession (built on first access)."""
        if self._session is None:
            self._session = self._build()
        return self._session

    def _build(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1  # one graph at a time: all parallelism is intra-op
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.spinning else "0"
        )
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UnavailableError(
                    "onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)"
                )
            index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(
                self.onnx_bytes, sess_options=options, providers=providers
            )
        except Exception as exc:
            first = first_line(exc, default=type(exc).__name__)
            raise InputError(f"onnxruntime cannot load the model: {first}") from None
        self._inputs = [(i.name, _ORT_TYPES.get(i.type, "float32")) for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]
        dtype = getattr(torch, self._inputs[0][1], None) if len(self._inputs) == 1 else None
        if not self.device.startswith("cuda") and isinstance(dtype, torch.dtype):
            self._single = (self._inputs[0][0], dtype)
        return session

    @property
    def input_names(self) -> list[str]:
        _ = self.session
        return [name for name, _ in self._inputs]

    def forward(self, *args: Any) -> Any:
        session = self.session
        single = self._single
        if single is not None and len(args) == 1:
            # The common call, a contiguous CPU tensor of the input's dtype, goes to the
            # session as a view: a batch-1 call of a small model is mostly this overhead.
            a = args[0]
            if (
                type(a) is torch.Tensor
                and a.dtype is single[1]
                and not a.requires_grad
                and a.device.type == "cpu"
                and a.is_contiguous()
            ):
                outs = session.run(self._outputs, {single[0]: a.numpy()})
                if len(outs) == 1:
                    return _from_numpy(outs[0])
                return tuple(_from_numpy(o) for o in outs)
        if len(args) != len(self._inputs):
            raise InputError(f"the ONNX model takes {len(self._inputs)} input(s), got {len(args)}")
        if self.device.startswith("cuda"):
            outs = self._run_cuda(session, args)
        else:
            feed = {
                name: _to_numpy(a, dtype)
                for (name, dtype), a in zip(self._inputs, args, strict=True)
            }
            outs = session.run(self._outputs, feed)
        tensors = [_from_numpy(o) for o in outs]
        if self.device.startswith("cuda"):
            tensors = [t.to(self.device) for t in tensors]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def _run_cuda(self, session: Any, args: tuple[Any, ...]) -> list[Any]:
        import numpy as np

        index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        binding = session.io_binding()
        keep = []  # the bound tensors must outlive the run
        for (name, dtype), a in zip(self._inputs, args, strict=True):
            t = a.to(f"cuda:{index}", dtype=getattr(torch, dtype)).contiguous()
            keep.append(t)
            binding.bind_input(name, "cuda", index, np.dtype(dtype), tuple(t.shape), t.data_ptr())
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        # Torch's stream must have finished writing the inputs before ORT's stream reads them.
        torch.cuda.current_stream(index).synchronize()
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def train(self, mode: bool = True) -> OrtModule:
        self.training = mode
        return self


def _rebuild_ov_module(
    xml: bytes, weights: bytes, threads: int | None, precision: str = "fp32"
) -> OvModule:
    return OvModule(xml, weights, threads=threads, precision=precision)


class OvModule(_RuntimeModule):
    """An OpenVINO compiled model behind an ``nn.Module`` interface (CPU).

    Takes and returns torch tensors. Pickles as its IR bytes and settings and compiles on first
    use, so ``wattwise.measure(OvModule(...), x, isolate=True)`` can send it to a child process.

    Args:
        xml: the IR's XML topology.
        weights: the IR's weights (``model.bin``).
        threads: inference threads (``None``: OpenVINO's default, one per physical core).
        precision: ``"bf16"`` and ``"int8-bf16"`` let the CPU plugin run floating-point
            layers in bf16 (on a CPU with AMX or AVX512-BF16); anything else pins them to fp32,
            int8 layers of a quantized IR still running in int8.

    Example:
        >>> m = OvModule(*ir_from_onnx(onnx_bytes), threads=2)  # ir_from_onnx: _openvino
        >>> m(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self, xml: bytes, weights: bytes, *, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        super().__init__()
        if not isinstance(xml, bytes | bytearray) or not xml:
            raise InputError("OvModule needs the IR's XML as non-empty bytes")
        if not isinstance(weights, bytes | bytearray):
            raise InputError("OvModule needs the IR's weights as bytes")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"OvModule.threads must be None or an integer >= 1, got {threads!r}")
        self.xml = bytes(xml)
        self.weights = bytes(weights)
        self.threads = threads
        self.precision = precision
        self._request: Any = None
        self._dtypes: list[Any] = []

    def __reduce__(self) -> tuple[Any, ...]:
        # The compiled model (a C++ object) never travels; the IR does.
        return (_rebuild_ov_module, (self.xml, self.weights, self.threads, self.precision))

    def extra_repr(self) -> str:
        size = len(self.xml) + len(self.weights)
        return f"{size} bytes of IR, threads={self.threads}, precision={self.precision}"

    @property
    def request(self) -> Any:
        """The infer request of the compiled model (compiled on first access)."""
        if self._request is None:
            self._request = self._build()
        return self._request

    def _build(self) -> Any:
        import numpy as np
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision in BF16_FLOAT_LAYERS else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            model = core.read_model(self.xml, ov.Tensor(np.frombuffer(self.weights, np.uint8)))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            first = first_line(exc, default=type(exc).__name__)
            raise InputError(f"OpenVINO cannot load the model: {first}") from None
        self._dtypes = [port.get_element_type().to_dtype() for port in compiled.inputs]
        return compiled.create_infer_request()

    @property
    def input_count(self) -> int:
        _ = self.request
        return len(self._dtypes)

    def forward(self, *args: Any) -> Any:
        request = self.request
        if len(args) != len(self._dtypes):
            raise InputError(
                f"the OpenVINO model takes {len(self._dtypes)} input(s), got {len(args)}"
            )
        feeds = [_to_numpy(a, dtype) for a, dtype in zip(args, self._dtypes, strict=True)]
        # share_outputs=False: the request's buffers are reused by the next call.
        results = request.infer(feeds, share_inputs=True, share_outputs=False)
        tensors = [torch.from_numpy(results[port]) for port in request.model_outputs]
        tensors = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def train(self, mode: bool = True) -> OvModule:
        self.training = mode
        return self


def _to_numpy(value: Any, dtype: str) -> Any:
    import numpy as np

    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        array = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    else:
        array = np.asarray(value)
    return np.ascontiguousarray(array, dtype=dtype)


def _from_numpy(array: Any) -> torch.Tensor:
    t = torch.from_numpy(array)
    # An fp16 ONNX model still answers in fp32, like every other deployment.
    return t.float() if t.dtype == torch.float16 else t
