"""Energy meters: joules over a window, each figure labelled with its source.

``nvml`` (NVIDIA GPUs, ``measured:nvml``), ``rapl`` (Linux powercap, ``measured:rapl``) and
``estimate`` (a CPU power model for machines with no counter, ``estimated:cpu-ccf``) register
in :data:`METERS`; :func:`create_meter` with ``"auto"`` picks the best one for a device and
:func:`probe_meters` says which work here and why not.

Example:
    >>> from wattwise.measure.meters import create_meter
    >>> meter = create_meter("auto", "cpu")
    >>> mark = meter.start()
    >>> reading = meter.stop(mark)  # a Reading: energy_j, time_s, domains
    >>> meter.source.startswith(("measured:", "estimated:"))
    True
"""

from wattwise._core import Availability
from wattwise.measure.meters._auto import create_meter, probe_meters
from wattwise.measure.meters._base import METERS, CounterError, Meter, Reading
from wattwise.measure.meters.estimate import EstimateMeter
from wattwise.measure.meters.nvml import NvmlMeter, nvml_counter_probe
from wattwise.measure.meters.rapl import RaplMeter

__all__ = [
    "METERS",
    "Availability",
    "CounterError",
    "EstimateMeter",
    "Meter",
    "NvmlMeter",
    "RaplMeter",
    "Reading",
    "create_meter",
    "nvml_counter_probe",
    "probe_meters",
]
