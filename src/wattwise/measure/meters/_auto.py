"""Choosing a meter: ``create_meter("auto", device)`` and the report ``wattwise doctor`` prints."""

from __future__ import annotations

import inspect

from wattwise._core import Availability
from wattwise.errors import InputError, UnavailableError
from wattwise.measure.meters._base import METERS, Meter
from wattwise.measure.meters.nvml import cuda_ordinal

# Best first, by device kind. A measurement beats an estimate; the estimate models CPUs only.
PREFERENCE: dict[str, tuple[str, ...]] = {"cpu": ("rapl", "estimate"), "cuda": ("nvml",)}


def device_kind(device: str) -> str:
    """``"cpu"`` or ``"cuda"``; any other device is an :class:`InputError`."""
    if device == "cpu":
        return "cpu"
    if isinstance(device, str) and device.startswith("cuda"):
        cuda_ordinal(device)  # raises InputError for "cuda:x"
        return "cuda"
    raise InputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def choose(device: str) -> str:
    """The name of the best meter available for ``device``; UnavailableError lists why none."""
    reasons = []
    for name in PREFERENCE[device_kind(device)]:
        availability = METERS.get(name).probe(device)
        if availability:
            return name
        reasons.append(f"{name}: {availability.reason}")
    raise UnavailableError(f"no energy meter works for {device!r} here ({'; '.join(reasons)})")


def create_meter(name: str = "auto", device: str = "cpu", **options: object) -> Meter:
    """Create the meter ``name`` for ``device``; ``"auto"`` picks the best one available.

    ``auto`` takes, for ``cuda``/``cuda:N``, ``nvml``; for ``cpu``, ``rapl`` when its counters
    can be read, else ``estimate``. ``options`` go to the meter's constructor (e.g. ``root=`` for
    rapl, ``min_w_per_vcpu=`` for estimate).

    Raises:
        UnknownNameError: no meter is registered as ``name``.
        UnavailableError: the meter cannot run here; the message says why, in one line.
        InputError: a bad device, or an option the meter does not take.

    Example:
        >>> meter = create_meter("estimate", "cpu")
        >>> meter.source
        'estimated:cpu-ccf'
    """
    device_kind(device)
    chosen = choose(device) if name == "auto" else name
    cls = METERS.get(chosen)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted) - {"self"})
    if unknown:
        how = " (chosen by auto)" if name == "auto" else ""
        raise InputError(
            f"meter {chosen!r}{how} takes no option {', '.join(unknown)}; it takes: "
            f"{', '.join(p for p in accepted if p not in ('self', 'device')) or 'none'}"
        )
    return cls(device=device, **options)  # type: ignore[call-arg]


def probe_meters(device: str = "cpu") -> list[tuple[str, Availability]]:
    """Every registered meter with whether it works for ``device`` here, and why not.

    A probe that fails in an unforeseen way is reported, not raised: ``doctor`` must finish.
    """
    device_kind(device)
    out = []
    for name, cls in METERS.items():
        try:
            availability = cls.probe(device)
        except Exception as exc:
            availability = Availability(False, f"probe failed: {type(exc).__name__}: {exc}")
        out.append((name, availability))
    return out
