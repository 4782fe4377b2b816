"""NVML meter: the real thing on a GPU (``-m gpu``), its absence here, and its logic on a fake NVML.

A fake ``pynvml`` (put in ``sys.modules``) stands in for the driver, which cannot exist on a CPU
machine, to test device numbering, the counter checks and the power-polling fallback.
"""

from __future__ import annotations

import sys
import threading
import time
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from wattwise.errors import InputError, UnavailableError
from wattwise.measure.meters import (
    CounterError,
    NvmlMeter,
    create_meter,
    nvml_counter_probe,
    probe_meters,
)
from wattwise.measure.meters.nvml import (
    PowerIntegrator,
    _summarise_probe,
    cuda_ordinal,
    resolve_handle,
)

HAS_GPU = NvmlMeter.probe("cuda").ok
needs_no_gpu = pytest.mark.skipif(HAS_GPU, reason="an NVIDIA GPU is present here")


# --- without a GPU ------------------------------------------------------------------------------


@needs_no_gpu
def test_probe_says_why_nvml_is_unavailable() -> None:
    found = dict(probe_meters("cuda"))
    assert not found["nvml"]
    assert found["nvml"].reason  # e.g. "nvidia-ml-py installed but no NVIDIA driver: NVMLError_…"
    with pytest.raises(UnavailableError, match="nvml meter: ") as caught:
        create_meter("nvml", "cuda")
    assert "\n" not in str(caught.value)


def test_nvml_is_not_for_the_cpu() -> None:
    assert "not a CUDA device" in NvmlMeter.probe("cpu").reason
    with pytest.raises(UnavailableError, match="not 'cuda'"):
        NvmlMeter("cpu")
    with pytest.raises(InputError):
        NvmlMeter("cuda:x")


@pytest.mark.parametrize(("device", "ordinal"), [("cuda", 0), ("cuda:0", 0), ("cuda:3", 3)])
def test_cuda_ordinal(device: str, ordinal: int) -> None:
    assert cuda_ordinal(device) == ordinal


@pytest.mark.parametrize("device", ["cpu", "cuda:", "cuda:-1", "cuda:x", "gpu:0"])
def test_cuda_ordinal_rejects(device: str) -> None:
    with pytest.raises(InputError):
        cuda_ordinal(device)


# --- a fake pynvml ------------------------------------------------------------------------------


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class FakeNvml(ModuleType):
    """The few pynvml functions the meter calls, over ``uuids`` boards; a module, as what
    ``sys.modules`` holds must be."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_SUCCESS = 0

    def __init__(self, uuids: list[str], counter: bool = True, power_w: float = 100.0) -> None:
        super().__init__("pynvml")
        self.uuids = uuids
        self.counter = counter
        self.power_w = power_w
        self.energy_mj = 1_000_000
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < len(self.uuids):
            raise FakeNVMLError(2)
        return SimpleNamespace(index=index)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self.uuids[handle.index]

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self.counter:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return int(self.power_w * 1000)


UUIDS = ["GPU-aaaa1111", "GPU-bbbb2222", "GPU-cccc3333"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(UUIDS)
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # what `import pynvml` then returns
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


@pytest.mark.parametrize(
    ("visible", "ordinal", "index"),
    [
        (None, 2, 2),
        ("2,0", 0, 2),
        ("2,0", 1, 0),  # cuda:1 is the second visible device
        ("GPU-bbbb2222", 0, 1),
        ("GPU-cccc", 0, 2),  # a unique prefix, as CUDA accepts
        ("1, GPU-aaaa1111", 1, 0),
        ("1,junk,0", 0, 1),
    ],
)
def test_visible_devices(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch, visible: str | None, ordinal: int, index: int
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    _handle, found = resolve_handle(fake, ordinal)
    assert found == index


@pytest.mark.parametrize(
    ("visible", "ordinal", "message"),
    [
        ("", 0, "shows 0 GPU"),
        ("1,junk,0", 1, "shows 1 GPU"),  # CUDA stops at the first bad entry
        ("7", 0, "names GPU 7"),
        ("GPU-", 0, "more than one"),
        ("GPU-zzzz", 0, "matches no GPU"),
        ("MIG-1234", 0, "MIG instance"),
        (None, 3, "NVML sees 3 GPU"),
    ],
)
def test_visible_devices_errors(
    fake: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    ordinal: int,
    message: str,
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(UnavailableError, match=message):
        resolve_handle(fake, ordinal)


def test_counter_window_and_its_errors(fake: FakeNvml) -> None:
    meter = NvmlMeter("cuda:1")
    assert meter.mode == "counter"
    assert meter.describe()["nvml_index"] == 1
    mark = meter.start()
    fake.energy_mj += 2500
    reading = meter.stop(mark)
    assert reading.energy_j == 2.5
    assert reading.domains == {"gpu1": 2.5}
    with pytest.raises(CounterError, match="did not move"):
        meter.stop(meter.start())
    mark = meter.start()
    fake.energy_mj -= 10_000
    with pytest.raises(CounterError, match="went backwards"):
        meter.stop(mark)
    meter.close()
    assert fake.inits == 0  # every nvmlInit paired with a shutdown


def test_power_poll_fallback_integrates(fake: FakeNvml) -> None:
    fake.counter = False
    fake.power_w = 100.0
    meter = NvmlMeter("cuda", poll_interval_s=0.005)
    try:
        assert meter.mode == "power-poll"
        assert meter.describe()["power_field"] == "average"
        mark = meter.start()
        time.sleep(0.2)
        reading = meter.stop(mark)
        # The window edges are the integrator's samples, a few µs from the meter's clock reads.
        assert reading.energy_j == pytest.approx(100.0 * reading.time_s, rel=1e-3)
    finally:
        meter.close()
    assert fake.inits == 0


def test_power_integrator_trapezoid() -> None:
    """A ramp 0 → 100 W over the window integrates to its mean power × time."""
    t0 = time.perf_counter()
    integrator = PowerIntegrator(lambda: 500.0 * (time.perf_counter() - t0), interval_s=0.002)
    try:
        time.sleep(0.2)
        energy_j = integrator.energy_j()
        elapsed = time.perf_counter() - t0
        assert energy_j == pytest.approx(250.0 * elapsed**2, rel=0.05)
        assert integrator.samples > 20
    finally:
        integrator.close()


def test_power_integrator_reports_a_failing_read() -> None:
    calls = threading.Event()

    def read() -> float:
        if calls.is_set():
            raise RuntimeError("sensor gone")
        calls.set()
        return 50.0

    integrator = PowerIntegrator(read, interval_s=0.001)
    time.sleep(0.05)
    with pytest.raises(CounterError, match="sensor gone"):
        integrator.energy_j()
    integrator.close()


# --- on a real GPU (pytest -m gpu) --------------------------------------------------------------


@pytest.mark.gpu
def test_counter_rises_under_a_matmul_load() -> None:
    if not HAS_GPU:
        pytest.skip("no NVIDIA GPU here")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot use the GPU here")
    meter = create_meter("auto", "cuda")
    try:
        assert isinstance(meter, NvmlMeter)
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        idle_mark = meter.start()
        time.sleep(meter.min_window_s)
        idle = meter.stop(idle_mark)
        mark = meter.start()
        end = time.perf_counter() + 1.5 * meter.min_window_s
        while time.perf_counter() < end:
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
        busy = meter.stop(mark)
    finally:
        meter.close()
    assert 10 < idle.power_w < 2000
    assert busy.energy_j > 0
    assert busy.power_w > 1.5 * idle.power_w, (idle, busy)


@pytest.mark.gpu
def test_counter_probe_finds_an_update_period() -> None:
    if not HAS_GPU:
        pytest.skip("no NVIDIA GPU here")
    result = nvml_counter_probe(0, seconds=2.0)
    assert result["update_period_ms_median"] is not None, result
    assert 1 <= result["update_period_ms_median"] <= 500, result
    assert result["counter_energy_j"] > 0


# --- the counter probe's summary (pure: no NVML needed) -----------------------------------------


def test_probe_summary_measures_between_the_first_and_the_last_change() -> None:
    # A counter that moves every 100 ms by 10 J (100 W), and power that integrates 1% higher.
    changes = [(1.0 + 0.1 * i, 500.0 + 10.0 * i, 20.0 + 10.1 * i) for i in range(11)]
    notes: list[str] = []
    out = _summarise_probe(changes, [0.002, 0.003, 0.004], 1.5, "instant", notes)
    assert out["reads"] == 3 and out["read_ms_median"] == pytest.approx(3.0)
    assert out["changes"] == 11
    assert out["update_period_ms_median"] == pytest.approx(100.0)
    assert out["update_period_ms_min"] == pytest.approx(100.0)
    assert out["window_s"] == pytest.approx(1.0)
    assert out["counter_energy_j"] == pytest.approx(100.0)
    assert out["power_energy_j"] == pytest.approx(101.0)
    assert out["mean_power_w"] == pytest.approx(100.0)
    assert out["relative_difference"] == pytest.approx(0.01)
    assert notes == []


def test_probe_summary_says_why_figures_are_missing() -> None:
    notes: list[str] = []
    out = _summarise_probe([(1.0, 5.0, 0.0)], [], 2.0, "instant", notes)
    assert out == {"reads": 0, "read_ms_median": None, "changes": 1}
    assert notes == ["the counter changed 1 time(s) in 2.0 s: too few"]
    # NVML's 1-second average power lags a changing load: the comparison says so.
    averaged: list[str] = []
    _summarise_probe([(0.0, 0.0, 0.0), (0.1, 1.0, 1.0)], [0.001], 1.0, "average", averaged)
    assert averaged == ["power is NVML's 1-second average: compare only under a steady load"]
