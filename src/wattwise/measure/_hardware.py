"""What machine a figure was measured on: results files record it beside every Measurement."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["hardware_info"]


def hardware_info(*, include_cuda: bool = True) -> dict[str, Any]:
    """Describe this machine, cheaply and without side effects.

    Args:
        include_cuda: also ask torch for the CUDA devices (initialises CUDA if there is one).

    Returns:
        A JSON-ready dict: ``cpu_model``, ``cpu_cores_physical`` (None where unknown),
        ``cpu_logical``, ``cpus_allowed`` (this process's affinity: what a measurement can use),
        ``cpu_quota`` (the cgroup CPU limit in cores, None if unlimited), ``ram_bytes``,
        ``os``, ``python``, ``torch``, ``torch_cuda`` (the CUDA torch was built with, or None)
        and ``cuda_devices`` (names; empty without a GPU).

    Example:
        >>> info = hardware_info()
        >>> info["cpus_allowed"] >= 1
        True
    """
    import torch

    cpu = _cpuinfo()
    info: dict[str, Any] = {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_cores_physical": cpu.get("cores"),
        "cpu_logical": os.cpu_count(),
        "cpus_allowed": _cpus_allowed(),
        "cpu_quota": _cgroup_cpu_quota(),
        "ram_bytes": _ram_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_devices": [],
    }
    if include_cuda and torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Model name and physical core count from /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and "model name" not in out:
            out["model name"] = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not key:  # a blank line ends one logical CPU's block
            if core:
                cores.add((physical, core))
            physical = core = ""
    if cores:
        out["cores"] = len(cores)
    return out


def _cpus_allowed() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cgroup_cpu_quota() -> float | None:
    """Cores the cgroup (v2, then v1) lets us use, when it sets a limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
