"""The ``openvino`` backend: OpenVINO's CPU runtime at fp32, and at int8 through NNCF's
post-training quantization.

The model reaches OpenVINO through OpenVINO's own PyTorch frontend (``ov.convert_model``, a
dynamic batch dimension, and a dynamic sequence dimension for token inputs), or, where that
fails, through our ONNX export (:func:`~wattwise.deploy._ort.export_onnx`), which OpenVINO's
ONNX frontend reads from memory (:func:`to_openvino` says why the frontend comes first). int8
is ``nncf.quantize`` on that OpenVINO model with the deployment's calibration batches, dtypes
kept (token ids stay int64).

NNCF has two schemes, and neither is right for every model. Its transformer scheme
(``ModelType.TRANSFORMER``: SmoothQuant, and the operations that lose accuracy in int8 kept in
floating point) is the recipe OpenVINO documents for BERT-like models: on all-MiniLM-L6-v2 it
kept a mean cosine of 0.996 to fp32, where the default scheme fell to 0.22. On a small
``nn.TransformerEncoder`` a user wrote (two layers, width 32) it was the other way round: 0.54
with the transformer scheme, 0.990 with the default one. So the likely scheme (transformer for
token inputs, default otherwise) is tried first, its outputs on the calibration batches are
compared with the float model's, and only if they miss the int8 bound is the other scheme
tried too; the closer of the two is kept, and a note says which.

The prepared model is held as OpenVINO IR (``model.xml`` and ``model.bin``, written without
fp16 compression of the weights), which is what an exported artifact stores and what a child
process rebuilds the runner from.

Precision: OpenVINO's CPU plugin runs in bf16 by default on CPUs with AMX or AVX512-BF16.
``fp32`` here means fp32, so it is compiled with ``INFERENCE_PRECISION_HINT=f32``; ``bf16`` asks
for bf16 (offered only on a CPU with those instructions: elsewhere the plugin would quietly run
fp32); int8 layers run in int8 and the rest in fp32 (on a Xeon with AMX, a ResNet-style
network's int8 IR cost the same with the bf16 hint: 280 against 278 µJ/item at batch 64, while
its fp32 IR cost 4.9x as much as bf16: 1.71 mJ against 352 µJ; estimated:cpu-ccf ±40%, three
rotating rounds side by side, medians). One stream, the ``LATENCY`` hint: the harness makes one call at a
time, the way the other backends are measured.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wattwise._core import Availability, first_line
from wattwise.deploy._backends import is_pt2e_quantized
from wattwise.deploy._base import (
    BACKENDS,
    BF16_FLOAT_LAYERS,
    CALIBRATED_INT8,
    Backend,
    Batch,
    Prepared,
    native_bf16,
    require_export_inputs,
)
from wattwise.deploy._program import quiet
from wattwise.errors import WorkloadError

if TYPE_CHECKING:
    from wattwise.deploy._deployment import Deployment

__all__ = ["OpenVinoBackend", "ir_from_onnx", "quantize_nncf", "to_openvino"]


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs warnings and draws progress bars on its own logger; a library call should
    not print (failures still raise)."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with quiet():
            yield
    finally:
        logger.setLevel(level)


def _read_onnx(onnx_bytes: bytes) -> Any:
    import numpy as np
    import openvino as ov

    try:
        return ov.Core().read_model(onnx_bytes, ov.Tensor(np.empty(0, dtype=np.uint8)))
    except Exception as exc:
        raise WorkloadError(
            f"OpenVINO cannot read the exported ONNX model: {first_line(exc, default=type(exc).__name__)}"
        ) from None


def _ir_bytes(model: Any) -> tuple[bytes, bytes]:
    """``model`` as OpenVINO IR: the XML topology and the weights, fp32 weights kept fp32."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="wattwise-ov-") as tmp:
        xml = os.path.join(tmp, "model.xml")
        ov.save_model(model, xml, compress_to_fp16=False)
        with open(xml, "rb") as fh:
            topology = fh.read()
        with open(os.path.join(tmp, "model.bin"), "rb") as fh:
            weights = fh.read()
    return topology, weights


def ir_from_onnx(onnx_bytes: bytes) -> tuple[bytes, bytes]:
    """An fp32 ONNX model converted to OpenVINO IR (XML and weights)."""
    return _ir_bytes(_read_onnx(onnx_bytes))


def to_openvino(model: Any, example_input: Batch) -> tuple[Any, list[str]]:
    """``model`` as an OpenVINO model: through OpenVINO's PyTorch frontend (``ov.convert_model``),
    with the batch dimension dynamic, and the sequence dimension of token inputs too; through
    our ONNX export (:func:`~wattwise.deploy._ort.export_onnx`) when the frontend fails.

    The frontend first: on MobileNetV3-Small (digits at 32×32) the ONNX route left 167
    ``ShapeOf`` and 52 ``Subtract``/``Broadcast`` operations of the exporter's shape arithmetic
    in the graph, where NNCF could not fold them, and its int8 IR cost 3.3x the frontend's
    (629 against 193 µJ/item at batch 256 on one thread, three rounds side by side,
    estimated:cpu-ccf), at 0.9778 against 0.9722 accuracy (0.9806 in fp32).

    Returns:
        The model (an ``openvino.Model``) and notes (how it was converted, when not by the
        frontend).

    Raises:
        WorkloadError: neither route could convert the model.
    """
    import openvino as ov

    from wattwise._inputs import take_rows
    from wattwise.deploy._ort import _dynamic_dims, export_onnx

    args = take_rows(example_input, 2)
    shapes = [
        ov.PartialShape([-1 if d in dynamic else n for d, n in enumerate(t.shape)])
        for t, dynamic in zip(args, _dynamic_dims(args, sequence=True), strict=True)
    ]
    try:
        with quiet():
            return ov.convert_model(model, example_input=args, input=shapes), []
    except Exception as exc:
        why = f"{type(exc).__name__}: {first_line(exc, default='no message')}"
    onnx_bytes, notes = export_onnx(model, example_input)
    return _read_onnx(onnx_bytes), [
        f"converted through ONNX: OpenVINO's PyTorch frontend failed ({why})",
        *notes,
    ]


def quantize_nncf(
    source: bytes | Any, calibration: list[Batch], *, transformer: bool
) -> tuple[bytes, bytes]:
    """NNCF post-training int8 quantization of an fp32 model, as OpenVINO IR.

    Args:
        source: the fp32 model, as ONNX bytes or an ``openvino.Model`` (left unchanged).
        calibration: input batches (tuples of tensors in the model's input order); every item
            is used.
        transformer: use NNCF's transformer scheme (see the module docstring).

    Returns:
        The quantized model's XML and weights.

    Raises:
        WorkloadError: NNCF failed, in one line naming it.
    """
    import nncf

    from wattwise.deploy._runners import _to_numpy

    model = _read_onnx(bytes(source)) if isinstance(source, bytes | bytearray) else source.clone()
    dtypes = [port.get_element_type().to_dtype() for port in model.inputs]
    feeds = [
        [_to_numpy(t, dtype) for t, dtype in zip(batch, dtypes, strict=True)]
        for batch in calibration
    ]
    try:
        with _quiet_nncf():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                subset_size=len(feeds),
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            )
    except Exception as exc:
        raise WorkloadError(
            f"NNCF could not quantize the model: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    return _ir_bytes(quantized)


_NO_NNCF = "its int8 needs NNCF, which is not installed (pip install 'wattwise[deploy]')"
_NO_BF16 = (
    "its bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (this one has neither: the plugin would "
    "run fp32)"
)


def _is_token_batch(batch: Batch) -> bool:
    return any(not t.is_floating_point() and t.dim() >= 2 for t in batch)


@BACKENDS.register("openvino")
class OpenVinoBackend(Backend):
    """OpenVINO's CPU runtime: fp32, bf16 (on a CPU with native bf16), and int8 by NNCF
    post-training quantization, its floating-point layers in fp32 (``int8``) or in bf16
    (``int8-bf16``, on a CPU with native bf16)."""

    name = "openvino"
    precisions = ("fp32", "bf16", "int8", "int8-bf16")
    torch_kernels = False

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        if device != "cpu":
            return Availability(
                False,
                "wattwise runs OpenVINO on its CPU plugin only (its GPU plugin is for Intel GPUs)",
            )
        for module, extra in (("openvino", "deploy"), ("onnx", "deploy")):
            if importlib.util.find_spec(module) is None:
                return Availability(
                    False, f"{module} is not installed (pip install 'wattwise[{extra}]')"
                )
        if importlib.util.find_spec("onnxscript") is None:
            exporter = "TorchScript (no onnxscript)"
        else:
            exporter = "dynamo"
        from importlib import metadata

        nncf = (
            "NNCF " + metadata.version("nncf")
            if importlib.util.find_spec("nncf") is not None
            else "no NNCF (int8 unavailable)"
        )
        return Availability(
            True, f"openvino {metadata.version('openvino')}, {nncf}, {exporter} exporter"
        )

    @classmethod
    def probe_precision(cls, precision: str, device: str = "cpu") -> Availability:
        if precision in CALIBRATED_INT8 and importlib.util.find_spec("nncf") is None:
            return Availability(False, _NO_NNCF)
        if precision in BF16_FLOAT_LAYERS and device == "cpu" and not native_bf16():
            return Availability(False, _NO_BF16)
        return cls.probe(device)

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        if is_pt2e_quantized(model):
            return "the model is a PT2E-quantized graph; pass the float model, NNCF quantizes it itself"
        if precision in CALIBRATED_INT8 and importlib.util.find_spec("nncf") is None:
            return _NO_NNCF
        if precision in BF16_FLOAT_LAYERS and not native_bf16():
            return _NO_BF16
        return super().unsupported(precision, device, model)

    def prepare(
        self, model: Any, deployment: Deployment, *, example_input: Batch, calibration: list[Batch]
    ) -> Prepared:
        from wattwise.deploy._check import check_batches
        from wattwise.deploy._ort import export_onnx
        from wattwise.deploy._runners import OvModule

        require_export_inputs("openvino", deployment, example_input, calibration)
        ov_model, notes = to_openvino(model, example_input)
        if deployment.precision in CALIBRATED_INT8:
            routes: list[tuple[str, Callable[[], Any]]] = [
                ("frontend" if not notes else "onnx", lambda: ov_model)
            ]
            if not notes:  # the frontend converted it: the ONNX route is the fallback
                routes.append(("onnx", lambda: _read_onnx(export_onnx(model, example_input)[0])))
            (xml, weights), note = _closer_scheme(
                model,
                routes,
                calibration,
                check_batches(example_input, calibration, deployment.batch_size),
                transformer_first=_is_token_batch(example_input),
                precision=deployment.precision,
            )
            notes.append(note)
        else:
            xml, weights = _ir_bytes(ov_model)
        module = OvModule(xml, weights, threads=deployment.threads, precision=deployment.precision)
        _ = module.request  # fail here, with the reason, rather than on the first call
        return Prepared(module, ir_bytes=(xml, weights), notes=tuple(notes))


def _closer_scheme(
    model: Any,
    routes: list[tuple[str, Callable[[], Any]]],
    calibration: list[Batch],
    judged_on: list[Batch],
    *,
    transformer_first: bool,
    precision: str = "int8",
) -> tuple[tuple[bytes, bytes], str]:
    """NNCF int8 with the likely scheme, and with the other one too if the first misses the
    int8 bound on ``judged_on``; the IR whose outputs are closer to ``model``'s, and a note
    saying which scheme it is and how close. ``routes`` are the fp32 OpenVINO models to
    quantize, by how they were converted, each built only if the ones before it missed the
    bound under both schemes: the PyTorch frontend's graph is the cheaper one where it holds
    (MobileNetV3-Small, :func:`to_openvino`), but a user's small depthwise CNN (BatchNorm and
    Hardswish after each convolution) kept a mean cosine of 0.958 to fp32 through it and 0.999
    through the ONNX route.

    ``judged_on`` are the deployment's own check batches, at its batch size: OpenVINO's CPU
    int8 kernels change with the batch, and one IR measured 0.99 mean cosine at batch 32 and
    0.49 at batch 64 (a 2-layer encoder, transformer scheme). Judged at batch 32 it was kept,
    and the deployment then failed its check.
    """
    from wattwise.deploy._check import INT8_MIN_COSINE, DeploymentMismatch, compare_outputs
    from wattwise.deploy._inputs import run_batches
    from wattwise.deploy._runners import OvModule

    reference = run_batches(model, judged_on)
    tried: list[tuple[float, str, tuple[bytes, bytes]]] = []
    for route, source in routes:
        ov_model = source()
        for transformer in (transformer_first, not transformer_first):
            name = f"{'transformer' if transformer else 'default'} scheme ({route} graph)"
            ir = quantize_nncf(ov_model, calibration, transformer=transformer)
            try:
                got = run_batches(OvModule(*ir, precision=precision), judged_on)
                result = compare_outputs(reference, got, precision)
            except DeploymentMismatch:  # outputs that are not finite: the worst possible
                tried.append((float("-inf"), name, ir))
                continue
            tried.append((result.value, name, ir))
            if result.passed:
                break
        if tried[-1][0] >= INT8_MIN_COSINE:
            break
    value, name, ir = max(tried, key=lambda t: t[0])
    others = "; ".join(f"{n} {v:.3f}" for v, n, _ in tried if n != name)
    note = f"NNCF {name}: mean cosine {value:.3f} to fp32 on the check batches"
    return ir, note + (f" ({others})" if others else "")
