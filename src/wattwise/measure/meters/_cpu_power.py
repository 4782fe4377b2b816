"""CPU power per vCPU by micro-architecture: the one table the ``estimate`` meter reads.

Each row gives ``min_w`` (watts per vCPU, i.e. per hardware thread, with the server at active
idle) and ``max_w`` (at 100% load), the two ends of Cloud Carbon Footprint's (CCF) linear model.

Where the numbers come from: CCF derives them from SPECpower_ssj2008 results, as the mean over
every published server of that micro-architecture of (wall power at active idle ÷ hardware
threads) and (wall power at 100% ÷ hardware threads). They are whole-server figures shared out
per thread, so they include memory, fans and PSU losses, not only the CPU package. Rows marked
"ccf-coefficients" were recomputed by us with CCF's own method
(https://github.com/cloud-carbon-footprint/ccf-coefficients, commit b0032d9, file
``data/SPECpower-2026-03-09.csv``, families in ``data/<family>.csv``) and agree to two decimals
with that repository's ``tests/test_power_averages.py``, except Zen 5 (see its row).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from wattwise._registry import lookup

_CCF = "ccf-coefficients @b0032d9, SPECpower 2026-03-09"


@dataclasses.dataclass(frozen=True)
class CpuPowerRow:
    """Power per vCPU for one CPU family.

    Attributes:
        family: table key, e.g. ``"amd-zen5"``.
        label: human name.
        min_w: watts per vCPU (hardware thread) at active idle.
        max_w: watts per vCPU at 100% load.
        source: where the two figures come from.
    """

    family: str
    label: str
    min_w: float
    max_w: float
    source: str

    def __post_init__(self) -> None:
        if not (0 < self.min_w <= self.max_w):
            raise ValueError(f"CpuPowerRow {self.family}: need 0 < min_w <= max_w")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _row(family: str, label: str, min_w: float, max_w: float, source: str) -> CpuPowerRow:
    return CpuPowerRow(family, label, min_w, max_w, source)


CPU_POWER: dict[str, CpuPowerRow] = {
    row.family: row
    for row in (
        _row("intel-haswell", "Intel Xeon Haswell", 1.86, 5.60, f"{_CCF}, intel-haswell, n=17"),
        _row(
            "intel-broadwell", "Intel Xeon Broadwell", 0.71, 3.69, f"{_CCF}, intel-broadwell, n=17"
        ),
        _row(
            "intel-skylake",
            "Intel Xeon Skylake-SP",
            0.55,
            4.01,
            f"{_CCF}, intel-skylake-server, n=72",
        ),
        _row(
            "intel-coffeelake",
            "Intel client, Skylake to Comet Lake (Core, Xeon E)",
            1.14,
            5.42,
            f"{_CCF}, intel-coffeelake, n=9 (client Skylake has only 4 results and shares it)",
        ),
        _row(
            "intel-cascadelake",
            "Intel Xeon Cascade Lake / Cooper Lake",
            0.69,
            4.06,
            f"{_CCF}, intel-cascadelake, n=69 (Cooper Lake, its 14 nm sibling, uses this row)",
        ),
        _row("intel-icelake", "Intel Xeon Ice Lake-SP", 0.77, 3.76, f"{_CCF}, intel-icelake, n=16"),
        _row(
            "intel-sapphirerapids",
            "Intel Xeon Sapphire Rapids",
            1.04,
            4.16,
            f"{_CCF}, intel-sapphirerapids, n=47",
        ),
        _row(
            "intel-emeraldrapids",
            "Intel Xeon Emerald Rapids",
            0.81,
            4.48,
            f"{_CCF}, intel-emeraldrapids, n=4",
        ),
        _row(
            "intel-graniterapids",
            "Intel Xeon Granite Rapids",
            0.58,
            2.53,
            f"{_CCF}, intel-graniterapids, n=22",
        ),
        _row(
            "amd-zen1", "AMD EPYC 1st gen (Zen, Naples)", 0.85, 2.60, f"{_CCF}, amd-epyc-gen1, n=9"
        ),
        _row(
            "amd-zen2", "AMD EPYC 2nd gen (Zen 2, Rome)", 0.47, 1.69, f"{_CCF}, amd-epyc-gen2, n=36"
        ),
        _row(
            "amd-zen3",
            "AMD EPYC 3rd gen (Zen 3, Milan)",
            0.46,
            1.96,
            f"{_CCF}, amd-epyc-gen3, n=28",
        ),
        _row(
            "amd-zen4",
            "AMD EPYC 4th gen (Zen 4, Genoa)",
            0.74,
            2.28,
            f"{_CCF}, amd-epyc-gen4, n=41",
        ),
        _row(
            "amd-zen5",
            "AMD EPYC 5th gen (Zen 5, Turin)",
            0.27,
            1.48,
            # CCF's published row (3.68 / 8.96 W) is an artefact: data/amd-epyc-gen5.csv ends in
            # blank lines, each becomes the regex r"\b$", and that matches almost every SPECpower
            # result (1039 of 1088 servers, most of them old). Restricted to the 41 results that
            # name a Zen 5 part, CCF's own method gives these figures. Sanity check against TDP:
            # EPYC 9655 is 400 W / 192 threads = 2.1 W per thread at the package alone, EPYC
            # 9965 500 W / 384 = 1.3; the SPECpower wall figures per thread are 1.98 and 1.04-1.24.
            f"{_CCF}, amd-epyc-gen5 with its blank lines dropped, n=41 (CCF's own row is wrong)",
        ),
        _row(
            "arm-neoverse-n1",
            "Arm Neoverse N1 (Ampere Altra, AWS Graviton2)",
            0.74,
            1.71,
            f"{_CCF}, amd-neoverse-n1 (Ampere Altra results), n=7",
        ),
        _row(
            "arm-neoverse-v",
            "Arm Neoverse V1/V2/N2 (AWS Graviton3/4, Google Axion)",
            0.47,
            1.69,
            "ccf-coefficients output/coefficients-aws-use.csv: CCF has no SPECpower data for "
            "Graviton3/4 and uses EPYC 2nd gen as their proxy; so do we",
        ),
        _row(
            "average",
            "unknown CPU (CCF's AWS average)",
            0.74,
            3.5,
            "cloud-carbon-footprint AwsFootprintEstimationConstants.ts MIN_WATTS_AVG / "
            "MAX_WATTS_AVG, CCF's figure for an unknown micro-architecture",
        ),
    )
}
"""Rows by ``family``. ``"average"`` is the fallback for a CPU we cannot place."""

FALLBACK = "average"

# Intel family 6 model numbers (Intel SDM vol. 4, table 2-1, and the kernel's intel-family.h).
_INTEL_MODELS: dict[int, str] = {
    **dict.fromkeys((0x3C, 0x3F, 0x45, 0x46), "intel-haswell"),
    **dict.fromkeys((0x3D, 0x47, 0x4F, 0x56), "intel-broadwell"),
    **dict.fromkeys((0x4E, 0x5E, 0x8E, 0x9E, 0xA5, 0xA6), "intel-coffeelake"),  # client 14 nm
    **dict.fromkeys((0x6A, 0x6C, 0x7D, 0x7E), "intel-icelake"),
    0x8F: "intel-sapphirerapids",
    0xCF: "intel-emeraldrapids",
    **dict.fromkeys((0xAD, 0xAE), "intel-graniterapids"),
}
_INTEL_SKYLAKE_SP = 0x55  # Skylake-SP, Cascade Lake and Cooper Lake share it; stepping tells

# Arm "CPU part" numbers for implementer 0x41 (Arm Ltd.), from Arm's technical reference manuals.
_ARM_PARTS: dict[int, str] = {
    0xD0C: "arm-neoverse-n1",
    **dict.fromkeys((0xD40, 0xD49, 0xD4F, 0xD8E), "arm-neoverse-v"),
}


def row(family: str) -> CpuPowerRow:
    """The row for ``family``; :class:`~wattwise.errors.UnknownNameError` lists the choices
    otherwise."""
    return lookup(CPU_POWER, family, "cpu_family")


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` as a dict; empty if it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break  # the first block is enough: every core of a machine is the same family
            continue
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip().lower(), value.strip())
    return info


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def detect_family(info: dict[str, str]) -> str:
    """Place a CPU, described by :func:`read_cpuinfo`, in a :data:`CPU_POWER` row.

    Returns :data:`FALLBACK` when the CPU is unknown.
    """
    vendor = info.get("vendor_id", "")
    family = _int(info.get("cpu family"))
    model = _int(info.get("model"))
    if vendor == "GenuineIntel" and family == 6 and model is not None:
        if model == _INTEL_SKYLAKE_SP:
            stepping = _int(info.get("stepping")) or 0
            return "intel-skylake" if stepping <= 4 else "intel-cascadelake"
        return _INTEL_MODELS.get(model, FALLBACK)
    if vendor in ("AuthenticAMD", "HygonGenuine") and family is not None and model is not None:
        if family == 0x17:  # Zen and Zen+ below model 0x30, Zen 2 from there
            return "amd-zen1" if model < 0x30 else "amd-zen2"
        if family == 0x19:  # Zen 4: Genoa 0x10-0x1F, client 0x60-0x7F, Bergamo 0xA0-0xAF
            zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF
            return "amd-zen4" if zen4 else "amd-zen3"
        if family == 0x1A:
            return "amd-zen5"
        return FALLBACK
    implementer = _int(info.get("cpu implementer"))
    part = _int(info.get("cpu part"))
    if implementer == 0x41 and part is not None:
        return _ARM_PARTS.get(part, FALLBACK)
    name = info.get("model name", "")
    if re.search(r"graviton", name, re.I):
        return "arm-neoverse-v"
    return FALLBACK
