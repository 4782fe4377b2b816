"""What a deployment backend is: the :class:`Backend` interface every backend implements, what
preparing returns (:class:`Prepared`), and the :data:`BACKENDS` registry they join by name.

The backends themselves live in ``_backends.py`` (``eager``, ``eager_cl``, ``compile``),
``_ort.py`` (``onnxruntime``) and ``_openvino.py`` (``openvino``). This module needs neither torch nor any other deploy module at
run time, so :class:`~wattwise.deploy.Deployment` can check a backend name against the
registry and ``wattwise doctor`` can probe every backend.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import Availability
from wattwise._registry import Registry
from wattwise.errors import InputError, UnavailableError

if TYPE_CHECKING:
    from wattwise.deploy._deployment import Deployment

__all__ = [
    "BACKENDS",
    "BF16_FLOAT_LAYERS",
    "CALIBRATED_INT8",
    "Backend",
    "Batch",
    "Prepared",
    "native_bf16",
    "probe_backends",
    "ready_backend",
]

# The precisions whose activation ranges are fixed beforehand from calibration batches.
CALIBRATED_INT8 = ("int8", "int8-bf16")
# The precisions whose floating-point layers run in bf16 (OpenVINO's CPU plugin).
BF16_FLOAT_LAYERS = ("bf16", "int8-bf16")

Batch = tuple[Any, ...]
"""One input batch as the backends receive it: a tuple of tensors sharing the batch dimension."""


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """What :meth:`Backend.prepare` returns: the callable, and the model file(s) it runs if
    it runs one (ONNX bytes for ``onnxruntime``; OpenVINO IR, XML and weights, for
    ``openvino``)."""

    module: Any
    onnx_bytes: bytes | None = None
    ir_bytes: tuple[bytes, bytes] | None = None
    notes: tuple[str, ...] = ()


class Backend(abc.ABC):
    """One way to run a model. Subclasses register in :data:`BACKENDS`.

    Attributes:
        name: registry name.
        precisions: every precision the backend can run somewhere; :meth:`unsupported` says
            which of them it can't run for a given device and model.
        torch_kernels: it runs PyTorch's own kernels, whose CPU precision caveats
            (:meth:`precision_notes`) apply; a runtime with kernels of its own has none here.
    """

    name: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ()
    torch_kernels: ClassVar[bool] = True

    @classmethod
    @abc.abstractmethod
    def probe(cls, device: str = "cpu") -> Availability:
        """Whether this backend can run on ``device`` here, and if not, why (no side effects)."""

    @classmethod
    def probe_precision(cls, precision: str, device: str = "cpu") -> Availability:
        """Whether ``precision`` can run on ``device`` here, for any suitable model: the
        backend's :meth:`probe`, plus what the precision alone needs installed. What depends on
        the model (e.g. a PT2E graph for torch int8) is :meth:`unsupported`'s to say."""
        return cls.probe(device)

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        """Why this backend can't run ``precision`` on ``device`` (for ``model``), or ``None``."""
        if precision not in self.precisions:
            return f"it runs {', '.join(self.precisions)}"
        return None

    def precision_notes(self, precision: str, device: str) -> list[str]:
        """Caveats of a precision that runs but may not pay off here (e.g. emulated bf16)."""
        return _cpu_precision_notes(precision) if device == "cpu" and self.torch_kernels else []

    @abc.abstractmethod
    def prepare(
        self, model: Any, deployment: Deployment, *, example_input: Batch, calibration: list[Batch]
    ) -> Prepared:
        """Build the callable. ``model`` is a private CPU copy in eval mode; inputs are tuples."""


BACKENDS: Registry[type[Backend]] = Registry("backend")


def require_export_inputs(
    backend: str, deployment: Deployment, example_input: Batch, calibration: list[Batch]
) -> None:
    """A backend that exports the model needs an example input, and calibration for int8.

    Raises:
        InputError: naming the backend and what to pass.
    """
    if deployment.precision in CALIBRATED_INT8 and not calibration:
        raise InputError(
            f"{backend} {deployment.precision} needs calibration= (a list of input batches, e.g. "
            "task.calibration_batches())"
        )
    if not example_input:
        raise InputError(f"{backend} needs example_input to export the model")


def probe_backends(device: str = "cpu") -> dict[str, Availability]:
    """Every registered backend's availability on ``device`` (for ``wattwise doctor``)."""
    return {name: cls.probe(device) for name, cls in BACKENDS.items()}


def ready_backend(deployment: Deployment) -> Backend:
    """The backend of ``deployment``, if it can run on the deployment's device here.

    Raises:
        UnavailableError: it can't, with the probe's reason.
    """
    backend = BACKENDS.get(deployment.backend)()
    available = backend.probe(deployment.device)
    if not available:
        raise UnavailableError(f"backend {deployment.backend!r} can't run here: {available.reason}")
    return backend


def device_type(device: str) -> str:
    """``"cuda"`` for ``cuda``/``cuda:N``, else ``"cpu"`` (what autocast takes)."""
    return "cuda" if device.startswith("cuda") else "cpu"


def cuda_probe(device: str) -> Availability | None:
    """``None`` for a CPU device; else whether the CUDA device is usable."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return Availability(
            False, f"{device}: no CUDA GPU visible (torch.cuda.is_available() is False)"
        )
    return Availability(True, "")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AMX-BF16 or AVX512-BF16)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


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
