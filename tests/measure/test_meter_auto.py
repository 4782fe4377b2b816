"""create_meter("auto"), probe_meters, and a contract every registered meter must keep."""

from __future__ import annotations

import math
import time

import pytest

from wattwise.errors import InputError, UnavailableError, UnknownNameError
from wattwise.measure.meters import (
    METERS,
    Availability,
    EstimateMeter,
    Meter,
    RaplMeter,
    create_meter,
    probe_meters,
)

HAS_RAPL = RaplMeter.probe("cpu").ok
HAS_GPU = dict(probe_meters("cuda"))["nvml"].ok


def test_registry_holds_the_three_meters() -> None:
    assert METERS.names() == ["estimate", "nvml", "rapl"]
    assert [name for name, _ in probe_meters("cpu")] == ["estimate", "nvml", "rapl"]


@pytest.mark.skipif(HAS_RAPL, reason="RAPL is readable here, so auto picks it")
def test_auto_picks_the_estimate_for_cpu_without_rapl() -> None:
    meter = create_meter("auto", "cpu")
    assert isinstance(meter, EstimateMeter)
    assert meter.source.startswith("estimated:")


@pytest.mark.skipif(not HAS_RAPL, reason="no readable RAPL here")
def test_auto_picks_rapl_when_readable() -> None:
    assert isinstance(create_meter("auto", "cpu"), RaplMeter)


@pytest.mark.skipif(HAS_GPU, reason="an NVIDIA GPU is present here")
def test_auto_for_cuda_without_a_gpu_names_the_problem() -> None:
    with pytest.raises(UnavailableError) as caught:
        create_meter("auto", "cuda")
    message = str(caught.value)
    assert message.startswith("no energy meter works for 'cuda' here (nvml: ")
    assert dict(probe_meters("cuda"))["nvml"].reason in message
    assert "\n" not in message


def test_bad_names_devices_and_options() -> None:
    with pytest.raises(UnknownNameError, match="choose from: estimate, nvml, rapl"):
        create_meter("wattmeter", "cpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        create_meter("auto", "tpu")
    with pytest.raises(InputError, match="unknown device"):
        probe_meters("npu")
    with pytest.raises(InputError, match="takes no option bogus"):
        create_meter("estimate", "cpu", bogus=1)


# --- the contract, over every registered meter ----------------------------------------------------


@pytest.mark.parametrize("name", METERS.names())
def test_meter_contract(name: str) -> None:
    cls = METERS.get(name)
    assert issubclass(cls, Meter)
    assert cls.name == name
    assert cls.source.startswith(("measured:", "estimated:"))
    assert 0 < cls.uncertainty < 1
    assert cls.min_window_s > 0
    for device in ("cpu", "cuda"):
        availability = cls.probe(device)
        assert isinstance(availability, Availability)
        assert availability.reason or availability.ok, f"{name} on {device}: no reason given"
        assert "\n" not in availability.reason
        if not availability:
            with pytest.raises(UnavailableError):
                create_meter(name, device)
            continue
        meter = create_meter(name, device)
        try:
            mark = meter.start()
            time.sleep(meter.min_window_s)
            reading = meter.stop(mark)
            assert math.isfinite(reading.energy_j) and reading.energy_j > 0
            assert reading.time_s >= meter.min_window_s * 0.9
            assert reading.energy_j == pytest.approx(sum(reading.domains.values()), rel=1e-9)
            assert meter.describe()["source"] == meter.source
        finally:
            meter.close()
