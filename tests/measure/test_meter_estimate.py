"""The estimate meter: CCF's linear model over process CPU time, and its coefficient table."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

from wattwise.errors import InputError, UnavailableError, UnknownNameError
from wattwise.measure.meters import EstimateMeter, Meter, Reading, create_meter
from wattwise.measure.meters._cpu_power import CPU_POWER, FALLBACK, detect_family, read_cpuinfo
from wattwise.measure.meters.estimate import ENV_WATTS

MIN_W, MAX_W = 0.5, 2.5


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_WATTS, raising=False)


def busy(cpu_seconds: float, max_wall_s: float = 10.0) -> None:
    """Spin until this thread has used ``cpu_seconds`` of CPU: on a loaded machine that takes
    longer than the same wall time, and the test must not depend on the load."""
    end = time.perf_counter() + max_wall_s
    x = 0
    while time.thread_time() < cpu_seconds and time.perf_counter() < end:
        x += 1


def test_busy_thread_costs_its_cpu_time_plus_the_idle_share() -> None:
    meter = EstimateMeter(min_w_per_vcpu=MIN_W, max_w_per_vcpu=MAX_W)
    vcpus = len(os.sched_getaffinity(0))
    wall_0, cpu_0 = time.perf_counter(), time.process_time()
    mark = meter.start()
    worker = threading.Thread(target=busy, args=(0.3,))
    worker.start()
    worker.join()
    reading = meter.stop(mark)
    wall_s, cpu_s = time.perf_counter() - wall_0, time.process_time() - cpu_0

    expected = cpu_s * (MAX_W - MIN_W) + wall_s * MIN_W * vcpus
    assert reading.energy_j == pytest.approx(expected, rel=0.02)
    # The thread's 0.3 s of CPU is there: process_time() sums the threads of the process.
    assert 0.3 * (MAX_W - MIN_W) <= reading.domains["cpu-active"] <= cpu_s * (MAX_W - MIN_W)
    assert reading.domains["cpu-idle-share"] == pytest.approx(
        reading.time_s * MIN_W * vcpus, rel=1e-9
    )
    assert reading.energy_j == pytest.approx(sum(reading.domains.values()), rel=1e-12)
    assert all(math.isfinite(v) and v > 0 for v in [reading.energy_j, *reading.domains.values()])


def test_sleeping_costs_about_the_idle_share_only() -> None:
    meter = EstimateMeter(min_w_per_vcpu=MIN_W, max_w_per_vcpu=MAX_W)
    mark = meter.start()
    time.sleep(0.2)
    reading = meter.stop(mark)
    idle_j = reading.domains["cpu-idle-share"]
    assert reading.time_s >= 0.2
    assert idle_j == pytest.approx(reading.time_s * MIN_W * meter.vcpus, rel=1e-9)
    assert 0 <= reading.domains["cpu-active"] < 0.05 * idle_j
    assert reading.energy_j > 0 and math.isfinite(reading.energy_j)
    assert reading.power_w == pytest.approx(meter.idle_power_w, rel=0.05)


def test_a_reading_as_pinned_keeps_the_work_and_the_idle_share_of_those_vcpus() -> None:
    meter = EstimateMeter(min_w_per_vcpu=MIN_W, max_w_per_vcpu=MAX_W)
    meter.vcpus = 4
    reading = Reading(5.0, 2.0, {"cpu-active": 3.0, "cpu-idle-share": 2.0})
    one = meter.as_pinned(reading, 1)
    assert one.domains == {"cpu-active": 3.0, "cpu-idle-share": 0.5}
    assert one.energy_j == pytest.approx(3.5) and one.time_s == 2.0
    assert meter.as_pinned(reading, 4) is reading  # pinned to all it may use: as read
    assert meter.as_pinned(reading, 8) is reading
    # A counter reads the package however the process is pinned.
    assert Meter.as_pinned(meter, reading, 1) is reading


def test_labels_and_description() -> None:
    meter = EstimateMeter()
    assert meter.source.startswith("estimated:")
    assert meter.source == "estimated:cpu-ccf"
    described = meter.describe()
    assert described["source"] == meter.source
    assert described["model_row"] == meter.model_row.to_dict()
    assert described["vcpus"] == meter.vcpus >= 1
    assert meter.idle_power_w == pytest.approx(meter.model_row.min_w * meter.vcpus)
    assert 0 < meter.uncertainty < 1


def test_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_WATTS, "1.5, 4")
    row = EstimateMeter().model_row
    assert (row.min_w, row.max_w) == (1.5, 4.0)
    assert ENV_WATTS in row.source
    # An explicit option beats the environment.
    row = EstimateMeter(max_w_per_vcpu=6).model_row
    assert (row.min_w, row.max_w) == (1.5, 6.0)


@pytest.mark.parametrize("bad", ["2", "a,b", "0,1", "3,1", "1,inf", "1,2,3"])
def test_bad_env_override_is_an_input_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(ENV_WATTS, bad)
    with pytest.raises(InputError, match=ENV_WATTS if bad != "3,1" else "must not exceed"):
        EstimateMeter()
    availability = EstimateMeter.probe("cpu")
    assert not availability and availability.reason


def test_options() -> None:
    row = EstimateMeter(cpu_family="intel-haswell").model_row
    assert row == CPU_POWER["intel-haswell"]
    with pytest.raises(UnknownNameError, match="intel-haswell"):
        EstimateMeter(cpu_family="pentium-4")
    with pytest.raises(InputError, match="min_w_per_vcpu"):
        EstimateMeter(min_w_per_vcpu=-1)
    with pytest.raises(UnavailableError, match="CPUs only"):
        EstimateMeter("cuda")
    meter = create_meter("estimate", "cpu", min_w_per_vcpu=0.1)
    assert isinstance(meter, EstimateMeter)
    assert meter.model_row.min_w == 0.1


def test_every_row_is_sane_and_cited() -> None:
    assert FALLBACK in CPU_POWER
    for family, row in CPU_POWER.items():
        assert row.family == family
        assert 0 < row.min_w < row.max_w < 20, family
        assert len(row.source) > 20, family


@pytest.mark.parametrize(
    ("info", "family"),
    [
        ({"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2"}, "amd-zen5"),
        ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1"}, "amd-zen3"),
        ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17"}, "amd-zen4"),
        ({"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "49"}, "amd-zen2"),
        ({"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "1"}, "amd-zen1"),
        (
            {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "85", "stepping": "4"},
            "intel-skylake",
        ),
        (
            {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "85", "stepping": "7"},
            "intel-cascadelake",
        ),
        ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "63"}, "intel-haswell"),
        ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "106"}, "intel-icelake"),
        ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143"}, "intel-sapphirerapids"),
        ({"cpu implementer": "0x41", "cpu part": "0xd0c"}, "arm-neoverse-n1"),
        ({"cpu implementer": "0x41", "cpu part": "0xd4f"}, "arm-neoverse-v"),
        ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "1"}, FALLBACK),
        ({}, FALLBACK),
    ],
)
def test_detect_family(info: dict[str, str], family: str) -> None:
    assert detect_family(info) == family


def test_read_cpuinfo_takes_the_first_block(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
        "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n"
    )
    info = read_cpuinfo(path)
    assert info["vendor_id"] == "AuthenticAMD"
    assert detect_family(info) == "amd-zen5"
    assert read_cpuinfo(tmp_path / "missing") == {}
