"""Preparing a deployment: :func:`deploy` / :func:`deploy_with` make a :class:`Deployed`, a
model prepared by its backend and checked against eager fp32.

:func:`deploy_with` runs the steps, each a function of its own: check the inputs
(:func:`checked_inputs`), pick the backend and check it can run the deployment here
(:func:`backend_for`), prepare a private copy (:func:`prepare_copy`), and compare it with eager
fp32 on the check batches (:func:`check_against_eager`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wattwise._core import first_line
from wattwise._inputs import check_input
from wattwise.deploy._base import Backend, Batch, Prepared, ready_backend
from wattwise.deploy._check import CheckResult, DeploymentMismatch, check_batches, compare_outputs
from wattwise.deploy._deployment import Deployment
from wattwise.deploy._inputs import as_batch, run_batches
from wattwise.deploy._rebuild import Rebuild
from wattwise.errors import InputError, UnavailableError, WorkloadError

if TYPE_CHECKING:
    from wattwise.measure import Measurement

__all__ = ["Deployed", "deploy", "deploy_with"]


@dataclasses.dataclass(frozen=True, eq=False)
class Deployed:
    """A model prepared for one :class:`Deployment`, checked against eager fp32.

    Call it like the model. To measure it, hand :meth:`factory` (picklable) to
    :func:`wattwise.measure`, or call :meth:`measure`.

    Attributes:
        module: the prepared callable (an ``nn.Module``; for ``onnxruntime`` an :class:`OrtModule`,
            for ``openvino`` an :class:`~wattwise.deploy._openvino.OvModule`).
        deployment: what was prepared.
        check: the equivalence check's numbers (``None`` only if the check was skipped).
        example_input: the batch-of-one example the deployment was prepared with (on CPU).
        source_model: the eager model it was made from (a private copy, on CPU), for export.
        onnx_bytes: the ONNX model the ``onnxruntime`` backend runs (quantized for int8).
        ir_bytes: the OpenVINO IR (XML, weights) the ``openvino`` backend runs.
        notes: what a user should know (e.g. "bf16 is emulated on this CPU").
        input_names: for a model that takes a dict of named inputs, the names in the order
            the backend takes them positionally; ``module`` and ``example_input`` take and are
            the dict again, ``source_model`` takes them by position (see ``_named``).
    """

    module: Any
    deployment: Deployment
    check: CheckResult | None
    example_input: Any
    source_model: Any
    onnx_bytes: bytes | None = None
    ir_bytes: tuple[bytes, bytes] | None = None
    notes: tuple[str, ...] = ()
    input_names: tuple[str, ...] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def positional_example(self) -> Any:
        """:attr:`example_input` as the backend takes it: positional, in :attr:`input_names`
        order for a dict-input model."""
        if self.input_names is None:
            return self.example_input
        return tuple(self.example_input[name] for name in self.input_names)

    def factory(self) -> Callable[[], Any]:
        """A picklable zero-argument callable that rebuilds :attr:`module` in another process.

        ONNX Runtime and OpenVINO deployments pickle as their model bytes; torch deployments send the eager
        model (or, when it doesn't pickle, e.g. a PT2E graph, its ``torch.export`` program) and
        prepare it again in the child (a compiled graph recompiles there, from inductor's cache).
        """
        if self.deployment.backend in ("onnxruntime", "openvino"):
            # OrtModule and OvModule pickle as their model bytes (inside ByName too).
            return self.module
        rebuild = Rebuild(self.deployment, self.source_model, self.positional_example())
        if self.input_names is None:
            return rebuild
        from wattwise.deploy._named import NamedFactory

        return NamedFactory(rebuild, self.input_names)

    def measure(self, *, isolate: bool = True, **kwargs: Any) -> Measurement:
        """:func:`wattwise.measure` this deployment with its own batch size, threads and device."""
        from wattwise.measure import measure

        kwargs.setdefault("batch_size", self.deployment.batch_size)
        kwargs.setdefault("threads", self.deployment.threads)
        kwargs.setdefault("device", self.deployment.device)
        model = self.factory() if isolate else self.module
        return measure(model, self.example_input, isolate=isolate, **kwargs)


def deploy(
    model: Any,
    backend: str = "eager",
    precision: str = "fp32",
    *,
    example_input: Any,
    calibration: Sequence[Any] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    calibration_method: str = "minmax",
) -> Deployed:
    """Prepare ``model`` to run on ``backend`` at ``precision``, and check it against eager fp32.

    Args:
        model: an ``nn.Module`` in eval mode (for ``int8`` on the torch backends: a graph already
            quantized with ``wattwise.Quantize(method="pt2e-int8")``).
        backend: ``eager``, ``eager_cl`` (channels_last), ``compile`` (inductor), ``onnxruntime``
            or ``openvino``.
        precision: ``fp32``, ``bf16``, ``fp16``, ``int8`` or ``int8-dynamic``.
        example_input: one input batch (its rows are cycled to ``batch_size`` for the check): a
            tensor, a tuple of tensors, or a dict of named tensors (the model then takes
            keyword arguments; the backend gets them by position, and the deployed module
            takes the dict again by name).
        calibration: input batches for int8 calibration (``onnxruntime``, ``openvino``), in
            the form of ``example_input`` (dtypes kept: token ids stay int64); also checked
            against.
        device, threads, batch_size, calibration_method: see :class:`Deployment`.

    Returns:
        A :class:`Deployed`.

    Raises:
        InputError: unknown backend, a precision the backend can't run, bad sizes.
        UnavailableError: the backend or device can't run here (see ``wattwise doctor``).
        DeploymentMismatch: the prepared model's outputs differ from eager fp32.

    Example:
        >>> dep = wattwise.deploy(model, backend="onnxruntime", precision="int8",
        ...                       example_input=x, calibration=task.calibration_batches())
        >>> dep.check.describe()
    """
    deployment = Deployment(
        backend=backend,
        precision=precision,
        batch_size=batch_size,
        threads=threads,
        device=device,
        calibration_method=calibration_method,
    )
    return deploy_with(model, deployment, example_input=example_input, calibration=calibration)


def deploy_with(
    model: Any,
    deployment: Deployment,
    *,
    example_input: Any,
    calibration: Sequence[Any] | None = None,
    check: bool = True,
) -> Deployed:
    """Like :func:`deploy`, from a :class:`Deployment` (e.g. one of a candidate list).

    ``check=False`` skips the equivalence check (only for rebuilding an already-checked
    deployment, e.g. from an artifact).
    """
    if not isinstance(deployment, Deployment):
        raise InputError(f"deployment must be a Deployment, got {type(deployment).__name__}")
    if isinstance(example_input, Mapping):
        return _deploy_by_name(model, deployment, example_input, calibration, check=check)
    example, calib = checked_inputs(model, example_input, calibration)
    backend, notes = backend_for(model, deployment, example)
    source = _private_copy(model)
    prepared = prepare_copy(backend, source, deployment, example, calib)
    result = (
        check_against_eager(source, prepared.module, deployment, example, calib) if check else None
    )
    return Deployed(
        module=prepared.module,
        deployment=deployment,
        check=result,
        example_input=example[0][:1] if len(example) == 1 else tuple(t[:1] for t in example),
        source_model=source,
        onnx_bytes=prepared.onnx_bytes,
        ir_bytes=prepared.ir_bytes,
        notes=(*notes, *prepared.notes),
    )


def _deploy_by_name(
    model: Any,
    deployment: Deployment,
    example_input: Mapping[str, Any],
    calibration: Sequence[Any] | None,
    *,
    check: bool,
) -> Deployed:
    """:func:`deploy_with` for a model taking a dict of named inputs: backends take inputs by
    position, so the model goes in behind :class:`ByPosition` (names in the example's order)
    and the prepared module comes back behind :class:`ByName`."""
    import torch

    from wattwise.deploy._named import ByName, ByPosition, check_names

    check_input(example_input, "example_input")
    names = check_names(list(example_input), "example_input")
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be an nn.Module, got {type(model).__name__}")
    if calibration is not None and (
        isinstance(calibration, Mapping) or not isinstance(calibration, Sequence)
    ):
        raise InputError("calibration must be a list of input batches (dicts like example_input)")
    calib = []
    for i, batch in enumerate(calibration or []):
        if not isinstance(batch, Mapping) or set(batch) != set(names):
            raise InputError(
                f"calibration[{i}] must be a dict with example_input's names ({', '.join(names)})"
            )
        calib.append(tuple(batch[name] for name in names))
    inner = deploy_with(
        ByPosition(model, names),
        deployment,
        example_input=tuple(example_input[name] for name in names),
        calibration=calib,
        check=check,
    )
    rows = inner.example_input  # one tensor when there is one name, else a tuple
    rows = rows if isinstance(rows, tuple) else (rows,)
    return dataclasses.replace(
        inner,
        module=ByName(inner.module, names),
        example_input=dict(zip(names, rows, strict=True)),
        input_names=names,
    )


def checked_inputs(
    model: Any, example_input: Any, calibration: Sequence[Any] | None
) -> tuple[Batch, list[Batch]]:
    """The example and calibration batches as tuples of CPU tensors.

    Raises:
        InputError: ``model`` is not an ``nn.Module``, or the inputs are not batches of
            tensors that agree with each other.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be an nn.Module, got {type(model).__name__}")
    example = as_batch(example_input, "example_input")
    if calibration is not None and (
        isinstance(calibration, torch.Tensor) or not isinstance(calibration, Sequence)
    ):
        raise InputError(
            "calibration must be a list of input batches (tensors or tuples of tensors)"
        )
    calib = [as_batch(b, f"calibration[{i}]") for i, b in enumerate(calibration or [])]
    if calib and len({len(b) for b in calib} | {len(example)}) != 1:
        raise InputError("calibration batches must have as many tensors as example_input")
    return example, calib


def backend_for(model: Any, deployment: Deployment, example: Batch) -> tuple[Backend, list[str]]:
    """The deployment's backend, once it is known to run the deployment here, and the caveats.

    Raises:
        UnavailableError: the device or the backend can't run here.
        InputError: the backend can't run the precision on the device (for this model).
    """
    from wattwise.measure import check_device

    check_device(deployment.device)  # UnavailableError with the reason for a missing GPU
    backend = ready_backend(deployment)
    why = backend.unsupported(deployment.precision, deployment.device, model)
    if why:
        raise InputError(
            f"backend {deployment.backend!r} can't run precision {deployment.precision!r} "
            f"on {deployment.device}: {why}"
        )
    notes = list(backend.precision_notes(deployment.precision, deployment.device))
    if deployment.backend == "eager_cl" and any(t.dim() != 4 for t in example):
        notes.append("channels_last applies to 4-D inputs only; other inputs run as they are")
    return backend, notes


def prepare_copy(
    backend: Backend,
    source: Any,
    deployment: Deployment,
    example: Batch,
    calibration: list[Batch],
) -> Prepared:
    """``backend.prepare`` on a copy of ``source`` (backends may change the model they get).

    Raises:
        WorkloadError: the backend failed, in one line (our own errors pass as they are).
    """
    try:
        return backend.prepare(
            _private_copy(source), deployment, example_input=example, calibration=calibration
        )
    except (InputError, UnavailableError, WorkloadError):
        raise
    except Exception as exc:
        raise WorkloadError(
            f"backend {deployment.backend!r} failed to prepare the model at {deployment.precision}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None


def check_against_eager(
    source: Any,
    module: Any,
    deployment: Deployment,
    example: Batch,
    calibration: list[Batch],
) -> CheckResult:
    """Run ``source`` (eager fp32) and the prepared ``module`` on the check batches and compare.

    Raises:
        WorkloadError: either raised on the check batches.
        DeploymentMismatch: the outputs differ beyond the precision's tolerance.
    """
    batches = check_batches(example, calibration, deployment.batch_size)
    try:
        reference = run_batches(source, batches)
    except Exception as exc:
        raise WorkloadError(f"the eager fp32 model raised {type(exc).__name__}: {exc}") from None
    try:
        outputs = run_batches(module, batches)
    except Exception as exc:
        raise WorkloadError(
            f"{deployment.label} raised {type(exc).__name__} on the check batches: {first_line(exc)}"
        ) from None
    result = compare_outputs(reference, outputs, deployment.precision)
    if not result.passed:
        raise DeploymentMismatch(
            f"{deployment.label} differs from eager fp32: {result.describe()}", result
        )
    return result


def _private_copy(model: Any) -> Any:
    """A CPU copy in eval mode, so preparing (casts, memory format, device moves) never touches
    the caller's model."""
    import torch

    try:
        copied = copy.deepcopy(model)
    except Exception as exc:
        raise InputError(
            f"cannot copy the model to prepare it ({type(exc).__name__}: {exc})"
        ) from None
    copied = copied.cpu()
    # eval() that tolerates exported graphs, which refuse train()/eval() (they have no modes).
    if isinstance(copied, torch.nn.Module):
        with contextlib.suppress(NotImplementedError):
            copied.eval()
    return copied
