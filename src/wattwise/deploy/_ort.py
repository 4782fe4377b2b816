"""The ``onnxruntime`` backend: ONNX export, int8 quantization (static QDQ, or dynamic), and
the session.

Export uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs
onnxscript) and falls back to the TorchScript exporter when onnxscript is missing or the dynamo
export fails; the batch dimension is dynamic either way, so one model file serves every batch.

int8 is ONNX Runtime's static quantization in QDQ form: per-channel int8 weights, int8
activations whose ranges come from the ``calibration`` batches, after ONNX Runtime's
pre-processing (shape inference, graph clean-up). MinMax calibration is the default: on the
digits CNN (trained 5 epochs, validation accuracy 1.000 on 360 images, 256 calibration items)
MinMax, Entropy and Percentile all kept 1.000, and MinMax is deterministic and the fastest
(``tests/deploy/test_deploy_ort.py`` holds the 1-point bound for MinMax). Entropy and
Percentile are selectable through ``Deployment.calibration_method`` for models whose
activations have outliers.

Precision ``int8-dynamic`` quantizes activations at run time instead (Optimum's CPU
recipe for transformers, :func:`quantize_dynamic_int8`): no calibration data, and each call's
own ranges, which suits activations whose range changes with the sentence.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wattwise._core import Availability, first_line
from wattwise._inputs import take_rows
from wattwise.deploy._backends import is_pt2e_quantized
from wattwise.deploy._base import (
    BACKENDS,
    Backend,
    Batch,
    Prepared,
    cuda_probe,
    require_export_inputs,
)
from wattwise.deploy._program import quiet
from wattwise.errors import UnavailableError, WorkloadError

if TYPE_CHECKING:
    from wattwise.deploy._deployment import Deployment

OPSET = 18  # the dynamo exporter's native opset; QDQ per-channel needs >= 13


def export_onnx(model: Any, example_input: Batch) -> tuple[bytes, list[str]]:
    """Export ``model`` to ONNX bytes with a dynamic batch dimension on every input and output,
    and a dynamic sequence dimension on token inputs where the model allows it.

    Args:
        model: an ``nn.Module`` in eval mode, on CPU.
        example_input: a tuple of input tensors (any batch size; widened to 2 rows so the
            exporter can't specialise the batch dimension to 1).

    Returns:
        The serialised model and notes (e.g. which exporter was used).

    Raises:
        WorkloadError: neither exporter could export the model.
    """
    import torch

    args = take_rows(example_input, 2)
    input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    notes: list[str] = []
    errors: list[str] = []
    if importlib.util.find_spec("onnxscript") is not None:
        # Token inputs first with their sequence dimension dynamic too, so one model serves
        # every length a text task batches (its batches are padded to their longest item
        # only); a model that fixes its length is exported again with the batch alone dynamic.
        shapes = [_dynamic_dims(args, sequence=True), _dynamic_dims(args, sequence=False)]
        for dynamic_shapes in dict.fromkeys(shapes):  # once when there is no token input
            try:
                with quiet():
                    program = torch.onnx.export(
                        model,
                        args,
                        dynamo=True,
                        dynamic_shapes=_as_dims(model, dynamic_shapes),
                        input_names=input_names,
                        opset_version=OPSET,
                        optimize=True,
                        verbose=False,
                    )
                assert program is not None
                if dynamic_shapes != shapes[0]:
                    notes.append(
                        f"exported for sequence length {_lengths(args)} only: with it dynamic "
                        f"the export failed ({errors[-1]})"
                    )
                    errors.clear()
                return program.model_proto.SerializeToString(), notes
            except Exception as exc:
                errors.append(f"dynamo exporter: {type(exc).__name__}: {first_line(exc)}")
    else:
        errors.append("dynamo exporter: onnxscript is not installed")
    # The TorchScript exporter: deprecated, but it still covers models dynamo can't trace.
    buf = io.BytesIO()
    try:
        with quiet():
            torch.onnx.export(
                model,
                args,
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
                dynamo=False,
                input_names=input_names,
                output_names=["output"],
                dynamic_axes={name: {0: "batch"} for name in [*input_names, "output"]},
                opset_version=17,
            )
    except Exception as exc:
        errors.append(f"TorchScript exporter: {type(exc).__name__}: {first_line(exc)}")
        raise WorkloadError("cannot export the model to ONNX; " + "; ".join(errors)) from None
    notes.append("exported with the TorchScript exporter (" + "; ".join(errors) + ")")
    return buf.getvalue(), notes


def _dynamic_dims(args: Batch, *, sequence: bool) -> tuple[tuple[int, ...], ...]:
    """Each input's dynamic dimensions: the batch (dim 0) always; with ``sequence``, dim 1 of
    integer inputs of two or more dimensions too (token ids and their masks)."""
    return tuple(
        (0, 1)
        if sequence and t.dim() >= 2 and not t.is_floating_point() and not t.is_complex()
        else (0,)
        for t in args
    )


def _as_dims(model: Any, spec: tuple[tuple[int, ...], ...]) -> tuple[Any, ...]:
    """``spec`` as ``torch.export``'s ``dynamic_shapes`` for ``model``'s forward. ``Dim.DYNAMIC``
    lets the export find each size's range (BERT's positions stop at 512) and which inputs
    share one (ids and mask); a forward taking ``*args`` (a dict-input model behind
    :class:`~wattwise.deploy._named.ByPosition`) gets them as its one argument."""
    import inspect

    import torch

    dims = tuple({d: torch.export.Dim.DYNAMIC for d in each} for each in spec)
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return dims
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (dims,)
    return dims


def _lengths(args: Batch) -> str:
    return "/".join(
        str(int(t.shape[1])) for t in args if t.dim() >= 2 and not t.is_floating_point()
    )


def _prepared_files(tmp: str, onnx_bytes: bytes, notes: list[str]) -> tuple[str, str]:
    """Write the fp32 model into ``tmp`` and pre-process it for a quantizer; returns the path
    to quantize and the path the quantizer writes to. Shape inference and graph clean-up come
    first, as ONNX Runtime's docs advise: the quantizer needs every tensor's shape to choose
    per-channel axes and fuse Conv+Relu. A model they fail on is quantized as it is (noted)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = os.path.join(tmp, "fp32.onnx")
    pre = os.path.join(tmp, "pre.onnx")
    with open(fp32, "wb") as fh:
        fh.write(onnx_bytes)
    try:
        # In the temporary directory: when ONNX Runtime's symbolic shape inference fails (it
        # does on token models whose sequence length is dynamic) it leaves a model and its
        # weights (sym_shape_infer_temp.onnx, UUID.data: 90 MB for MiniLM) in the working
        # directory, which is the user's.
        with quiet(), contextlib.chdir(tmp):
            quant_pre_process(fp32, pre, skip_symbolic_shape=False)
    except Exception as exc:
        notes.append(
            f"quantization pre-processing skipped ({type(exc).__name__}: {first_line(exc)})"
        )
        return fp32, os.path.join(tmp, "int8.onnx")
    return pre, os.path.join(tmp, "int8.onnx")


def quantize_int8(
    onnx_bytes: bytes, calibration: list[Batch], *, method: str = "minmax"
) -> tuple[bytes, list[str]]:
    """Static QDQ int8 quantization of an fp32 ONNX model with ONNX Runtime's quantizer.

    Args:
        onnx_bytes: the fp32 model.
        calibration: input batches (tuples of tensors, in the model's input order).
        method: ``minmax``, ``entropy`` or ``percentile`` (99.999th) activation ranges.

    Returns:
        The quantized model and notes.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    graph_inputs = onnx.load_from_string(onnx_bytes).graph.input
    # Each input in the dtype the graph declares: token ids stay int64 (casting every input to
    # float32 failed every int8 trial of a token model with "expected tensor(int64)").
    dtypes = [
        onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph_inputs
    ]
    feeds = [
        {
            i.name: t.detach().cpu().numpy().astype(dtype, copy=False)
            for i, dtype, t in zip(graph_inputs, dtypes, batch, strict=True)
        }
        for batch in calibration
    ]

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    def run(source: str, out: str) -> None:
        quantize_static(
            source,
            out,
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"CalibPercentile": 99.999} if method == "percentile" else {},
        )

    return _quantized(onnx_bytes, run)


def _quantized(onnx_bytes: bytes, run: Callable[[str, str], None]) -> tuple[bytes, list[str]]:
    """``run(source, out)`` on the model's prepared file in a temporary directory, quietly;
    the quantized model's bytes and the preparation's notes."""
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wattwise-quant-") as tmp:
        source, out = _prepared_files(tmp, onnx_bytes, notes)
        with quiet():
            run(source, out)
        with open(out, "rb") as result:
            return result.read(), notes


def quantize_dynamic_int8(onnx_bytes: bytes) -> tuple[bytes, list[str]]:
    """Dynamic int8 quantization, the recipe Hugging Face Optimum applies for CPUs: int8
    weights (per output channel), and each activation quantized at run time from the range it
    has in that call (``DynamicQuantizeLinear`` feeding ``MatMulInteger``), so nothing is
    calibrated. Linear layers (``MatMul``/``Gemm``) and attention's matmuls are quantized; for
    transformers that is nearly all of the arithmetic.

    Returns:
        The quantized model and notes.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def run(source: str, out: str) -> None:
        quantize_dynamic(
            source,
            out,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )

    return _quantized(onnx_bytes, run)


@BACKENDS.register("onnxruntime")
class OrtBackend(Backend):
    """Export to ONNX and run with ONNX Runtime; int8 by static QDQ quantization, int8-dynamic
    by dynamic quantization."""

    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")
    torch_kernels = False

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                return Availability(
                    False, f"{module} is not installed (pip install 'wattwise[deploy]')"
                )
        cuda = cuda_probe(device)
        if cuda is not None and not cuda:
            return cuda
        import onnxruntime as ort

        if cuda is not None and "CUDAExecutionProvider" not in ort.get_available_providers():
            return Availability(
                False, "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
            )
        exporter = (
            "dynamo" if importlib.util.find_spec("onnxscript") else "TorchScript (no onnxscript)"
        )
        return Availability(True, f"onnxruntime {ort.__version__}, {exporter} exporter")

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        if is_pt2e_quantized(model):
            return "the model is a PT2E-quantized graph; pass the float model, onnxruntime quantizes it itself"
        if precision == "bf16":
            return "its CPU and CUDA providers lack bf16 kernels for most operators; use fp32 or int8 (CPU), fp16 (CUDA)"
        if precision == "fp16" and device == "cpu":
            return "its CPU provider lacks fp16 kernels for most operators; use fp32 or int8 on CPU, fp16 on CUDA"
        if precision == "int8" and device != "cpu":
            return "static QDQ int8 runs through its CPU kernels; on CUDA only TensorRT would make it pay"
        if precision == "int8-dynamic" and device != "cpu":
            return "its dynamic int8 kernels (MatMulInteger) are CPU kernels; use fp16 on CUDA"
        return super().unsupported(precision, device, model)

    def prepare(
        self, model: Any, deployment: Deployment, *, example_input: Batch, calibration: list[Batch]
    ) -> Prepared:
        from wattwise.deploy._runners import OrtModule

        require_export_inputs("onnxruntime", deployment, example_input, calibration)
        notes: list[str] = []
        if deployment.precision == "fp16":
            # Export a half copy (on CPU: export only traces, it runs nothing in fp16).
            model = model.half()
            example_input = tuple(t.half() if t.is_floating_point() else t for t in example_input)
        onnx_bytes, export_notes = export_onnx(model, example_input)
        notes.extend(export_notes)
        if deployment.precision == "int8-dynamic":
            onnx_bytes, quant_notes = quantize_dynamic_int8(onnx_bytes)
            notes.extend(quant_notes)
        elif deployment.precision == "int8":
            onnx_bytes, quant_notes = quantize_int8(
                onnx_bytes, calibration, method=deployment.calibration_method
            )
            notes.extend(quant_notes)
        module = OrtModule(onnx_bytes, threads=deployment.threads, device=deployment.device)
        try:
            _ = module.session  # fail here, with the reason, rather than on the first call
        except UnavailableError:
            raise
        return Prepared(module, onnx_bytes=onnx_bytes, notes=tuple(notes))
