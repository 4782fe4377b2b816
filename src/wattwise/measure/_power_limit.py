"""GPU power limits as a deployment choice: set per candidate through NVML, always put back.

A GPU's power limit caps the board's draw; the clocks drop to stay under it. Below the
default, work often takes a little longer and much less energy (Zeus, You et al., NSDI 2023:
15-76% better training energy efficiency), so the search treats the limit as one more choice
of a deployment, under the latency bound.

Setting a limit changes the machine for every process on it, so it is always put back:

* **in this process**: :func:`power_limit` is a context manager that restores the limit it
  found in ``finally`` (an exception, Ctrl-C, SIGTERM through the CLI's handler);
* **after a crash** (kill -9, the OOM killer, a power cut of the host process): before it sets
  a limit, :func:`power_limit` writes a record of the limit it found, with its process id and
  start time, to the state directory (``WATTWISE_STATE_DIR``, default
  ``~/.cache/wattwise/power-limits``), and removes it after restoring.
  :func:`restore_orphaned_limits` puts back the limit of every record whose process is gone;
  the search calls it after each child job (a trial killed mid-measurement leaves one) and at
  its start, and ``wattwise doctor`` at each run.

Permission: NVML sets a limit only as root (``NVML_ERROR_NO_PERMISSION`` otherwise), and only on
boards that support power management; :func:`power_limit_availability` says which, and why
not (``wattwise doctor`` prints it).

The NVML calls are behind :class:`PowerControl`, which :class:`NvmlPowerControl` implements; the
record names the GPU by its UUID, so a restore needs no CUDA context.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from wattwise._core import Availability, first_line
from wattwise.errors import InputError, UnavailableError

__all__ = [
    "NvmlPowerControl",
    "PowerControl",
    "power_limit",
    "power_limit_availability",
    "power_limit_choices",
    "restore_orphaned_limits",
]

# A state record is a few hundred bytes; more is not ours.
_MAX_RECORD_BYTES = 4096


class PowerControl(Protocol):
    """One GPU's power limit, in watts."""

    def key(self) -> str:
        """A name of the GPU that survives the process (its UUID)."""
        ...

    def constraints_w(self) -> tuple[float, float, float]:
        """The lowest and highest limits the board takes, and its default."""
        ...

    def get_w(self) -> float:
        """The limit now."""
        ...

    def set_w(self, watts: float) -> None:
        """Set the limit (raises if not permitted)."""
        ...


class NvmlPowerControl:
    """:class:`PowerControl` through NVML, for a CUDA device (``"cuda:1"``) or a GPU UUID."""

    def __init__(self, device: str = "cuda", *, uuid: str | None = None) -> None:
        from wattwise.measure.meters.nvml import _import_pynvml, _init, cuda_ordinal, resolve_handle

        self._nvml = _import_pynvml()
        _init(self._nvml)
        if uuid is not None:
            self._handle = self._nvml.nvmlDeviceGetHandleByUUID(uuid)
        else:
            self._handle, _ = resolve_handle(self._nvml, cuda_ordinal(device))
        raw = self._nvml.nvmlDeviceGetUUID(self._handle)
        self._uuid = raw.decode() if isinstance(raw, bytes) else str(raw)

    def key(self) -> str:
        return self._uuid

    def constraints_w(self) -> tuple[float, float, float]:
        low, high = self._nvml.nvmlDeviceGetPowerManagementLimitConstraints(self._handle)
        default = self._nvml.nvmlDeviceGetPowerManagementDefaultLimit(self._handle)
        return low / 1000.0, high / 1000.0, default / 1000.0

    def get_w(self) -> float:
        return float(self._nvml.nvmlDeviceGetPowerManagementLimit(self._handle)) / 1000.0

    def set_w(self, watts: float) -> None:
        self._nvml.nvmlDeviceSetPowerManagementLimit(self._handle, round(watts * 1000))


def _state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    if state_dir is not None:
        return Path(state_dir)
    env = os.environ.get("WATTWISE_STATE_DIR")
    if env:
        return Path(env) / "power-limits"
    return Path.home() / ".cache" / "wattwise" / "power-limits"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or ``None`` if it is gone:
    a pid reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.rsplit(")", 1)[-1].split()[19]


def _record_path(state: Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:100]
    return state / f"{safe}.json"


def _write_record(state: Path, key: str, original_w: float) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    path = _record_path(state, key)
    if path.exists():
        # Another live process holds this GPU's limit: two searches must not fight over it.
        holder = _read_record(path)
        if holder is not None and _alive(holder):
            raise UnavailableError(
                f"the power limit of GPU {key} is held by process {holder.get('pid')}; "
                "one search at a time may set it"
            )
    record = {
        "key": key,
        "original_w": original_w,
        "pid": os.getpid(),
        "start": _process_start(os.getpid()),
        "time": time.time(),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return path


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            data = json.loads(f.read(_MAX_RECORD_BYTES + 1)[:_MAX_RECORD_BYTES])
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        return None
    if not isinstance(data.get("original_w"), int | float) or not isinstance(data.get("pid"), int):
        return None
    return data


def _alive(record: dict[str, Any]) -> bool:
    start = _process_start(int(record["pid"]))
    return start is not None and start == record.get("start")


@contextlib.contextmanager
def power_limit(
    watts: float | None,
    device: str = "cuda",
    *,
    control: PowerControl | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Iterator[float | None]:
    """Run the block with the GPU's power limit at ``watts``, then put back the limit found.

    ``watts=None`` changes nothing. The limit found is recorded on disk first, so that
    :func:`restore_orphaned_limits` puts it back if this process dies inside the block.

    Yields:
        The limit set (``None`` when nothing was changed).

    Raises:
        InputError: ``watts`` is outside the board's range.
        UnavailableError: NVML cannot set limits here (not root, no support; the reason says).
    """
    if watts is None:
        yield None
        return
    if control is None:
        control = NvmlPowerControl(device)
    low, high, _ = control.constraints_w()
    if not low <= watts <= high:
        raise InputError(f"power limit {watts:g} W is outside this GPU's range {low:g}-{high:g} W")
    original = control.get_w()
    record = _write_record(_state_dir(state_dir), control.key(), original)
    try:
        try:
            control.set_w(watts)
        except Exception as exc:
            raise UnavailableError(
                f"setting the power limit to {watts:g} W failed: {first_line(exc)}"
            ) from None
        yield watts
    finally:
        try:
            control.set_w(original)
        finally:
            with contextlib.suppress(OSError):
                record.unlink()


def restore_orphaned_limits(
    *,
    state_dir: str | os.PathLike[str] | None = None,
    control_for: Callable[[str], PowerControl] | None = None,
) -> list[str]:
    """Put back every power limit whose setter died before restoring it.

    Args:
        state_dir: where the records are (default: see the module docstring).
        control_for: the control of a GPU by its key (default: NVML by UUID).

    Returns:
        One line per limit restored (or that could not be, and why); the records of live
        processes are left alone.
    """
    state = _state_dir(state_dir)
    if not state.is_dir():
        return []
    if control_for is None:

        def control_for(key: str) -> PowerControl:
            return NvmlPowerControl(uuid=key)

    said = []
    for path in sorted(state.glob("*.json")):
        record = _read_record(path)
        if record is None or _alive(record):
            continue
        key, original = record["key"], float(record["original_w"])
        try:
            control_for(key).set_w(original)
        except Exception as exc:
            said.append(
                f"GPU {key}: could not restore its power limit to {original:g} W: {first_line(exc)}"
            )
            continue
        with contextlib.suppress(OSError):
            path.unlink()
        said.append(
            f"GPU {key}: power limit restored to {original:g} W (process {record['pid']} "
            "set it and ended without restoring it)"
        )
    return said


def power_limit_availability(device: str = "cuda") -> Availability:
    """Whether this process may set ``device``'s power limit, and why not."""
    if not isinstance(device, str) or not device.startswith("cuda"):
        return Availability(False, "power limits are a GPU setting: needs a CUDA device")
    try:
        control = NvmlPowerControl(device)
        low, high, default = control.constraints_w()
        current = control.get_w()
    except Exception as exc:
        return Availability(False, f"NVML cannot read the power limit: {first_line(exc)}")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return Availability(
            False, f"setting a power limit needs root (now {current:g} W, range {low:g}-{high:g} W)"
        )
    try:
        control.set_w(current)  # the limit it has: permission is all this asks
    except Exception as exc:
        return Availability(False, f"NVML refuses to set the power limit: {first_line(exc)}")
    return Availability(True, f"range {low:g}-{high:g} W, default {default:g} W, now {current:g} W")


def power_limit_choices(
    device: str = "cuda", *, shares: tuple[float, ...] = (1.0, 0.8, 0.6)
) -> tuple[int, ...]:
    """The limits the default search tries: ``shares`` of the board's default limit, in whole
    watts within its range; none where the limit cannot be set here."""
    if not power_limit_availability(device):
        return ()
    low, high, default = NvmlPowerControl(device).constraints_w()
    return tuple(
        sorted({int(min(high, max(low, round(default * s)))) for s in shares}, reverse=True)
    )
