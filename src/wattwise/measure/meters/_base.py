"""What every energy meter is: joules over a window of time, with the figure's source."""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from wattwise._core import Availability
from wattwise._registry import Registry
from wattwise.errors import WattwiseError


class CounterError(WattwiseError):
    """An energy counter gave no usable figure for a window: it did not move, or went backwards.

    Raised instead of returning zero or negative joules, which would silently corrupt a
    measurement. The usual causes are a window shorter than the counter's update period (the
    harness should lengthen it) or a driver reset between ``start()`` and ``stop()``.
    """


@dataclasses.dataclass(frozen=True)
class Reading:
    """Energy over one window.

    Attributes:
        energy_j: total joules over the window, all domains the meter covers summed.
        time_s: the window's length on the monotonic clock.
        domains: joules per domain (e.g. ``{"package-0": ..., "dram-0": ...}`` or ``{"gpu0": ...}``).
    """

    energy_j: float
    time_s: float
    domains: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.time_s if self.time_s > 0 else float("nan")


class Meter(abc.ABC):
    """A source of joules for one device.

    Subclasses register under ``name`` in :data:`METERS`. A meter is created for one device
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``start()`` marks the beginning of a window and
    ``stop(mark)`` returns a :class:`Reading`. Marks are opaque and several windows may overlap.

    Attributes:
        name: registry name (``"nvml"``, ``"rapl"``, ``"estimate"``).
        source: the label every figure from this meter carries (``"measured:rapl"``,
            ``"estimated:cpu-tdp"``).
        uncertainty: relative uncertainty of one window's energy (0.05 = ±5%).
        min_window_s: shortest window whose figure can be trusted (e.g. 10 counter updates);
            the harness lengthens windows by repeating the work, never reports a shorter one.
    """

    name: ClassVar[str] = ""
    source: str = ""
    uncertainty: float = 0.0
    min_window_s: float = 0.0

    @classmethod
    @abc.abstractmethod
    def probe(cls, device: str = "cpu") -> Availability:
        """Say, without side effects, whether this meter works for ``device`` here."""

    @abc.abstractmethod
    def start(self) -> object:
        """Begin a window; returns a mark to hand to :meth:`stop`."""

    @abc.abstractmethod
    def stop(self, mark: object) -> Reading:
        """End the window begun by ``mark``."""

    def as_pinned(self, reading: Reading, vcpus: int) -> Reading:
        """What ``reading`` would have been from a process pinned to ``vcpus`` of the CPUs this
        one may use, for a window that kept no more than that many busy. A hardware counter
        reads the whole package or board however a process is pinned: unchanged here."""
        return reading

    def describe(self) -> dict[str, object]:
        """What a results file records about this meter."""
        return {
            "name": self.name,
            "source": self.source,
            "uncertainty": self.uncertainty,
            "min_window_s": self.min_window_s,
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles (NVML shutdown, open files)."""


METERS: Registry[type[Meter]] = Registry("meter")
