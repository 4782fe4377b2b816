"""Windows disturbed by other processes: detected from /proc/stat, repeated, and flagged.

The arithmetic is checked on /proc/stat-shaped files written here; the harness is checked on a
real measurement in a real child process while real busy-loop processes (one per core) start
part-way through it, against a control measured on the quiet machine.

Other people's tests share this machine, so "quiet" cannot be assumed: the control first
samples /proc/stat and is only judged when the machine is idle; otherwise it is skipped,
saying how busy the machine was.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from wattwise.cli import app
from wattwise.cli._measure import disturbed_cell
from wattwise.measure import Measurement, measure
from wattwise.measure._harness import (
    FOREIGN_CORES_MAX,
    MAX_REPEATED_WINDOWS,
    CpuMark,
    CpuWatch,
    _Disturbance,
    foreign_cores,
    foreign_cpu_s,
    is_disturbed,
    parse_proc_stat,
)

# Two CPUs, USER_HZ = 100: user nice system idle iowait irq softirq steal guest guest_nice.
STAT = """cpu  1000 20 300 5000 40 5 15 700 200 0
cpu0 500 10 150 2500 20 2 7 350 100 0
cpu1 500 10 150 2500 20 3 8 350 100 0
intr 123 0 0
ctxt 4567
btime 1700000000
procs_running 3
"""


# A result dict as written before the disturbance fields existed.
OLD = {
    "mode": "inference",
    "device": "cpu",
    "batch_size": 1,
    "energy_j_per_item": 1e-3,
    "energy_above_idle_j_per_item": 5e-4,
    "energy_source": "estimated:cpu-ccf",
    "energy_uncertainty": 0.4,
    "idle_power_w": 1.0,
    "latency_ms_p50": 1.0,
    "latency_ms_p90": 1.2,
    "latency_ms_p99": 1.5,
    "throughput_items_per_s": 1000.0,
    "peak_memory_bytes": 1 << 20,
    "macs_per_item": 1e5,
    "params": 100,
    "co2e_g_per_million_items": 0.1,
    "grid_intensity_g_per_kwh": 480.0,
    "windows": 3,
    "window_s": 0.5,
    "ci95_rel": 0.01,
    "converged": True,
    "threads": 2,
    "isolated": True,
    "warmup_calls": 6,
    "harness_overhead_rel": 0.001,
    "notes": [],
    "schema": 1,
}


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


X = torch.randn(1, 1, 8, 8)


class _Measure(TypedDict):
    """``measure``'s keywords for these tests, typed so that ``**MEASURE`` type-checks."""

    batch_size: int
    threads: int
    max_time_s: float
    min_window_s: float
    warmup_max_s: float


# One measuring thread, windows of 0.3 s (30 ticks of /proc/stat), a short time cap.
MEASURE: _Measure = {
    "batch_size": 4,
    "threads": 1,
    "max_time_s": 2.0,
    "min_window_s": 0.3,
    "warmup_max_s": 0.5,
}
# A busy loop that ends by itself, so a crashed test cannot leave it spinning.
HOG = "import time\nend = time.monotonic() + 180\nwhile time.monotonic() < end:\n    pass\n"


# --- the arithmetic, on files shaped like /proc/stat ----------------------------------------


def test_parse_counts_busy_ticks_and_cpus() -> None:
    busy_s, cpus = parse_proc_stat(STAT, 100.0)
    # user + nice + system + irq + softirq; not idle, iowait, steal, or guest (inside user).
    assert busy_s == pytest.approx((1000 + 20 + 300 + 5 + 15) / 100)
    assert cpus == 2


def test_parse_refuses_text_without_an_aggregate_line() -> None:
    with pytest.raises(ValueError, match="no aggregate"):
        parse_proc_stat("cpu0 1 2 3 4 5 6 7\n", 100.0)
    with pytest.raises(ValueError, match="counters"):
        parse_proc_stat("cpu  1 2 3\n", 100.0)


def test_watch_reads_a_file_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    watch = CpuWatch.open(stat, ticks_per_s=100)
    assert watch is not None and watch.cpus == 2
    mark = watch.mark()
    assert mark.busy_s == pytest.approx(13.40)
    assert mark.own_s >= 0 and mark.wall_s > 0
    # The counters move: 60 more busy ticks on the aggregate line.
    stat.write_text(STAT.replace("cpu  1000", "cpu  1060", 1))
    assert watch.mark().busy_s == pytest.approx(14.00)
    # No /proc/stat (not Linux), or not one we can read: no watch, and the harness says so.
    assert CpuWatch.open(tmp_path / "missing") is None
    (tmp_path / "garbage").write_text("hello\n")
    assert CpuWatch.open(tmp_path / "garbage") is None
    unchecked = _Disturbance(None)
    assert unchecked.notes(0) == [
        "other processes' CPU load not checked: /proc/stat is unreadable here"
    ]
    assert unchecked.fields() == {
        "disturbed_windows": 0,
        "repeated_windows": 0,
        "foreign_cpu_cores": None,
    }


def test_foreign_time_is_the_machine_busy_time_less_ours() -> None:
    start = CpuMark(wall_s=10.0, busy_s=100.0, own_s=5.0)
    end = CpuMark(wall_s=11.0, busy_s=101.5, own_s=5.6)  # 1.5 s busy, 0.6 s of it ours
    assert foreign_cpu_s(start, end) == pytest.approx(0.9)
    assert foreign_cores(start, end) == pytest.approx(0.9)
    # Tick rounding can make ours exceed the machine's: never negative.
    assert foreign_cpu_s(start, CpuMark(11.0, 100.5, 5.6)) == 0.0
    assert foreign_cores(start, start) == 0.0  # no time passed


@pytest.mark.parametrize(
    ("foreign_s", "wall_s", "expected"),
    [
        (0.00, 0.5, False),  # quiet
        (0.04, 0.1, False),  # 0.4 "cores", but within 4 ticks of resolution on 2 CPUs
        (0.16, 0.5, False),  # 0.25 × 0.5 s + 0.04 s = 0.165 s allowed
        (0.17, 0.5, True),
        (0.50, 0.5, True),  # a whole core
        (1.20, 4.0, True),  # 0.3 cores over a long window
        (0.90, 4.0, False),  # 0.225 cores
    ],
)
def test_threshold_is_a_share_of_a_core_beyond_the_tick_resolution(
    foreign_s: float, wall_s: float, expected: bool
) -> None:
    start = CpuMark(wall_s=0.0, busy_s=50.0, own_s=1.0)
    end = CpuMark(wall_s=wall_s, busy_s=50.0 + 0.3 + foreign_s, own_s=1.3)
    assert is_disturbed(start, end, cpus=2, ticks_per_s=100.0) is expected
    assert FOREIGN_CORES_MAX == 0.25


def test_disturbed_windows_are_repeated_then_kept_and_flagged(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    watch = CpuWatch.open(stat, ticks_per_s=100)
    assert watch is not None
    dist = _Disturbance(watch)
    quiet = (CpuMark(0.0, 10.0, 1.0), CpuMark(1.0, 11.0, 2.0))  # all the busy time was ours
    busy = (CpuMark(0.0, 10.0, 1.0), CpuMark(1.0, 12.0, 2.0))  # one core of someone else's
    assert dist.drop(*quiet) is False
    assert [dist.drop(*busy) for _ in range(MAX_REPEATED_WINDOWS)] == [True] * 5
    assert dist.drop(*busy) is False  # repeats used up: kept, and counted as disturbed
    assert dist.drop(*quiet) is False
    assert dist.fields() == {
        "disturbed_windows": 1,
        "repeated_windows": MAX_REPEATED_WINDOWS,
        "foreign_cpu_cores": pytest.approx(1 / 3),
    }
    assert dist.notes(3) == [
        "1 of 3 windows disturbed by other processes (foreign CPU 1.0 cores); figures may be "
        "inflated; 5 disturbed window(s) were dropped and measured again"
    ]
    clean = _Disturbance(watch)
    assert clean.drop(*quiet) is False
    assert clean.notes(1) == [] and clean.fields()["disturbed_windows"] == 0
    # Past the time cap a disturbed window is kept at once: under a neighbour every window is
    # slow, and repeating them would stretch the measurement far beyond what was asked.
    late = _Disturbance(watch)
    assert late.drop(*busy, may_repeat=False) is False
    assert late.fields()["disturbed_windows"] == 1 and late.repeated == 0


def test_old_measurement_dicts_still_load() -> None:
    fields = {f.name for f in dataclasses.fields(Measurement)}
    new = {"disturbed_windows", "repeated_windows", "foreign_cpu_cores"}
    assert new <= fields
    m = Measurement.from_dict(OLD)
    assert (m.disturbed_windows, m.repeated_windows, m.foreign_cpu_cores) == (0, 0, None)
    assert not m.is_disturbed
    assert Measurement.from_dict(m.to_dict()) == m


def test_the_measure_table_shows_the_flag() -> None:
    base = Measurement.from_dict({**OLD, "windows": 8})
    assert disturbed_cell(base) == "not checked"
    quiet = dataclasses.replace(base, foreign_cpu_cores=0.01)
    assert disturbed_cell(quiet) == "0 of 8"
    flagged = dataclasses.replace(
        base, disturbed_windows=3, repeated_windows=5, foreign_cpu_cores=0.94
    )
    assert disturbed_cell(flagged) == "3 of 8, foreign CPU 0.9 cores (+5 repeated)"
    assert disturbed_cell(dataclasses.replace(quiet, repeated_windows=2)) == "0 of 8 (+2 repeated)"


@pytest.mark.slow
def test_wattwise_measure_prints_the_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path))
    args = ["measure", "digits_cnn", "--max-time-s", "0.5", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "disturbed windows" in line)
    assert " of " in row, row


# --- the harness, with real busy processes ------------------------------------------------


def _machine_foreign_cores(seconds: float = 1.0) -> float:
    """CPU cores other processes use right now: this test process sleeps meanwhile."""
    watch = CpuWatch.open()
    assert watch is not None
    start = watch.mark()
    time.sleep(seconds)
    return foreign_cores(start, watch.mark())


def _start_hogs_once_measuring(stop: threading.Event, hogs: list[subprocess.Popen]) -> None:
    """Wait until the measuring child exists and has had time to start, then start one busy
    loop per core: the hogs arrive part-way through the measurement, as a neighbour would."""
    deadline = time.monotonic() + 60
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        if stop.wait(0.05):
            return
    if stop.wait(1.0):
        return
    for _ in range(len(os.sched_getaffinity(0))):
        hogs.append(subprocess.Popen([sys.executable, "-c", HOG]))


@pytest.fixture(scope="module")
def hogged() -> Iterator[Measurement]:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat: foreign load is detected on Linux only")
    stop = threading.Event()
    hogs: list[subprocess.Popen] = []
    starter = threading.Thread(target=_start_hogs_once_measuring, args=(stop, hogs))
    starter.start()
    try:
        m = measure(SmallNet, X, **MEASURE)
    finally:
        stop.set()
        starter.join()
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert hogs, "the busy loops never started: the measurement ended first"
    yield m


@pytest.mark.slow
def test_busy_loops_started_mid_measurement_are_flagged(hogged: Measurement) -> None:
    m = hogged
    assert m.repeated_windows > 0 or m.disturbed_windows > 0, m
    assert m.repeated_windows <= MAX_REPEATED_WINDOWS
    assert m.foreign_cpu_cores is not None
    if m.disturbed_windows:
        assert m.is_disturbed
        assert any(
            f"{m.disturbed_windows} of {m.windows} windows disturbed by other processes" in note
            and "figures may be inflated" in note
            for note in m.notes
        ), m.notes
    else:  # the hogs came and went while disturbed windows were still being repeated
        assert any("dropped and measured again" in note for note in m.notes), m.notes
    # The flag travels with the result.
    doc = m.to_dict()
    assert doc["repeated_windows"] == m.repeated_windows
    assert doc["disturbed_windows"] == m.disturbed_windows


def _measure_counting_others() -> tuple[Measurement, float]:
    """Measure, and count independently the CPU seconds processes other than this test and
    its children (the measuring child is one, reaped by the time measure() returns) used
    meanwhile: the truth the control is judged against."""
    watch = CpuWatch.open()
    assert watch is not None
    before, children_0 = watch.mark(), _children_cpu_s()
    m = measure(SmallNet, X, **MEASURE)
    after, children_s = watch.mark(), _children_cpu_s() - children_0
    return m, max(0.0, foreign_cpu_s(before, after) - children_s)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for_quiet(timeout_s: float = 30.0) -> float:
    """Wait (up to ``timeout_s``) for a second in which other processes use under half the
    threshold; returns what the last second measured."""
    deadline = time.monotonic() + timeout_s
    background = _machine_foreign_cores()
    while background > FOREIGN_CORES_MAX / 2 and time.monotonic() < deadline:
        background = _machine_foreign_cores()
    return background


@pytest.mark.slow
def test_a_quiet_measurement_is_not_flagged(hogged: Measurement) -> None:
    background = _wait_for_quiet()
    if background > FOREIGN_CORES_MAX / 2:
        pytest.skip(
            f"other processes use {background:.2f} cores of this machine right now: "
            "a quiet control cannot be measured here"
        )
    m, others_s = _measure_counting_others()
    # Below this, no window (0.3 s) can have held a quarter of a core of someone else's work.
    quiet_s = FOREIGN_CORES_MAX * float(MEASURE["min_window_s"])
    if others_s > quiet_s:
        pytest.skip(
            f"other processes used {others_s:.2f} CPU-s during the control (> {quiet_s:.3f}): "
            "the machine was not quiet"
        )
    assert m.disturbed_windows == 0, m.notes
    assert not any("disturbed by other processes" in note for note in m.notes), m.notes
    assert m.foreign_cpu_cores is not None and m.foreign_cpu_cores < FOREIGN_CORES_MAX
    # Against the busy loops: the same measurement saw far more of other processes' CPU.
    assert hogged.foreign_cpu_cores is not None
    assert hogged.foreign_cpu_cores > m.foreign_cpu_cores + FOREIGN_CORES_MAX
