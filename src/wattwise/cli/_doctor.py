"""``wattwise doctor``: which energy meters and backends work here, and why the others do not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wattwise.cli._app import app
from wattwise.cli._errors import handled
from wattwise.cli._options import JsonOut
from wattwise.cli._output import JSON_SCHEMA, print_json

if TYPE_CHECKING:
    from wattwise._core import Availability

__all__ = ["doctor_report"]


def doctor_report() -> dict[str, Any]:
    """What works here: every meter (per device) and backend, available or not and why.

    Returns:
        ``{"schema": 1, "hardware": {...}, "meters": [...], "backends": [...],
        "controls": [...], "restored": [...]}``, each row ``{"name", "device", "available",
        "reason"}``; ``controls`` holds the GPU power limit (whether this process may set it),
        ``restored`` the limits a dead process had left set and doctor put back. A probe that raises is reported as
        unavailable with the exception, never raised: doctor must always finish.
    """
    import torch

    from wattwise.measure._hardware import hardware_info
    from wattwise.measure.meters import probe_meters
    from wattwise.measure.meters._auto import PREFERENCE

    del torch  # imported first so its import time is not charged to a probe
    # Probe every meter for both device kinds, even without a GPU: "nvml: no NVIDIA driver"
    # answers the question, "nvml: 'cpu' is not a CUDA device" does not. Each meter is listed
    # for the devices it works on, or, if none, for the device kind it is made for.
    devices = ("cpu", "cuda")
    probed = {device: dict(probe_meters(device)) for device in devices}
    home = {name: kind for kind, names in PREFERENCE.items() for name in names}
    meters = []
    for name in probed["cpu"]:
        working = [d for d in devices if probed[d][name]]
        for device in working or [home.get(name, "cpu")]:
            meters.append(_doctor_row(name, device, probed[device][name]))
    # Backends come from the deploy registry: a backend registered there is reported here.
    from wattwise.deploy import probe_backends

    backends = []
    for device in devices:
        try:
            probed_backends = probe_backends(device)
        except Exception as exc:  # doctor must always finish
            backends.append(
                {
                    "name": "*",
                    "device": device,
                    "available": False,
                    "reason": f"probe failed: {exc}",
                }
            )
            continue
        for name, availability in probed_backends.items():
            backends.append(_doctor_row(name, device, availability))
    # The GPU power limit, a search choice where this process may set it.
    from wattwise.measure._power_limit import power_limit_availability, restore_orphaned_limits

    try:
        restored = restore_orphaned_limits()
        limit = power_limit_availability("cuda")
    except Exception as exc:  # doctor must always finish
        from wattwise._core import Availability

        restored, limit = [], Availability(False, f"probe failed: {exc}")
    return {
        "schema": JSON_SCHEMA,
        "hardware": hardware_info(),
        "meters": meters,
        "backends": backends,
        "controls": [_doctor_row("power_limit", "cuda", limit)],
        "restored": restored,
    }


def _doctor_row(name: str, device: str, availability: Availability) -> dict[str, Any]:
    return {
        "name": name,
        "device": device,
        "available": bool(availability.ok),
        "reason": " ".join(availability.reason.split()),
    }


@app.command()
@handled
def doctor(
    json_out: JsonOut = False,
) -> None:
    """Say which energy meters and backends work here, and why the others do not."""
    report = doctor_report()
    if json_out:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    hw = report["hardware"]
    table = Table(
        title=f"{hw['cpu_model']}, {hw['cpus_allowed']} vCPUs, torch {hw['torch']}",
        title_justify="left",
    )
    for column in ("kind", "name", "device", "available", "reason"):
        table.add_column(column)
    for kind, rows in (
        ("meter", report["meters"]),
        ("backend", report["backends"]),
        ("control", report["controls"]),
    ):
        for r in rows:
            mark = "[green]yes[/]" if r["available"] else "[red]no[/]"
            table.add_row(kind, r["name"], r["device"], mark, r["reason"])
    Console().print(table)
    for line in report["restored"]:
        print(f"wattwise: {line}")
