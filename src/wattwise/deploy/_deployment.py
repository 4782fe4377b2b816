"""What a deployment is (:class:`Deployment`), what preparing one returns (:class:`Deployed`),
and the check that a prepared deployment still computes what the eager fp32 model computes.

The check's tolerances, per precision, and why:

* ``fp32``: every output element within ``atol=1e-4, rtol=1e-3`` of eager fp32. Fused kernels,
  ONNX Runtime and oneDNN reorder floating-point sums; more than that means a real bug.
* ``bf16`` / ``fp16``: relative L2 error ``‖y - y_ref‖ / ‖y_ref‖ ≤ 2e-2``. An elementwise bound
  fails on the small logits that low precision rounds coarsely; a norm bound asks "is the output
  the same vector", which is what a downstream argmax or loss sees. bf16 keeps 8 bits of
  mantissa (≈0.4% per rounding); a few layers of accumulation stay well under 2%.
* ``int8``: mean per-item cosine similarity ``≥ 0.98`` between outputs, over the example batch and
  up to 128 items of the calibration batches. Top-1 agreement of the argmax (also reported) is
  not the gate because it only means something for a trained classifier: on random weights the
  logits nearly tie and int8 rounding flips argmaxes while the outputs are the same vector; the
  accuracy a quantized model keeps is judged by the task metric, not here. Cosine 0.98 allows
  ~20% relative error per item (1 - cos ≈ err²/2): loose enough for honest int8, tight enough to
  catch a wrong scale, a missing bias or swapped channels (which give cosines near 0).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from wattwise._registry import check_name
from wattwise.config import Config, register_config
from wattwise.errors import InputError, WorkloadError

if TYPE_CHECKING:
    import torch

    from wattwise.measure import Measurement

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
FP32_ATOL = 1e-4
FP32_RTOL = 1e-3
LOW_PRECISION_MAX_REL_L2 = 2e-2
INT8_MIN_COSINE = 0.98
CHECK_MAX_CALIBRATION_ITEMS = 128  # enough items to see a broken int8 graph, few enough to be quick
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


class DeploymentMismatch(WorkloadError):
    """A prepared deployment's outputs differ from eager fp32 beyond the precision's tolerance.

    Attributes:
        result: the :class:`CheckResult` with the numbers.
    """

    def __init__(self, message: str, result: CheckResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@register_config
@dataclasses.dataclass(frozen=True)
class Deployment(Config):
    """How a model runs: backend × precision × batch size × threads × device.

    Attributes:
        backend: a name in :data:`BACKENDS` (``eager``, ``eager_cl``, ``compile``, ``onnxruntime``).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``; which ones a backend runs is checked
            when the deployment is prepared (:func:`deploy`), because ``int8`` on the torch
            backends depends on the model (it must already be PT2E-quantized).
        batch_size: items per call.
        threads: intra-op threads; ``None`` lets the runtime choose (all allowed cores).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        calibration_method: how ``onnxruntime`` int8 picks activation ranges (``minmax``,
            ``entropy``, ``percentile``); ignored by other backends and precisions.

    Example:
        >>> Deployment(backend="onnxruntime", precision="int8", batch_size=32).to_dict()["backend"]
        'onnxruntime'
    """

    TYPE = "deployment"

    backend: str = "eager"
    precision: str = "fp32"
    batch_size: int = 1
    threads: int | None = None
    device: str = "cpu"
    calibration_method: str = "minmax"

    def __post_init__(self) -> None:
        from wattwise.deploy._backends import BACKENDS

        BACKENDS.get(check_name("Deployment.backend", self.backend))  # UnknownNameError lists them
        if self.precision not in PRECISIONS:
            raise InputError(
                f"Deployment.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise InputError(
                f"Deployment.batch_size must be an integer >= 1, got {self.batch_size!r}"
            )
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise InputError(
                f"Deployment.threads must be None or an integer >= 1, got {self.threads!r}"
            )
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise InputError(
                f"Deployment.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        if self.calibration_method not in CALIBRATION_METHODS:
            raise InputError(
                f"Deployment.calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, "
                f"got {self.calibration_method!r}"
            )

    @property
    def label(self) -> str:
        """A short human name, e.g. ``onnxruntime/int8 b32 t2 cpu``."""
        threads = f" t{self.threads}" if self.threads else ""
        return f"{self.backend}/{self.precision} b{self.batch_size}{threads} {self.device}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """How close a deployment's outputs are to eager fp32.

    Attributes:
        precision: the deployment's precision, which picked the metric.
        metric: ``allclose`` (value = worst element's |Δ| over its allowance, passes ≤ 1),
            ``rel_l2`` (passes ≤ threshold) or ``cosine`` (mean per item, passes ≥ threshold).
        value, threshold, passed: the figure, its bound, and the verdict.
        items: how many input items were compared.
        max_abs_diff: the largest elementwise difference, for the record.
        top1_agreement: fraction of items whose argmax over the last dimension agrees
            (reported for 2-D outputs with ≥ 2 columns; not a gate, see the module docstring).
    """

    precision: str
    metric: str
    value: float
    threshold: float
    passed: bool
    items: int
    max_abs_diff: float
    top1_agreement: float | None = None

    def describe(self) -> str:
        top1 = (
            f", top-1 agreement {self.top1_agreement:.3f}"
            if self.top1_agreement is not None
            else ""
        )
        if self.metric == "allclose":
            what = (
                f"worst element at {self.value:.3g}× its allowance (atol {FP32_ATOL:g}, rtol {FP32_RTOL:g}), "
                f"max |Δ| {self.max_abs_diff:.3g}"
            )
        elif self.metric == "rel_l2":
            what = f"relative L2 error {self.value:.3g} (bound {self.threshold:g})"
        else:
            what = f"mean cosine similarity {self.value:.4f} (bound {self.threshold:g})"
        return f"{what} over {self.items} items{top1}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flat_outputs(value: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().float().cpu()]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _flat_outputs(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _flat_outputs(value[k])]
    return []


def compare_outputs(
    reference: Sequence[Any], outputs: Sequence[Any], precision: str
) -> CheckResult:
    """Compare per-batch outputs of a deployment with eager fp32 ones.

    Args:
        reference: eager fp32 outputs, one per input batch (tensor, tuple or dict of tensors).
        outputs: the deployment's outputs for the same batches.
        precision: selects the metric and bound (see the module docstring).

    Raises:
        DeploymentMismatch: output structure or shapes differ, or outputs are not finite.
    """
    import torch

    if len(reference) != len(outputs):
        raise DeploymentMismatch(
            f"{len(outputs)} output batches for {len(reference)} input batches"
        )
    refs = [t for r in reference for t in _flat_outputs(r)]
    gots = [t for o in outputs for t in _flat_outputs(o)]
    if not refs or len(refs) != len(gots):
        raise DeploymentMismatch(
            f"the deployment returned {len(gots)} output tensor(s) where eager fp32 returned {len(refs)}"
        )
    for r, g in zip(refs, gots, strict=True):
        if r.shape != g.shape:
            raise DeploymentMismatch(
                f"output shape {tuple(g.shape)} differs from eager fp32's {tuple(r.shape)}"
            )
        if not torch.isfinite(g).all():
            raise DeploymentMismatch("the deployment's outputs contain NaN or inf")
    # Items are counted on each batch's first output tensor (its leading dimension).
    firsts = [
        (_flat_outputs(r)[0], _flat_outputs(o)[0]) for r, o in zip(reference, outputs, strict=True)
    ]
    items = sum(int(r.shape[0]) if r.dim() else 1 for r, _ in firsts)
    max_abs = max(
        float((g - r).abs().max()) if r.numel() else 0.0 for r, g in zip(refs, gots, strict=True)
    )

    top1: float | None = None
    if all(r.dim() == 2 and r.shape[1] >= 2 for r, _ in firsts):
        agree = sum(int((r.argmax(1) == g.argmax(1)).sum()) for r, g in firsts)
        top1 = agree / max(1, sum(int(r.shape[0]) for r, _ in firsts))

    if precision == "fp32":
        ratio = max(
            float(((g - r).abs() / (FP32_ATOL + FP32_RTOL * r.abs())).max()) if r.numel() else 0.0
            for r, g in zip(refs, gots, strict=True)
        )
        return CheckResult(precision, "allclose", ratio, 1.0, ratio <= 1.0, items, max_abs, top1)
    if precision in ("bf16", "fp16"):
        num = math.sqrt(sum(float((g - r).pow(2).sum()) for r, g in zip(refs, gots, strict=True)))
        den = math.sqrt(sum(float(r.pow(2).sum()) for r in refs))
        rel = num / den if den > 0 else num
        return CheckResult(
            precision,
            "rel_l2",
            rel,
            LOW_PRECISION_MAX_REL_L2,
            rel <= LOW_PRECISION_MAX_REL_L2,
            items,
            max_abs,
            top1,
        )
    if precision == "int8":
        cosines: list[torch.Tensor] = []
        for r, g in zip(refs, gots, strict=True):
            rr = r.reshape(r.shape[0], -1) if r.dim() else r.reshape(1, 1)
            gg = g.reshape(rr.shape)
            # eps keeps an all-zero row (e.g. a dead ReLU map) from dividing by zero.
            cosines.append(torch.nn.functional.cosine_similarity(rr, gg, dim=1, eps=1e-12))
        cos = float(torch.cat(cosines).mean())
        return CheckResult(
            precision, "cosine", cos, INT8_MIN_COSINE, cos >= INT8_MIN_COSINE, items, max_abs, top1
        )
    raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Deployed:
    """A model prepared for one :class:`Deployment`, checked against eager fp32.

    Call it like the model. To measure it, hand :meth:`factory` (picklable) to
    :func:`wattwise.measure`, or call :meth:`measure`.

    Attributes:
        module: the prepared callable (an ``nn.Module``; for ``onnxruntime`` an :class:`OrtModule`).
        deployment: what was prepared.
        check: the equivalence check's numbers (``None`` only if the check was skipped).
        example_input: the batch-of-one example the deployment was prepared with (on CPU).
        source_model: the eager model it was made from (a private copy, on CPU), for export.
        onnx_bytes: the ONNX model the ``onnxruntime`` backend runs (quantized for int8).
        notes: what a user should know (e.g. "bf16 is emulated on this CPU").
    """

    module: Any
    deployment: Deployment
    check: CheckResult | None
    example_input: Any
    source_model: Any
    onnx_bytes: bytes | None = None
    notes: tuple[str, ...] = ()

    def __call__(self, *args: Any) -> Any:
        return self.module(*args)

    def factory(self) -> Callable[[], Any]:
        """A picklable zero-argument callable that rebuilds :attr:`module` in another process.

        ONNX Runtime deployments pickle as their ONNX bytes; torch deployments send the eager
        model (or, when it doesn't pickle, e.g. a PT2E graph, its ``torch.export`` program) and
        prepare it again in the child (a compiled graph recompiles there, from inductor's cache).
        """
        from wattwise.deploy._backends import rebuild_factory

        return rebuild_factory(self)

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
        backend: ``eager``, ``eager_cl`` (channels_last), ``compile`` (inductor) or ``onnxruntime``.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.
        example_input: one input batch (its first row is repeated to ``batch_size`` for the check).
        calibration: input batches for ``onnxruntime`` int8 calibration; also checked against.
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
    from wattwise.deploy._backends import prepare_checked

    if not isinstance(deployment, Deployment):
        raise InputError(f"deployment must be a Deployment, got {type(deployment).__name__}")
    return prepare_checked(
        model, deployment, example_input=example_input, calibration=calibration, check=check
    )
