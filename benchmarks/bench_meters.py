"""How does our measuring compare with CodeCarbon's and Zeus's? (issue: measurement vs peers)

One workload (the digits task's ``DigitsCNN``, inference, batch 64), the same callable and the
same number of calls per window for every tool, taken side by side in one child process:

* ``none``: the loop alone, the reference for overhead;
* ``wattwise``: the meter ``wattwise.measure`` uses (``create_meter("auto", "cpu")``), its
  ``start()``/``stop()`` around the loop;
* ``codecarbon``: one ``OfflineEmissionsTracker`` (country code, ``tracking_mode="process"``,
  no output, log level error) and its ``start_task()``/``stop_task()`` per window: the
  documented way to measure several regions, because a tracker supports one ``start()``/
  ``stop()`` cycle only;
* ``zeus``: one ``ZeusMonitor(gpu_indices=[])`` (``cpu_indices=None``: every RAPL package it
  finds) and its ``begin_window()``/``end_window()`` per window.

After a warm-up and one discarded round, each round runs all four once, rotating the order
(A B C D, B C D A, ...), so slow drifts of a shared machine hit every tool alike. Figures:

1. overhead, as a share of the bare loop's median wall time: the time inside the tool's start
   and stop calls, and the median over rounds of (wall time with the tool's start/stop around
   the loop − wall time of the bare loop in the same round), which also sees background
   threads; for ``wattwise.measure`` its own ``harness_overhead_rel``;
2. repeatability: coefficient of variation of J/item over the rounds;
3. time to the first figure: from constructing the tool (imports done) to holding its first
   energy number for one window; for ``wattwise.measure`` the whole call (child process,
   warm-up, idle power, windows until its CI target);
4. what each reports on this machine: the figure, its unit, and whether it says it estimates;
5. J/item with a source label in our convention.

The peers come from the ``bench`` extra (``pip install -e '.[bench]'``); they are never runtime
dependencies. No network: the child refuses every internet connection and DNS lookup (an
audit hook) and lists any attempt in the results.

Run: ``.venv/bin/python benchmarks/bench_meters.py`` (about 3 minutes on a quiet machine; on
a busy one the rounds stop after ``--max-rounds-s``, and ``--threads 1`` steadies the loop). Writes
``docs/benchmarks/meters.json`` and ``docs/benchmarks/meters.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import io
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import wattwise
from wattwise._fs import atomic_write_text
from wattwise.measure import _stats
from wattwise.measure._hardware import hardware_info
from wattwise.measure._harness import warm_up
from wattwise.measure._isolate import child_env, pin_threads, run_isolated
from wattwise.tasks.digits import DigitsCNN

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("none", "wattwise", "codecarbon", "zeus")
KWH_TO_J = 3.6e6


class _ListHandler(logging.Handler):
    """Keeps a library's log records instead of printing them (they go into the results)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage().strip()}")


def _capture_logs(name: str, level: int) -> _ListHandler:
    handler = _ListHandler()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def _drop_stream_handlers(name: str) -> None:
    # CodeCarbon adds a stderr handler in every tracker's __init__; its records are kept by ours.
    logger = logging.getLogger(name)
    logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]


def _guard_network(attempts: list[str]) -> None:
    """Refuse (and record) every internet connection and DNS lookup in this process."""
    import socket

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            sock, address = args[0], args[1]
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                attempts.append(f"connect {address!r}")
                raise ConnectionRefusedError("bench_meters: no network for the peers")
        elif event == "socket.getaddrinfo":
            attempts.append(f"getaddrinfo {args[0]!r}")
            raise ConnectionRefusedError("bench_meters: no network for the peers")

    sys.addaudithook(hook)


def _import_s(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter that has already imported torch."""
    code = (
        "import time, torch\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, **child_env(None), "CODECARBON_LOG_LEVEL": "error"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"import {module} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


# --- the tools, each as start() -> handle and stop(handle) -> (joules or None, details) ---


def _wattwise_arm(meter: Any) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    def stop(mark: Any) -> tuple[float | None, dict[str, Any]]:
        reading = meter.stop(mark)
        return reading.energy_j, {"domains_j": reading.domains}

    return meter.start, stop


def _codecarbon_arm(tracker: Any) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    counter = iter(range(1 << 30))

    def start() -> str:
        name = f"window-{next(counter)}"
        tracker.start_task(name)
        return name

    def stop(name: str) -> tuple[float | None, dict[str, Any]]:
        data = tracker.stop_task(name)
        if data is None:
            return None, {"stop_task": "returned None"}
        return data.energy_consumed * KWH_TO_J, {
            "cpu_j": data.cpu_energy * KWH_TO_J,
            "ram_j": data.ram_energy * KWH_TO_J,
            "gpu_j": data.gpu_energy * KWH_TO_J,
            "cpu_power_w": data.cpu_power,
            "ram_power_w": data.ram_power,
            "duration_s": data.duration,
        }

    return start, stop


def _zeus_energy_j(result: Any) -> float | None:
    """Every domain Zeus returned, summed (its own ``total_energy`` counts GPUs only)."""
    parts = [*result.gpu_energy.values()]
    parts += (result.cpu_energy or {}).values()
    parts += (result.dram_energy or {}).values()
    return sum(parts) if parts else None


def _zeus_arm(monitor: Any) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    counter = iter(range(1 << 30))

    def start() -> str:
        key = f"window-{next(counter)}"
        monitor.begin_window(key)
        return key

    def stop(key: str) -> tuple[float | None, dict[str, Any]]:
        result = monitor.end_window(key)
        return _zeus_energy_j(result), {
            "measurement": repr(result),
            "total_energy": result.total_energy,
        }

    return start, stop


# --- the side-by-side run, in a child process ---


def _make_step(batch_size: int) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(batch_size, *model.default_input_size)

    def step() -> Any:
        with torch.inference_mode():
            return model(x)

    return step


def _calibrate(step: Callable[[], Any], window_s: float) -> int:
    """Calls that fill one window, counted by running them (a median of a few warm-up calls
    mispredicts on a loaded machine)."""
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < window_s:
        step()
        calls += 1
    return calls


def _window(
    step: Callable[[], Any], calls: int, arm: tuple[Callable[[], Any], Callable[[Any], Any]] | None
) -> dict[str, Any]:
    """One window: its wall time (the tool's start and stop included), the time spent in the
    tool's start and stop calls alone, its joules and the tool's details."""
    t0 = time.perf_counter()
    handle = arm[0]() if arm else None
    t1 = time.perf_counter()
    for _ in range(calls):
        step()
    t2 = time.perf_counter()
    energy_j, details = arm[1](handle) if arm else (None, {})
    t3 = time.perf_counter()
    return {
        "wall_s": t3 - t0,
        "start_stop_s": (t1 - t0) + (t3 - t2),
        "energy_j": energy_j,
        "details": details,
    }


def _first_figure(
    make: Callable[[], Any], arm_of: Callable[[Any], Any], step: Callable[[], Any], calls: int
) -> tuple[Any, dict[str, Any]]:
    """Construct a tool, measure one window, and time it from construction to the figure."""
    t0 = time.perf_counter()
    error = None
    tool = None
    energy_j = None
    details: dict[str, Any] = {}
    loop_s = 0.0
    try:
        tool = make()
        start, stop = arm_of(tool)
        handle = start()
        l0 = time.perf_counter()
        for _ in range(calls):
            step()
        loop_s = time.perf_counter() - l0
        energy_j, details = stop(handle)
    except Exception as exc:  # a peer that cannot measure here says so: that is a result
        error = f"{type(exc).__name__}: {exc}"
    total_s = time.perf_counter() - t0
    return tool, {
        "time_to_first_figure_s": total_s,
        "setup_s": total_s - loop_s,
        "energy_j": energy_j,
        "details": details,
        "error": error,
    }


def _side_by_side(cfg: dict[str, Any]) -> dict[str, Any]:
    attempts: list[str] = []
    _guard_network(attempts)
    threads = pin_threads(cfg["threads"])
    step = _make_step(cfg["batch_size"])
    # The harness's own warm-up, so every tool starts from the state wattwise.measure does.
    call_s = warm_up(step, cap_s=5.0).call_s
    calls = _calibrate(step, cfg["window_s"])
    items = calls * cfg["batch_size"]

    cc_logs = _capture_logs("codecarbon", logging.DEBUG)
    zeus_logs = _capture_logs("zeus", logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Both probe for AMD GPUs at import and print about it; keep that text, don't show it.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            from codecarbon import OfflineEmissionsTracker
            from zeus.monitor import ZeusMonitor
        _drop_stream_handlers("codecarbon")  # added at import; our handler keeps the records

        from wattwise.measure.meters import create_meter

        def make_tracker(log_level: str) -> Any:
            tracker = OfflineEmissionsTracker(
                country_iso_code=cfg["country_iso_code"],
                measure_power_secs=cfg["codecarbon_measure_power_secs"],
                tracking_mode="process",
                output_methods=[],  # no CSV, no API: nothing leaves the process
                log_level=log_level,
                project_name="wattwise-bench",
            )
            _drop_stream_handlers("codecarbon")
            return tracker

        first: dict[str, Any] = {}
        meter, first["wattwise"] = _first_figure(
            lambda: create_meter("auto", "cpu"), _wattwise_arm, step, calls
        )
        # "info" here so the results keep what CodeCarbon says while choosing its CPU model.
        _, first["codecarbon"] = _first_figure(
            lambda: make_tracker("info"), _codecarbon_arm, step, calls
        )
        cc_setup_logs = list(cc_logs.lines)
        monitor, first["zeus"] = _first_figure(
            lambda: ZeusMonitor(gpu_indices=[]), _zeus_arm, step, calls
        )
        _, zeus_cpu0 = _first_figure(
            lambda: ZeusMonitor(gpu_indices=[], cpu_indices=[0]), _zeus_arm, step, 1
        )
        zeus_setup_logs = list(zeus_logs.lines)
        tracker = make_tracker("error")
        cc_mode = _codecarbon_mode(tracker)
    arms = {
        "none": None,
        "wattwise": _wattwise_arm(meter),
        "codecarbon": _codecarbon_arm(tracker),
        "zeus": _zeus_arm(monitor),
    }

    for name in ARMS:  # one discarded round: first-call costs of each tool's start/stop
        _window(step, calls, arms[name])
    rounds: list[dict[str, Any]] = []
    rounds_start = time.perf_counter()
    for r in range(cfg["repeats"]):
        # A busy machine can stretch a window many times over; keep the run bounded.
        if r >= 3 and time.perf_counter() - rounds_start > cfg["max_rounds_s"]:
            break
        order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
        row: dict[str, Any] = {"order": list(order)}
        for name in order:
            row[name] = _window(step, calls, arms[name])
        rounds.append(row)

    return {
        "threads": threads,
        "rounds_run": len(rounds),
        "rounds_cut_short": len(rounds) < cfg["repeats"],
        "call_s_after_warmup": call_s,
        "calls_per_window": calls,
        "items_per_window": items,
        "first_figure": first,
        "zeus_cpu_indices_0": zeus_cpu0,
        "codecarbon_mode": cc_mode,
        "peer_import_output": printed.getvalue().strip().splitlines(),
        "codecarbon_setup_logs": cc_setup_logs,
        "zeus_setup_logs": zeus_setup_logs,
        "python_warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
        "wattwise_meter": meter.describe(),
        "rounds": rounds,
        "network_attempts": attempts,
    }


def _codecarbon_mode(tracker: Any) -> dict[str, Any]:
    """Which CPU and RAM models CodeCarbon chose (private attributes: read defensively)."""
    out: dict[str, Any] = {"hardware": None, "cpu_mode": None, "cpu_tdp_w": None}
    try:
        tracker._ensure_hardware_ready()
        out["hardware"] = list(tracker._conf.get("hardware", []))
        out["cpu_model"] = tracker._conf.get("cpu_model")
        for part in tracker._hardware:
            if type(part).__name__ == "CPU":
                out["cpu_mode"] = getattr(part, "_mode", None)
                out["cpu_tdp_w"] = getattr(part, "_tdp", None)
    except Exception as exc:  # a newer CodeCarbon may have moved these
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# --- our full harness, from the parent (it spawns its own child) ---


def _measure_runs(runs: int, batch_size: int, threads: int | None) -> list[dict[str, Any]]:
    x = torch.randn(1, 1, 8, 8)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        m = wattwise.measure(DigitsCNN, x, batch_size=batch_size, threads=threads)
        data = m.to_dict()
        data["time_to_first_figure_s"] = time.perf_counter() - t0
        out.append(data)
    return out


# --- summary ---


def _summarise(side: dict[str, Any], harness: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = side["rounds"]
    items = side["items_per_window"]
    base = [r["none"]["wall_s"] for r in rounds]
    window_s = statistics.median(base)
    tools: dict[str, Any] = {}
    for name in ARMS[1:]:
        diffs = [r[name]["wall_s"] - r["none"]["wall_s"] for r in rounds]
        energies = [r[name]["energy_j"] for r in rounds]
        per_item = [e / items for e in energies if e is not None]
        first = side["first_figure"][name]
        start_stop = [r[name]["start_stop_s"] for r in rounds]
        tools[name] = {
            "start_stop_rel": statistics.median(start_stop) / window_s,
            "start_stop_s": statistics.median(start_stop),
            "overhead_rel": statistics.median(diffs) / window_s,
            "overhead_s_per_window": statistics.median(diffs),
            "overhead_rel_each": [d / window_s for d in diffs],
            "energy_j_per_item": per_item,
            "energy_j_per_item_median": statistics.median(per_item) if per_item else None,
            "energy_cv": _stats.cv(per_item) if len(per_item) == len(rounds) else None,
            "windows_with_a_figure": len(per_item),
            "time_to_first_figure_s": first["time_to_first_figure_s"],
            "setup_s": first["setup_s"],
        }
    e = [h["energy_j_per_item"] for h in harness]
    tools["wattwise.measure"] = {
        "harness_overhead_rel": [h["harness_overhead_rel"] for h in harness],
        "energy_j_per_item": e,
        "energy_j_per_item_median": statistics.median(e) if e else None,
        "energy_cv": _stats.cv(e) if e else None,
        "time_to_first_figure_s": [h["time_to_first_figure_s"] for h in harness],
        "windows": [h["windows"] for h in harness],
        "converged": [h["converged"] for h in harness],
    }
    return {"window_s_median": window_s, "window_cv": _stats.cv(base), "tools": tools}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    imports = {m: _import_s(m) for m in ("wattwise", "codecarbon", "zeus.monitor")}
    cfg = {
        "batch_size": args.batch_size,
        "window_s": args.window_s,
        "repeats": args.repeats,
        "threads": args.threads,
        "country_iso_code": args.country,
        "codecarbon_measure_power_secs": args.codecarbon_measure_power_secs,
        "max_rounds_s": args.max_rounds_s,
    }
    side = run_isolated(
        _side_by_side,
        cfg,
        threads=args.threads,
        timeout_s=args.max_rounds_s * 2 + 300.0,
        what="side-by-side run",
    )
    harness = _measure_runs(args.measure_runs, args.batch_size, args.threads)
    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hardware": hardware_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("wattwise", "codecarbon", "zeus")},
        "model": "DigitsCNN (digits task), inference",
        "config": {**cfg, "measure_runs": args.measure_runs},
        "import_s": imports,
        "side_by_side": side,
        "harness_runs": harness,
        "summary": _summarise(side, harness),
        "bench_wall_s": time.perf_counter() - t_start,
    }


# --- writing ---


def _fmt_j(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e6:.1f} µJ"


def _fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2%}"


def _reports(result: dict[str, Any]) -> dict[str, str]:
    """Column 4: what each tool hands back on this machine, in words."""
    side = result["side_by_side"]
    first = side["first_figure"]
    meter = side["wattwise_meter"]
    row = meter.get("model_row", {})
    cc = side["codecarbon_mode"]
    cc_details = first["codecarbon"]["details"]
    zeus = first["zeus"]
    zeus0 = side["zeus_cpu_indices_0"]
    ours = (
        f"joules per window, source `{meter['source']}`, ±{meter['uncertainty']:.0%}: "
        f"{row.get('min_w')}–{row.get('max_w')} W per vCPU × {meter.get('vcpus')} vCPU(s) "
        f"({row.get('label')}), CPU time + idle share"
    )
    if first["codecarbon"]["error"]:
        theirs = f"raised {first['codecarbon']['error']}"
    else:
        theirs = (
            f"kWh (no source label; logs warnings that it estimates): CPU mode "
            f"`{cc.get('cpu_mode')}` with a {cc.get('cpu_tdp_w')} W default TDP for the "
            f"unknown CPU, scaled by process CPU load; RAM a constant "
            f"{cc_details.get('ram_power_w', 0):.0f} W"
        )
    shown = re.sub(r"time=[0-9.e-]+", "time=…", str(zeus["details"].get("measurement")))
    zeus_text = (
        f"`{shown if zeus['error'] is None else zeus['error']}` (empty dicts, "
        f"`total_energy` = {zeus['details'].get('total_energy')}); with `cpu_indices=[0]`: "
        f"{zeus0['error'] or 'a figure'}"
    )
    return {"wattwise": ours, "codecarbon": theirs, "zeus": zeus_text}


def write(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "meters.json", json.dumps(result, indent=2, default=str) + "\n")
    side = result["side_by_side"]
    tools = result["summary"]["tools"]
    hw = result["hardware"]
    cfg = result["config"]
    reports = _reports(result)
    cc_label = f"estimated:codecarbon-{side['codecarbon_mode'].get('cpu_mode')}"
    h = tools["wattwise.measure"]
    labels = {
        "wattwise": f"{side['wattwise_meter']['source']} ±{side['wattwise_meter']['uncertainty']:.0%}",
        "codecarbon": cc_label,
        "zeus": "no figure",
    }
    usage = {
        "wattwise": "`create_meter('auto', 'cpu')`, `start()`/`stop()`",
        "codecarbon": "`OfflineEmissionsTracker(country_iso_code=..., tracking_mode='process')`, `start_task()`/`stop_task()`",
        "zeus": "`ZeusMonitor(gpu_indices=[])`, `begin_window()`/`end_window()`",
    }

    def cv(value: float | None) -> str:
        return "—" if value is None else f"{value:.2%}"

    rows = []
    for name in ("wattwise", "codecarbon", "zeus"):
        t = tools[name]
        figure = t["energy_j_per_item_median"]
        rows.append(
            f"| {name} | {usage[name]} | {t['start_stop_s'] * 1e3:.2f} ms = "
            f"{t['start_stop_rel']:.3%} | {_fmt_pct(t['overhead_rel'])} | "
            f"{cv(t['energy_cv'])} | {t['setup_s']:.3f} s + one window = "
            f"{t['time_to_first_figure_s']:.2f} s | {reports[name]} | "
            f"{_fmt_j(figure) if figure is not None else 'no figure'} (`{labels[name]}`) |"
        )
    ttff = h["time_to_first_figure_s"]
    rows.append(
        f"| wattwise.measure | `wattwise.measure(DigitsCNN, x, batch_size={cfg['batch_size']})` "
        f"| {max(h['harness_overhead_rel']):.3%} (its own `harness_overhead_rel`, worst of "
        f"{len(ttff)} calls) | — | {cv(h['energy_cv'])} over {len(ttff)} calls | "
        f"{statistics.median(ttff):.1f} s (median of {len(ttff)}: child process, warm-up, idle, "
        f"{statistics.median(h['windows']):.0f} windows, converged {sum(h['converged'])}/"
        f"{len(ttff)}) | a `Measurement` with `energy_source`, `energy_uncertainty` | "
        f"{_fmt_j(h['energy_j_per_item_median'])} (`{labels['wattwise']}`) |"
    )
    wat = tools["wattwise"]["energy_j_per_item_median"]
    cc = tools["codecarbon"]["energy_j_per_item_median"]
    cc_first = side["first_figure"]["codecarbon"]["details"]
    cc_mode = side["codecarbon_mode"].get("cpu_mode")
    tdp_w = side["codecarbon_mode"].get("cpu_tdp_w")
    vcpus = hw.get("cpus_allowed") or 1
    estimated = side["wattwise_meter"]["source"].startswith("estimated:")
    ratio = f"CodeCarbon's J/item is {cc / wat:.1f}× ours here. " if wat and cc else ""
    if cc_mode == "cpu_load" and tdp_w:
        cc_bullet = (
            f"* {ratio}Its CPU part is process CPU time × {tdp_w} W / {vcpus} vCPUs "
            f"({tdp_w / vcpus:g} W per thread: its TDP table's default when it does not know "
            f"the CPU, as its log says); its RAM part is a constant "
            f"{cc_first.get('ram_power_w', 0):.0f} W × wall time whatever the process uses, "
            "which dominates a small model. Ours uses per-vCPU SPECpower coefficients for the "
            "detected micro-architecture plus the idle share of the pinned vCPUs. Neither is a "
            "measurement; ours says so in every figure (`energy_source`, ±40%), CodeCarbon only "
            "in its log."
        )
    else:
        cc_bullet = f"* {ratio}CodeCarbon's CPU mode here: `{cc_mode}`."
    if tools["zeus"]["energy_j_per_item_median"] is None:
        zeus_bullet = (
            "* Zeus only reads counters (NVML, RAPL, Apple SoC); with none it returns an empty "
            "result whose `total_energy` is 0, without a warning, and raises with "
            "`cpu_indices=[0]`. A caller who reads `total_energy` gets zero joules."
        )
    else:
        zeus_bullet = "* Zeus read counters here (its figure sums GPU, CPU and DRAM domains)."
    noise = result["summary"]["window_cv"]
    machine_bullet = (
        "* No energy counter here: both figures are models of CPU time, not measurements."
        if estimated
        else f"* This machine has a counter: our meter is `{side['wattwise_meter']['source']}`."
    )
    lines = [
        "# Measurement vs peers: wattwise, CodeCarbon, Zeus",
        "",
        f"Generated by `benchmarks/bench_meters.py` on {result['date']} in {result['bench_wall_s']:.0f} s. "
        f"Raw numbers: `meters.json`.",
        f"Machine: {hw.get('cpu_model')}, {hw.get('cpus_allowed')} vCPUs allowed, "
        f"{len(hw.get('cuda_devices') or [])} GPUs; our meter `{side['wattwise_meter']['source']}`; torch {result['torch']}, Python {result['python']}, "
        f"codecarbon {result['versions']['codecarbon']}, zeus {result['versions']['zeus']}.",
        f"Workload: {result['model']}, batch {cfg['batch_size']}, {side['calls_per_window']} calls "
        f"({side['items_per_window']} items) per window, bare window "
        f"{result['summary']['window_s_median']:.2f} s (median; its CV over the rounds "
        f"{noise:.1%}, a gauge of how busy the machine was), {side['threads']} thread(s); "
        f"{side['rounds_run']} rounds"
        + (
            f" (of {cfg['repeats']} asked: the {cfg['max_rounds_s']:.0f} s cap cut it short)"
            if side["rounds_cut_short"]
            else ""
        )
        + ", the four arms (bare, wattwise, CodeCarbon, Zeus) "
        "interleaved with a rotating order after a warm-up and one discarded round, all in one "
        "child process with the harness's allocator settings.",
        "",
        "| tool | usage | overhead: start + stop calls, share of the window | overhead: paired "
        "difference with the bare loop | J/item CV over the rounds | time to the first figure "
        "| what it reports here | J/item (label) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "What it means:",
        "",
        machine_bullet,
        cc_bullet,
        zeus_bullet,
        "* Sampling: CodeCarbon's `measure_power_secs` (default 15 s, here "
        f"{cfg['codecarbon_measure_power_secs']} s) paces its periodic scheduler, which "
        "`start_task()` pauses; a 1 s monitor thread samples instead, and `stop_task()` takes "
        "a final sample, so a window shorter than either period still gets a figure covering "
        "its whole length. In process mode the CPU part comes from the CPU-time delta, so the "
        "period does not change it.",
        "* Overhead, two ways: the time inside the tool's own start and stop calls (precise, but "
        "blind to background threads such as CodeCarbon's 1 s monitor), and the median paired "
        "difference of whole windows against the bare loop in the same round (sees everything, "
        "but on a busy machine its noise is of the order of the bare window's CV). Each tool's "
        "setup (constructing it; CodeCarbon's hardware probe on its first `start_task`) is "
        "outside the windows: it is the first part of the time to the first figure.",
        "* `wattwise.measure` takes longer to its figure because it is the whole protocol (child "
        "process, warm-up until stable, idle power, windows until the 95% CI is within ±2%); the "
        "meter alone is the comparable low-level piece.",
        "",
        "Imports, fresh interpreter with torch loaded: "
        + ", ".join(f"`{m}` {s:.2f} s" for m, s in result["import_s"].items())
        + ". Network attempts in the child: "
        + (", ".join(side["network_attempts"]) or "none")
        + ".",
        "",
    ]
    atomic_write_text(out_dir / "meters.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--window-s", type=float, default=2.0, help="bare window length")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="default: all allowed cores")
    parser.add_argument("--measure-runs", type=int, default=3, help="wattwise.measure calls")
    parser.add_argument("--country", default="FRA", help="CodeCarbon's country_iso_code")
    parser.add_argument("--codecarbon-measure-power-secs", type=float, default=15.0)
    parser.add_argument(
        "--max-rounds-s",
        type=float,
        default=120.0,
        help="stop starting new rounds after this long (at least 3 rounds run)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    if args.repeats < 2 or args.measure_runs < 1:
        parser.error("--repeats must be >= 2 and --measure-runs >= 1")
    for module in ("codecarbon", "zeus"):
        # find_spec, not import: the peers are imported in the child, where their logs are kept.
        if importlib.util.find_spec(module) is None:
            parser.exit(2, f"{module} is missing: pip install -e '.[bench]'\n")
    result = run(args)
    write(result, args.out)
    t = result["summary"]["tools"]
    print(
        "overhead "
        + ", ".join(f"{n} {_fmt_pct(t[n]['overhead_rel'])}" for n in ARMS[1:])
        + "; J/item "
        + ", ".join(f"{n} {_fmt_j(t[n]['energy_j_per_item_median'])}" for n in ARMS[1:])
    )


if __name__ == "__main__":
    main()
