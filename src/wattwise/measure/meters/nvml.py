"""NVIDIA GPU energy through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Two ways to get joules, chosen once per meter:

- ``counter`` (Volta and newer): ``nvmlDeviceGetTotalEnergyConsumption``, the board's energy
  in mJ since the driver loaded. A window is the difference of two reads.
- ``power-poll`` (older boards, where the counter raises NotSupported): a background thread
  reads the board's power every ``poll_interval_s`` (10 ms) and integrates it with the
  trapezoid rule; a window reads that running integral, taking a fresh sample at each end.

Measured by this project: the counter updates every ~100 ms and a read costs ~4.5 ms on an
H200; on an H100 (:func:`nvml_counter_probe`, 3-4 s runs) the update period was 100.0 ms
median (81-119 ms under load), a read 2.3-2.9 ms, and the counter agreed with 10 ms polling of
instant power within 0.04% at idle (74 W) and 0.5% at 690 W. A 0.25 s window under that load
read 815 W instead of 690 W. So a window must last ≥ 1 s (10 updates;
:attr:`NvmlMeter.min_window_s`) and reads must stay out of the hot loop. Synchronising the
GPU before ``start()`` and ``stop()`` is the harness's job (a meter knows nothing of streams).

Device numbering follows CUDA, not nvidia-smi: ``cuda:1`` is the second device listed in
``CUDA_VISIBLE_DEVICES`` (integers or ``GPU-…`` UUIDs, unique prefixes allowed), mapped to the
NVML handle of that physical board. CUDA also reorders devices fastest-first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; on a machine with GPUs of different models the two orders can
differ, so set that variable there. MIG instances are refused: NVML's energy counter covers
the whole physical GPU, which other instances share.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

from wattwise._core import Availability
from wattwise.errors import InputError, UnavailableError
from wattwise.measure.meters._base import METERS, CounterError, Meter, Reading

_NO_DRIVER = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")


class _Mark(NamedTuple):
    time_s: float
    energy_j: float


def cuda_ordinal(device: str) -> int:
    """``"cuda"`` → 0, ``"cuda:N"`` → N; anything else is an :class:`InputError`."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None:
        raise InputError(f"device {device!r} is not a CUDA device ('cuda' or 'cuda:N')")
    return int(match[1] or 0)


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise UnavailableError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    return pynvml


def _init(pynvml: ModuleType) -> None:
    """nvmlInit, or UnavailableError saying why. NVML counts inits; pair with nvmlShutdown."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        kind = type(exc).__name__
        if kind in _NO_DRIVER:
            raise UnavailableError(f"nvidia-ml-py installed but no NVIDIA driver: {kind}") from None
        raise UnavailableError(f"NVML failed to start: {kind}: {exc}") from None


def _shutdown(pynvml: ModuleType) -> None:
    with contextlib.suppress(pynvml.NVMLError):
        pynvml.nvmlShutdown()


def gpu_temperature_c(device: str = "cuda") -> float | None:
    """The GPU's core temperature in °C through NVML, or ``None`` where it cannot be read."""
    try:
        pynvml = _import_pynvml()
        _init(pynvml)
    except UnavailableError:
        return None
    try:
        handle, _ = resolve_handle(pynvml, cuda_ordinal(device))
        return float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    except Exception:
        return None
    finally:
        _shutdown(pynvml)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible_entries() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: entries up to the first invalid one."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    entries: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if not (item.isdigit() or item.startswith(("GPU-", "MIG-"))):
            break  # CUDA ignores this entry and every one after it
        entries.append(item)
    return entries


def resolve_handle(pynvml: ModuleType, ordinal: int) -> tuple[Any, int]:
    """The NVML handle and NVML index of CUDA device ``ordinal``, honouring
    ``CUDA_VISIBLE_DEVICES``. Raises UnavailableError when that device does not exist."""
    count = pynvml.nvmlDeviceGetCount()
    entries = _visible_entries()
    if entries is None:
        entry = str(ordinal)
        if ordinal >= count:
            raise UnavailableError(f"cuda:{ordinal} does not exist: NVML sees {count} GPU(s)")
    else:
        if ordinal >= len(entries):
            raw = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise UnavailableError(
                f"cuda:{ordinal} is not visible: CUDA_VISIBLE_DEVICES={raw!r} shows "
                f"{len(entries)} GPU(s)"
            )
        entry = entries[ordinal]
    if entry.startswith("MIG-"):
        raise UnavailableError(
            f"cuda:{ordinal} is the MIG instance {entry}; NVML's energy counter covers the "
            "whole GPU, shared with other instances, so it cannot be attributed"
        )
    if entry.isdigit():
        index = int(entry)
        if index >= count:
            raise UnavailableError(
                f"CUDA_VISIBLE_DEVICES names GPU {index}, but NVML sees {count} GPU(s)"
            )
        return pynvml.nvmlDeviceGetHandleByIndex(index), index
    matches = []
    for index in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        if _text(pynvml.nvmlDeviceGetUUID(handle)).startswith(entry):
            matches.append((handle, index))
    if len(matches) != 1:
        found = "no" if not matches else "more than one"
        raise UnavailableError(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {found} GPU")
    return matches[0]


def _counter_supported(pynvml: ModuleType, handle: Any) -> bool:
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        if getattr(exc, "value", None) == pynvml.NVML_ERROR_NOT_SUPPORTED:
            return False
        raise
    return True


def power_reader(pynvml: ModuleType, handle: Any) -> tuple[Callable[[], float], str]:
    """A function returning the board's power in W, and which NVML figure it reads.

    Prefers the instant power field: on Ampere (except GA100) and newer,
    ``nvmlDeviceGetPowerUsage`` returns a 1-second average (NVML API reference), which smears
    any window shorter than a few seconds.
    """
    field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)
    if field is not None:
        try:
            value = pynvml.nvmlDeviceGetFieldValues(handle, [field])[0]
            ok = value.nvmlReturn == pynvml.NVML_SUCCESS
        except pynvml.NVMLError:
            ok = False
        if ok:

            def instant() -> float:
                sample = pynvml.nvmlDeviceGetFieldValues(handle, [field])[0]
                if sample.nvmlReturn != pynvml.NVML_SUCCESS:
                    raise pynvml.NVMLError(sample.nvmlReturn)
                return float(sample.value.uiVal) / 1000.0

            return instant, "instant"
    return (lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0), "average"


class PowerIntegrator:
    """A daemon thread that integrates ``read_power_w()`` over time (trapezoid rule).

    :meth:`energy_j` takes a fresh sample, so a window's edges are exact to one read, not to
    one poll period. An error in the thread is raised by the next :meth:`energy_j`.
    """

    def __init__(self, read_power_w: Callable[[], float], interval_s: float = 0.01) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._read = read_power_w
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._energy_j = 0.0
        self.samples = 0
        self._t = time.perf_counter()
        self._p = read_power_w()
        self._thread = threading.Thread(target=self._run, name="wattwise-nvml-poll", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        power_w = self._read()
        now = time.perf_counter()
        self._energy_j += 0.5 * (power_w + self._p) * (now - self._t)
        self._t, self._p = now, power_w
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                try:
                    self._sample()
                except BaseException as exc:  # surfaced by energy_j()
                    self._error = exc
                    return

    def energy_j(self) -> float:
        """Joules integrated since the thread started, up to now."""
        with self._lock:
            if self._error is not None:
                raise CounterError(f"power polling failed: {self._error!r}")
            self._sample()
            return self._energy_j

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


@METERS.register("nvml")
class NvmlMeter(Meter):
    """Joules of one NVIDIA GPU board from NVML (``measured:nvml``).

    Args:
        device: ``"cuda"`` or ``"cuda:N"`` (CUDA numbering, see the module docstring).
        poll_interval_s: sampling period of the power-polling fallback.

    Attributes:
        mode: ``"counter"`` or ``"power-poll"``.
        update_period_s: how often the energy counter changes (100 ms on an H200 and an H100).
        nvml_index: the board's index in NVML / nvidia-smi.

    Uncertainty: 0.05. NVML's reference for ``nvmlDeviceGetPowerUsage`` states ±5% of the
    current power draw (stated for Fermi and Kepler; NVIDIA publishes no newer figure, and the
    energy counter comes from the same board sensor). This project's probes found the counter
    and 10 ms power polling within 0.2% (H200) and 0.5% (H100) of each other, which checks
    consistency, not calibration.
    """

    name: ClassVar[str] = "nvml"
    source = "measured:nvml"
    uncertainty = 0.05  # NVML API reference, nvmlDeviceGetPowerUsage: "+/- 5%"
    min_window_s = 1.0  # 10 counter updates
    update_period_s = 0.1

    def __init__(self, device: str = "cuda", *, poll_interval_s: float = 0.01) -> None:
        if not device.startswith("cuda"):
            raise UnavailableError(f"nvml meter measures NVIDIA GPUs; {device!r} is not 'cuda'")
        ordinal = cuda_ordinal(device)
        try:
            pynvml = _import_pynvml()
            _init(pynvml)
        except UnavailableError as exc:
            raise UnavailableError(f"nvml meter: {exc}") from None
        self._pynvml: ModuleType | None = pynvml
        self._integrator: PowerIntegrator | None = None
        try:
            self._handle, self.nvml_index = resolve_handle(pynvml, ordinal)
            self.gpu_name = _text(pynvml.nvmlDeviceGetName(self._handle))
            self.gpu_uuid = _text(pynvml.nvmlDeviceGetUUID(self._handle))
            if _counter_supported(pynvml, self._handle):
                self.mode = "counter"
                self.power_field = ""
            else:
                self.mode = "power-poll"
                read, self.power_field = power_reader(pynvml, self._handle)
                self._integrator = PowerIntegrator(read, poll_interval_s)
        except BaseException as exc:
            self.close()
            if isinstance(exc, UnavailableError):
                raise UnavailableError(f"nvml meter: {exc}") from None
            if isinstance(exc, pynvml.NVMLError):
                raise UnavailableError(f"nvml meter: {type(exc).__name__}: {exc}") from None
            raise
        self.device = device

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        try:
            ordinal = cuda_ordinal(device)
        except InputError:
            return Availability(False, f"measures NVIDIA GPUs; {device!r} is not a CUDA device")
        try:
            pynvml = _import_pynvml()
            _init(pynvml)
        except UnavailableError as exc:
            return Availability(False, str(exc))
        try:
            handle, index = resolve_handle(pynvml, ordinal)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            if _counter_supported(pynvml, handle):
                return Availability(True, f"energy counter of GPU {index} ({name})")
            return Availability(
                True, f"GPU {index} ({name}) has no energy counter; integrating polled power"
            )
        except UnavailableError as exc:
            return Availability(False, str(exc))
        except pynvml.NVMLError as exc:
            return Availability(False, f"NVML error: {type(exc).__name__}: {exc}")
        finally:
            _shutdown(pynvml)

    def _energy_j(self) -> float:
        if self._pynvml is None:
            raise CounterError("nvml meter is closed")
        if self._integrator is not None:
            return self._integrator.energy_j()
        try:
            return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except self._pynvml.NVMLError as exc:
            raise CounterError(f"nvml meter: reading the energy counter failed: {exc}") from None

    def start(self) -> object:
        energy_j = self._energy_j()
        return _Mark(time.perf_counter(), energy_j)

    def stop(self, mark: object) -> Reading:
        energy_j = self._energy_j()
        t_end = time.perf_counter()
        if not isinstance(mark, _Mark):
            raise TypeError("nvml meter: stop() takes a mark from this meter's start()")
        t_start, start_j = mark
        window_s = t_end - t_start
        delta_j = energy_j - start_j
        if delta_j == 0:
            raise CounterError(
                f"nvml meter: the energy counter of GPU {self.nvml_index} did not move in "
                f"{window_s:.3g} s (it updates every ~{self.update_period_s} s); lengthen the "
                f"window to at least {self.min_window_s} s"
            )
        if delta_j < 0:
            raise CounterError(
                f"nvml meter: the energy counter of GPU {self.nvml_index} went backwards by "
                f"{-delta_j:.3g} J (driver reset or reload?); measure again"
            )
        return Reading(
            energy_j=delta_j, time_s=window_s, domains={f"gpu{self.nvml_index}": delta_j}
        )

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(
            mode=self.mode,
            update_period_s=self.update_period_s,
            gpu=self.gpu_name,
            gpu_uuid=self.gpu_uuid,
            nvml_index=self.nvml_index,
        )
        if self.power_field:
            out["power_field"] = self.power_field
        return out

    def close(self) -> None:
        if self._integrator is not None:
            self._integrator.close()
            self._integrator = None
        if self._pynvml is not None:
            _shutdown(self._pynvml)
            self._pynvml = None

    def __del__(self) -> None:
        # A meter dropped without close() must not leave its polling thread running.
        integrator = getattr(self, "_integrator", None)
        if integrator is not None:
            integrator.close()


def nvml_counter_probe(device_index: int = 0, seconds: float = 3.0) -> dict[str, Any]:
    """Find the energy counter's update period and check it against integrated power.

    Reads the counter of NVML device ``device_index`` (nvidia-smi numbering, not CUDA's) as
    fast as it can for ``seconds``, while a thread integrates polled power every 10 ms. Between
    the first and the last change of the counter it compares the counter's joules with the
    integrated power's. Run it under a steady load for a meaningful comparison; at idle the
    energies are small and the relative difference is noisier.

    Returns:
        A dict: ``gpu``, ``seconds``, ``reads``, ``read_ms_median``, ``changes``,
        ``update_period_ms_median`` (and ``_min``, ``_max``), ``window_s``,
        ``counter_energy_j``, ``power_energy_j``, ``relative_difference``
        ((power − counter) / counter), ``mean_power_w``, ``power_field``, and ``notes``.
        Figures that could not be found are ``None``, with the reason in ``notes``.
    """
    if not seconds > 0:
        raise InputError(f"seconds must be > 0, got {seconds!r}")
    pynvml = _import_pynvml()
    _init(pynvml)
    notes: list[str] = []
    result: dict[str, Any] = {
        "device_index": device_index,
        "seconds": seconds,
        "update_period_ms_median": None,
        "update_period_ms_min": None,
        "update_period_ms_max": None,
        "window_s": None,
        "counter_energy_j": None,
        "power_energy_j": None,
        "relative_difference": None,
        "mean_power_w": None,
        "notes": notes,
    }
    integrator: PowerIntegrator | None = None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        result["gpu"] = _text(pynvml.nvmlDeviceGetName(handle))
        read_power, result["power_field"] = power_reader(pynvml, handle)
        if not _counter_supported(pynvml, handle):
            notes.append("this GPU has no energy counter (pre-Volta): nothing to probe")
            return result
        integrator = PowerIntegrator(read_power, 0.01)
        changes, read_times = _watch_counter(pynvml, handle, integrator, seconds, notes)
        result.update(_summarise_probe(changes, read_times, seconds, result["power_field"], notes))
        return result
    except pynvml.NVMLError as exc:
        notes.append(f"NVML error: {type(exc).__name__}: {exc}")
        return result
    finally:
        if integrator is not None:
            integrator.close()
        _shutdown(pynvml)


def _watch_counter(
    pynvml: ModuleType,
    handle: Any,
    integrator: PowerIntegrator,
    seconds: float,
    notes: list[str],
) -> tuple[list[tuple[float, float, float]], list[float]]:
    """Read the energy counter as fast as it goes for ``seconds``.

    Returns:
        Each change of the counter as (time, counter J, integrated power J), since the last
        time it went backwards (a note then), and each read's seconds.
    """
    changes: list[tuple[float, float, float]] = []
    read_times: list[float] = []
    last = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        value = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        t1 = time.perf_counter()
        read_times.append(t1 - t0)
        if value < last:
            notes.append(f"counter went backwards at read {len(read_times)}: driver reset?")
            changes.clear()
        elif value != last:
            changes.append((t1, value / 1000.0, integrator.energy_j()))
        last = value
    return changes, read_times


def _summarise_probe(
    changes: list[tuple[float, float, float]],
    read_times: list[float],
    seconds: float,
    power_field: str,
    notes: list[str],
) -> dict[str, Any]:
    """:func:`nvml_counter_probe`'s figures from the counter's changes (see
    :func:`_watch_counter`): the update period, and counter vs integrated power between the
    first and the last change. A figure it cannot find is left out, with a note."""
    out: dict[str, Any] = {
        "reads": len(read_times),
        "read_ms_median": 1000 * statistics.median(read_times) if read_times else None,
        "changes": len(changes),
    }
    if len(changes) < 2:
        notes.append(f"the counter changed {len(changes)} time(s) in {seconds} s: too few")
        return out
    gaps_ms = [1000 * (b[0] - a[0]) for a, b in itertools.pairwise(changes)]
    out["update_period_ms_median"] = statistics.median(gaps_ms)
    out["update_period_ms_min"] = min(gaps_ms)
    out["update_period_ms_max"] = max(gaps_ms)
    (t_a, counter_a, power_a), (t_b, counter_b, power_b) = changes[0], changes[-1]
    window_s = t_b - t_a
    counter_j, power_j = counter_b - counter_a, power_b - power_a
    out.update(window_s=window_s, counter_energy_j=counter_j, power_energy_j=power_j)
    out["mean_power_w"] = counter_j / window_s if window_s > 0 else None
    if counter_j > 0:
        out["relative_difference"] = (power_j - counter_j) / counter_j
    if power_field == "average":
        notes.append("power is NVML's 1-second average: compare only under a steady load")
    return out
