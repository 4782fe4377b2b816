"""Measurement: the harness (:func:`measure`), the :class:`Measurement` it returns, and the
energy meters (:mod:`wattwise.measure.meters`). Knows nothing of compression or search."""

from wattwise._callable import make_callable
from wattwise.measure._generate import GenerateSpec, Generation
from wattwise.measure._harness import check_device, measure
from wattwise.measure._isolate import IsolationError, preload, run_isolated
from wattwise.measure._lock import device_lock
from wattwise.measure._measurement import Measurement

__all__ = [
    "GenerateSpec",
    "Generation",
    "IsolationError",
    "Measurement",
    "check_device",
    "device_lock",
    "measure",
    "preload",
    "run_isolated",
]

make_callable(__name__, measure)  # ww.measure(model, x) calls the harness
