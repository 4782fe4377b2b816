"""An estimate of CPU energy for machines with no energy counter (most cloud VMs).

The model is Cloud Carbon Footprint's linear one, per vCPU (hardware thread)::

    average watts = min_w + utilisation × (max_w − min_w)

applied to one window of this process:

    energy_j = cpu_s × (max_w − min_w)            # "cpu-active": work this process did
             + wall_s × min_w × vcpus             # "cpu-idle-share": the vCPUs it may run on

``cpu_s`` is :func:`time.process_time` over the window, which sums every thread of this
process (child processes, e.g. data-loader workers, are not counted); ``vcpus`` is
``len(os.sched_getaffinity(0))``, the vCPUs the process may run on; ``min_w``/``max_w`` come
from the table in :mod:`._cpu_power`, picked from ``/proc/cpuinfo``. The idle share is charged
whether or not other processes use those vCPUs: a measurement owns the vCPUs it is pinned to.

Every figure carries the source ``estimated:cpu-ccf``.

Uncertainty: 0.4 (±40%) by default. The coefficients are whole-server SPECpower means over
many servers of one micro-architecture, shared out per thread; one server of a family differs
from the mean by tens of percent (for Zen 5 the per-thread figures at 100% range 1.04-1.98 W
across SPECpower results, about ±35% around the mean), power at equal utilisation differs by
workload (vector units, memory-bound loops) by tens of percent again, and a VM's share of
memory, fans and PSU is an assumption. Relative comparisons on one machine (model A vs model B)
are much better than the absolute figure, because all these factors mostly cancel; the
absolute figure is a rough guide only.
"""

from __future__ import annotations

import math
import os
import time
from typing import ClassVar, NamedTuple

from wattwise._core import Availability
from wattwise.errors import InputError, UnavailableError
from wattwise.measure.meters import _cpu_power
from wattwise.measure.meters._base import METERS, CounterError, Meter, Reading

ENV_WATTS = "WATTWISE_CPU_WATTS"


class _Mark(NamedTuple):
    wall_s: float
    cpu_s: float


def _vcpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _positive(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of watts, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{name} must be finite and > 0, got {value!r}")
    return number


def _env_watts() -> tuple[float, float] | None:
    text = os.environ.get(ENV_WATTS)
    if text is None or not text.strip():
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise InputError(
            f'{ENV_WATTS} must be "min,max" watts per vCPU, e.g. "0.5,2", got {text!r}'
        )
    return _positive(f"{ENV_WATTS} min", parts[0]), _positive(f"{ENV_WATTS} max", parts[1])


def resolve_row(
    cpu_family: str | None = None,
    min_w_per_vcpu: float | None = None,
    max_w_per_vcpu: float | None = None,
    cpuinfo: dict[str, str] | None = None,
) -> _cpu_power.CpuPowerRow:
    """Choose the coefficients: explicit watts, then ``WATTWISE_CPU_WATTS``, then the table row
    for ``cpu_family`` (or the family detected from ``/proc/cpuinfo``)."""
    if cpu_family is not None:
        base = _cpu_power.row(cpu_family)
    else:
        info = _cpu_power.read_cpuinfo() if cpuinfo is None else cpuinfo
        base = _cpu_power.row(_cpu_power.detect_family(info))
    env = _env_watts()
    if min_w_per_vcpu is None and max_w_per_vcpu is None and env is None:
        return base
    if env is not None:
        lo, hi, source = env[0], env[1], f"{ENV_WATTS}={os.environ[ENV_WATTS]}"
    else:
        lo, hi, source = base.min_w, base.max_w, base.source
    if min_w_per_vcpu is not None or max_w_per_vcpu is not None:
        if min_w_per_vcpu is not None:
            lo = _positive("min_w_per_vcpu", min_w_per_vcpu)
        if max_w_per_vcpu is not None:
            hi = _positive("max_w_per_vcpu", max_w_per_vcpu)
        source = f"user option (min_w_per_vcpu={lo}, max_w_per_vcpu={hi}); else {source}"
    if lo > hi:
        raise InputError(f"min watts per vCPU ({lo}) must not exceed max ({hi}); from {source}")
    return _cpu_power.CpuPowerRow(base.family, f"{base.label}, overridden", lo, hi, source)


@METERS.register("estimate")
class EstimateMeter(Meter):
    """CPU energy from process CPU time and a per-vCPU power model (see the module docstring).

    Args:
        device: only ``"cpu"``.
        cpu_family: a row of :data:`wattwise.measure.meters._cpu_power.CPU_POWER` instead of
            the detected one.
        min_w_per_vcpu, max_w_per_vcpu: explicit watts per vCPU; they win over
            ``WATTWISE_CPU_WATTS="min,max"``, which wins over the table.

    Example:
        >>> m = EstimateMeter(min_w_per_vcpu=0.5, max_w_per_vcpu=2.0)
        >>> mark = m.start(); reading = m.stop(mark)
        >>> reading.energy_j > 0
        True
    """

    name: ClassVar[str] = "estimate"
    source = "estimated:cpu-ccf"
    uncertainty = 0.4
    # process_time() reads the scheduler's nanosecond run-time accounting and perf_counter() is
    # a nanosecond clock, so the model has no update period; 10 ms keeps the two clock reads
    # (a few µs) far below 0.1% of a window.
    min_window_s = 0.01

    def __init__(
        self,
        device: str = "cpu",
        *,
        cpu_family: str | None = None,
        min_w_per_vcpu: float | None = None,
        max_w_per_vcpu: float | None = None,
    ) -> None:
        if device != "cpu":
            raise UnavailableError(f"estimate meter models CPUs only; {device!r} is not 'cpu'")
        self.device = device
        self.model_row = resolve_row(cpu_family, min_w_per_vcpu, max_w_per_vcpu)
        self.vcpus = _vcpus()

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        if device != "cpu":
            return Availability(False, f"models CPUs only; {device!r} is not 'cpu'")
        try:
            found = resolve_row()
        except InputError as exc:
            return Availability(False, str(exc))
        return Availability(
            True,
            f"a model, not a measurement: {found.label}, {found.min_w}-{found.max_w} W per vCPU "
            f"× {_vcpus()} vCPUs",
        )

    @property
    def idle_power_w(self) -> float:
        """The model's idle power for the vCPUs this process may use (a model figure)."""
        return self.model_row.min_w * self.vcpus

    def start(self) -> object:
        return _Mark(time.perf_counter(), time.process_time())

    def stop(self, mark: object) -> Reading:
        wall_s = time.perf_counter()
        cpu_s = time.process_time()
        if not isinstance(mark, _Mark):
            raise TypeError("estimate meter: stop() takes a mark from this meter's start()")
        wall_s -= mark.wall_s
        cpu_s -= mark.cpu_s
        if not wall_s > 0:
            raise CounterError(f"estimate meter: the window lasted {wall_s} s; it must be > 0")
        # The CPU time of a window cannot exceed wall × vCPUs; clamp the clocks' small skew.
        cpu_s = min(max(cpu_s, 0.0), wall_s * self.vcpus)
        row = self.model_row
        active_j = cpu_s * (row.max_w - row.min_w)
        idle_j = wall_s * row.min_w * self.vcpus
        return Reading(
            energy_j=active_j + idle_j,
            time_s=wall_s,
            domains={"cpu-active": active_j, "cpu-idle-share": idle_j},
        )

    def as_pinned(self, reading: Reading, vcpus: int) -> Reading:
        """The idle share of ``vcpus`` instead of every vCPU this process may use: what
        :meth:`stop` gives a process pinned to them (the active part, work done, is the same)."""
        idle = reading.domains.get("cpu-idle-share")
        if idle is None or not 0 < vcpus < self.vcpus:
            return reading
        kept = idle * vcpus / self.vcpus
        return Reading(
            energy_j=reading.energy_j - idle + kept,
            time_s=reading.time_s,
            domains={**reading.domains, "cpu-idle-share": kept},
        )

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(model_row=self.model_row.to_dict(), vcpus=self.vcpus)
        return out
