"""CPU package and DRAM energy from RAPL counters, read through Linux powercap sysfs.

Layout (``/sys/class/powercap``, one flat folder of links to every zone)::

    intel-rapl:0/      name=package-0   energy_uj   max_energy_range_uj   (socket 0)
    intel-rapl:0:0/    name=core        (inside package-0: not added)
    intel-rapl:0:2/    name=dram        (beside the package on servers: added as dram-0)
    intel-rapl:1/      name=package-1 | psys  (psys is the platform and contains the packages)

What is summed: every top-level ``package-N`` zone (``package-N-die-M`` on multi-die parts)
and every ``dram`` subzone, keyed ``package-0``, ``dram-0``... ``core``, ``uncore`` and
``psys`` lie inside or around those and would count the same joules twice.

AMD: Zen and later expose their RAPL counters through this same ``intel-rapl`` control type
(drivers/powercap/intel_rapl_msr.c); there is no ``amd-rapl`` powercap name in mainline Linux,
and AMD parts have no DRAM domain. The same counters may also appear under
``intel-rapl-mmio`` (client parts) or ``intel-rapl-tpmi`` (Granite Rapids and later): those are
other windows onto the same hardware, so only one control type is read, the first of
``intel-rapl``, ``intel-rapl-tpmi``, ``intel-rapl-mmio`` that has a package zone.

Since the PLATYPUS side channel (CVE-2020-8694, Linux 5.10 and stable backports) ``energy_uj``
is readable by root only; a udev rule or ``chmod`` on each file is needed for other users.

Counters wrap at ``max_energy_range_uj`` (about 262 kJ for an Intel package: some 15 minutes
at 300 W). A counter lower at the end of a window than at its start wrapped once; two wraps in
one window cannot be seen, so windows must stay well under that time.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import ClassVar, NamedTuple

from wattwise._core import Availability
from wattwise.errors import UnavailableError
from wattwise.measure.meters import _cpu_power
from wattwise.measure.meters._base import METERS, CounterError, Meter, Reading

DEFAULT_ROOT = Path("/sys/class/powercap")
CONTROL_TYPES = ("intel-rapl", "intel-rapl-tpmi", "intel-rapl-mmio")
_ZONE = re.compile(r"^(?P<ctype>[a-z-]+):(?P<top>\d+)(?::(?P<sub>\d+))?$")
_PACKAGE = re.compile(r"^package-(?P<id>\d+(?:-die-\d+)?)$")


@dataclasses.dataclass(frozen=True)
class _Zone:
    key: str  # "package-0", "dram-0"
    energy_path: Path
    max_range_uj: int


class _Mark(NamedTuple):
    time_s: float
    counters_uj: tuple[int, ...]


class _NotAvailable(Exception):
    """Internal: discovery failed, with the one-line reason as its message."""


def _read_int(path: Path) -> int:
    """Read one integer file; raises _NotAvailable with a reason a user can act on."""
    try:
        text = path.read_text()
    except PermissionError:
        raise _NotAvailable(
            f"permission denied reading {path} (root or a udev rule is needed since the "
            "PLATYPUS fix, CVE-2020-8694)"
        ) from None
    except OSError as exc:
        raise _NotAvailable(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return int(text.strip())
    except ValueError:
        raise _NotAvailable(f"{path} holds {text.strip()!r}, not an integer") from None


def _name(zone_dir: Path) -> str:
    try:
        return (zone_dir / "name").read_text().strip()
    except OSError:
        return ""


def discover(root: str | Path = DEFAULT_ROOT) -> list[_Zone]:
    """Find the package and DRAM zones under ``root`` and check each counter can be read."""
    root = Path(root)
    if not root.is_dir():
        raise _NotAvailable(f"no {root} (not exposed by this VM or kernel)")
    by_type: dict[str, list[tuple[int, int | None, Path]]] = {}
    for entry in sorted(root.iterdir()):
        match = _ZONE.match(entry.name)
        if match and match["ctype"] in CONTROL_TYPES:
            sub = None if match["sub"] is None else int(match["sub"])
            by_type.setdefault(match["ctype"], []).append((int(match["top"]), sub, entry))
    for ctype in CONTROL_TYPES:
        zones = _zones_of(by_type.get(ctype, []))
        if zones:
            break
    else:
        found = ", ".join(sorted(by_type)) or "no RAPL control type"
        raise _NotAvailable(f"{root} has no RAPL package zone ({found})")
    for zone in zones:
        _read_int(zone.energy_path)  # fail now, with the reason, rather than at stop()
    return zones


def _zones_of(entries: list[tuple[int, int | None, Path]]) -> list[_Zone]:
    packages: dict[int, str] = {}  # top index -> "0" or "0-die-1"
    zones: list[_Zone] = []
    for top, sub, path in sorted(entries, key=lambda e: (e[0], -1 if e[1] is None else e[1])):
        name = _name(path)
        if sub is None:
            match = _PACKAGE.match(name)
            if match is None:
                continue  # psys or an unknown top-level zone: it overlaps the packages
            packages[top] = match["id"]
            key = name
        elif name == "dram" and top in packages:
            key = f"dram-{packages[top]}"
        else:
            continue  # core, uncore: inside the package
        max_range = _read_int(path / "max_energy_range_uj")
        zones.append(_Zone(key, path / "energy_uj", max_range))
    return zones


def _uncertainty() -> float:
    vendor = _cpu_power.read_cpuinfo().get("vendor_id", "")
    return 0.05 if vendor == "GenuineIntel" else 0.10


@METERS.register("rapl")
class RaplMeter(Meter):
    """Joules of every CPU package and its DRAM, from RAPL counters (``measured:rapl``).

    Args:
        device: only ``"cpu"``: RAPL covers whole sockets, not one process.
        root: the powercap folder; tests point it at a fake tree.

    Uncertainty: 0.05 on Intel. Since Haswell, Intel's RAPL package and DRAM readings are
    measured rather than modelled and track a reference power analyser closely (Hackenberg et
    al., "An Energy Efficiency Feature Survey of the Intel Haswell Processor", IPDPSW 2015;
    Khan et al., "RAPL in Action", ACM TOMPECS 3(2), 2018, who found RAPL highly correlated with
    plug power on production servers). 0.10 elsewhere: AMD publishes no accuracy figure
    for its RAPL (see Schöne et al., "Energy Efficiency Aspects of the AMD Zen 2
    Architecture", IEEE Cluster 2021, on its limits), and pre-Haswell Intel RAPL is a model.
    The figure covers the packages and DRAM only, not the rest of the machine.
    """

    name: ClassVar[str] = "rapl"
    source = "measured:rapl"
    uncertainty = 0.05
    # RAPL counters update about every 1 ms (Intel SDM vol. 3B, RAPL interfaces). A read lags
    # the truth by under one update at each end, so a window is off by at most one update's
    # energy: under 2% of a 50 ms window, and sysfs reads (microseconds) are negligible.
    min_window_s = 0.05
    update_period_s = 0.001

    def __init__(self, device: str = "cpu", *, root: str | Path = DEFAULT_ROOT) -> None:
        if device != "cpu":
            raise UnavailableError(f"rapl meter measures CPU sockets; {device!r} is not 'cpu'")
        try:
            self._zones = discover(root)
        except _NotAvailable as exc:
            raise UnavailableError(f"rapl meter: {exc}") from None
        self.device = device
        self.root = Path(root)
        self.uncertainty = _uncertainty()

    @classmethod
    def probe(cls, device: str = "cpu", *, root: str | Path = DEFAULT_ROOT) -> Availability:
        if device != "cpu":
            return Availability(False, f"measures CPU sockets; {device!r} is not 'cpu'")
        try:
            zones = discover(root)
        except _NotAvailable as exc:
            return Availability(False, str(exc))
        return Availability(True, "reads " + ", ".join(z.key for z in zones))

    @property
    def domains(self) -> list[str]:
        return [zone.key for zone in self._zones]

    def _read(self) -> tuple[int, ...]:
        try:
            return tuple(_read_int(zone.energy_path) for zone in self._zones)
        except _NotAvailable as exc:
            raise CounterError(f"rapl meter: {exc}") from None

    def start(self) -> object:
        return _Mark(time.perf_counter(), self._read())

    def stop(self, mark: object) -> Reading:
        counters = self._read()
        t_end = time.perf_counter()
        if not isinstance(mark, _Mark) or len(mark.counters_uj) != len(counters):
            raise TypeError("rapl meter: stop() takes a mark from this meter's start()")
        t_start, start = mark
        domains: dict[str, float] = {}
        for zone, before, after in zip(self._zones, start, counters, strict=True):
            delta_uj = after - before
            if delta_uj < 0:  # wrapped once
                delta_uj += zone.max_range_uj
            if delta_uj < 0:
                raise CounterError(
                    f"rapl meter: {zone.key} went from {before} to {after} µJ, more than one "
                    f"wrap of {zone.max_range_uj} µJ; was the counter reset?"
                )
            domains[zone.key] = delta_uj / 1e6
        energy_j = sum(domains.values())
        if energy_j <= 0:
            raise CounterError(
                f"rapl meter: no counter moved in {t_end - t_start:.3g} s; windows must last "
                f"at least {self.min_window_s} s"
            )
        return Reading(energy_j=energy_j, time_s=t_end - t_start, domains=domains)

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(domains=self.domains, root=str(self.root))
        return out
