"""What a deployment is: :class:`Deployment`, the backend × precision × batch size × threads ×
device a model runs as, validated when made and serialisable like every config.

Preparing one is :func:`wattwise.deploy.deploy` (``_prepare.py``); the check of the prepared
model against eager fp32 is ``_check.py``; the backends are registered in ``_base.py``.
"""

from __future__ import annotations

import dataclasses
import re

from wattwise._core import check_choice
from wattwise._registry import check_name
from wattwise.config import Config, register_config
from wattwise.deploy._base import BACKENDS
from wattwise.errors import InputError

__all__ = ["CALIBRATION_METHODS", "PRECISIONS", "Deployment"]

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int8-bf16", "int8-dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


@register_config
@dataclasses.dataclass(frozen=True)
class Deployment(Config):
    """How a model runs: backend × precision × batch size × threads × device.

    Attributes:
        backend: a name in :data:`BACKENDS` (``eager``, ``eager_cl``, ``compile``, ``onnxruntime``,
            ``openvino``).
        precision: ``fp32``, ``bf16``, ``fp16``, ``int8`` (int8 activations with ranges
            calibrated beforehand), ``int8-bf16`` (the same, with the layers left in floating
            point run in bf16: OpenVINO, on a CPU with native bf16) or ``int8-dynamic`` (int8
            weights; each activation quantized at run time from its range in that call, so no calibration); which ones
            a backend runs is checked when the deployment is prepared (:func:`deploy`),
            because ``int8`` on the torch backends depends on the model (it must already be
            PT2E-quantized).
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
        BACKENDS.get(check_name("Deployment.backend", self.backend))  # UnknownNameError lists them
        check_choice(self.precision, PRECISIONS, what="Deployment.precision")
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
        check_choice(
            self.calibration_method, CALIBRATION_METHODS, what="Deployment.calibration_method"
        )

    @property
    def label(self) -> str:
        """A short human name, e.g. ``onnxruntime/int8 b32 t2 cpu``."""
        threads = f" t{self.threads}" if self.threads else ""
        return f"{self.backend}/{self.precision} b{self.batch_size}{threads} {self.device}"
