"""The harness's steps one at a time (check arguments, warm up, plan windows, measure windows,
summarise), in-process, with real torch work and the real estimate meter: each step's rule is
checked here without a child process and without waiting for a whole measurement."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TypedDict

import pytest
import torch

from wattwise.errors import InputError
from wattwise.measure import Measurement
from wattwise.measure._harness import (
    DEFAULT_MIN_WINDOW_S,
    MAX_WINDOWS,
    MIN_WINDOWS,
    WarmUp,
    _check_arguments,
    _Disturbance,
    _measure_windows,
    _summarise,
    _window_plan,
    _Windows,
    _Workload,
    latency_settled,
    warm_up,
)
from wattwise.measure.meters import Meter, create_meter

X = torch.randn(1, 1, 8, 8)


def workload(**changes: object) -> _Workload:
    fields: dict[str, object] = {
        "model": None,
        "example_input": X,
        "device": "cpu",
        "batch_size": 4,
        "mode": "inference",
        "target": None,
        "loss_fn": None,
        "meter": "estimate",
        "threads": None,
        "min_window_s": None,
        "max_time_s": 1.0,
        "target_ci95_rel": 0.02,
        "warmup_max_s": 0.5,
        "grid_g_per_kwh": 400.0,
        "isolated": False,
    }
    fields.update(changes)
    return _Workload(**fields)  # type: ignore[arg-type]


@pytest.fixture
def meter() -> Iterator[Meter]:
    """The CPU-time model meter: works on any machine, and in-process."""
    m = create_meter("estimate", "cpu")
    yield m
    m.close()


def matmul_step() -> Callable[[], object]:
    a = torch.randn(64, 64)
    return lambda: a @ a


# --- check arguments ---------------------------------------------------------------------


class _Args(TypedDict):
    """``_check_arguments``'s keywords, typed so that ``**ARGS`` type-checks."""

    device: str
    batch_size: int
    mode: str
    target: torch.Tensor | None
    threads: int | None
    max_time_s: float
    target_ci95_rel: float


ARGS: _Args = {
    "device": "cpu",
    "batch_size": 1,
    "mode": "inference",
    "target": None,
    "threads": None,
    "max_time_s": 1.0,
    "target_ci95_rel": 0.02,
}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"mode": "serve"}, "mode must be one of inference, train, got 'serve'"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"max_time_s": math.inf}, "max_time_s must be > 0"),
        ({"target_ci95_rel": 1.0}, "target_ci95_rel must be in (0, 1)"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"device": "tpu"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"mode": "train"}, "needs target="),
        ({"mode": "train", "target": [3]}, "target[0] must be a tensor"),
    ],
)
def test_bad_arguments_are_refused_by_name_before_any_child(changes, fragment) -> None:
    with pytest.raises(InputError) as info:
        _check_arguments(X, **{**ARGS, **changes})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_good_arguments_give_the_normalised_device() -> None:
    assert _check_arguments(X, **ARGS) == "cpu"
    train: _Args = {**ARGS, "mode": "train", "target": torch.tensor([1])}
    assert _check_arguments((X, X), **train) == "cpu"


# --- warm up -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "settled"),
    [
        ([1.0] * 5, False),  # fewer than 6 calls: never settled
        ([1.0] * 6, True),
        ([2.0, 2.0, 2.0, 1.04, 1.0, 0.98], False),  # still speeding up
        ([1.0, 1.0, 1.0, 1.04, 1.04, 1.04], True),  # within 5%
        ([1.0, 1.0, 1.0, 1.06, 1.06, 1.06], False),
        ([9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], True),  # only the last 6 calls count
    ],
)
def test_latency_settles_when_the_last_three_match_the_three_before(times, settled) -> None:
    assert latency_settled(times) is settled


def test_warm_up_stops_once_a_steady_step_settles() -> None:
    warm = warm_up(lambda: time.sleep(0.002), cap_s=10.0)
    assert not warm.capped
    assert len(warm.call_times_s) >= 6 and latency_settled(warm.call_times_s)
    assert warm.call_s == statistics.median(warm.call_times_s[-3:])
    assert warm.call_s >= 0.002


def test_warm_up_stops_at_its_cap_when_the_step_keeps_slowing() -> None:
    # Each call sleeps 20% longer than the last: the latency never settles.
    delay = [0.001]

    def slowing() -> None:
        time.sleep(delay[0])
        delay[0] *= 1.2

    t0 = time.perf_counter()
    warm = warm_up(slowing, cap_s=0.15)
    assert warm.capped and len(warm.call_times_s) >= 2
    assert not latency_settled(warm.call_times_s)
    assert time.perf_counter() - t0 < 1.0  # the cap, plus the one call that crossed it


def test_a_capped_warm_up_still_runs_the_step_twice() -> None:
    warm = warm_up(lambda: time.sleep(0.05), cap_s=0.0)
    assert warm == WarmUp(warm.call_times_s, capped=True) and len(warm.call_times_s) == 2


# --- plan the windows --------------------------------------------------------------------


def test_the_window_is_the_longest_of_ours_the_callers_and_the_meters() -> None:
    assert _window_plan(None, 0.01, 0.001) == (DEFAULT_MIN_WINDOW_S, 500)
    assert _window_plan(0.1, 0.01, 0.001) == (0.1, 100)
    # The meter's minimum wins over a shorter one asked for (e.g. NVML's 10 counter updates).
    assert _window_plan(0.1, 1.0, 0.3) == (1.0, 4)
    # A call longer than the window is still one call; a zero latency cannot divide by zero.
    assert _window_plan(0.1, 0.01, 5.0) == (0.1, 1)
    assert _window_plan(0.1, 0.01, 0.0)[1] >= 1


# --- measure windows ---------------------------------------------------------------------


def test_warmed_up_windows_stop_at_the_ci_target_and_hold_real_figures(meter: Meter) -> None:
    # As the harness composes the steps: warm up, plan, then measure.
    work = workload(target_ci95_rel=0.5, max_time_s=5.0)
    step = matmul_step()
    window_s, calls = _window_plan(0.02, meter.min_window_s, warm_up(step, 1.0).call_s)
    kept = _measure_windows(work, step, meter, calls, window_s, 0.0, _Disturbance(None))
    n = len(kept.j_per_item)
    assert MIN_WINDOWS <= n < MAX_WINDOWS, (kept.j_per_item, kept.window_s)
    assert all(j > 0 and math.isfinite(j) for j in kept.j_per_item)
    # Idle power 0: the energy above idle is the whole energy.
    assert kept.above_idle_j_per_item == pytest.approx(kept.j_per_item)
    assert len(kept.window_s) == n and kept.items >= n * calls * work.batch_size
    assert len(kept.latencies_s) >= n * calls
    assert 0 < kept.busy_s <= kept.total_s


def test_windows_without_a_sync_per_call_take_latencies_from_a_timed_pass(meter: Meter) -> None:
    # How a GPU is measured: the windows wait once at their end, so the calls' own times are
    # launches only; their time is the loop's, and latencies come from a separate pass.
    from wattwise.measure._harness import _timed_calls

    work = workload(target_ci95_rel=0.5, max_time_s=0.2)
    step = matmul_step()
    kept = _measure_windows(work, step, meter, 5, 0.01, 0.0, _Disturbance(None), sync_each=False)
    assert kept.latencies_s == []
    assert kept.busy_s == pytest.approx(sum(kept.window_s))
    timed = _timed_calls(step, "cpu", min_s=0.05)
    assert len(timed) >= 20 and all(t > 0 for t in timed)


def test_windows_stop_at_the_time_cap_after_the_minimum(meter: Meter) -> None:
    # A CI target no real measurement meets: the time cap ends it, after MIN_WINDOWS.
    work = workload(target_ci95_rel=1e-12, max_time_s=0.05)
    t0 = time.perf_counter()
    kept = _measure_windows(work, matmul_step(), meter, 5, 0.01, 0.0, _Disturbance(None))
    elapsed_s = time.perf_counter() - t0
    assert MIN_WINDOWS <= len(kept.j_per_item) < MAX_WINDOWS  # so not the window count
    assert work.max_time_s <= elapsed_s < 2.0


def test_windows_too_short_for_the_meter_are_lengthened(meter: Meter) -> None:
    # 1 call fills far less than 0.05 s: the next windows take more calls.
    work = workload(target_ci95_rel=0.9)
    kept = _measure_windows(work, matmul_step(), meter, 1, 0.05, 0.0, _Disturbance(None))
    assert kept.items > len(kept.j_per_item) * work.batch_size
    assert kept.window_s[-1] > 10 * kept.window_s[0]


# --- summarise ---------------------------------------------------------------------------


def summarise(windows: _Windows, **changes: object) -> Measurement:
    kwargs: dict[str, object] = {
        "energy_source": "estimated:cpu-ccf",
        "energy_uncertainty": 0.4,
        "idle_power_w": 2.0,
        "dist": _Disturbance(None),
        "notes": ("MACs not counted",),
        "threads": 1,
        "params": 10,
        "macs": 100.0,
        "warmup_calls": 6,
        "peak_memory_bytes": 1 << 20,
    }
    kwargs.update(changes)
    return Measurement(**_summarise(workload(), windows, **kwargs))  # type: ignore[arg-type]


def windows(j: list[float], above: list[float]) -> _Windows:
    return _Windows(
        j_per_item=j,
        above_idle_j_per_item=above,
        window_s=[0.5] * len(j),
        latencies_s=[0.001, 0.002, 0.003, 0.004],
        busy_s=0.99,
        total_s=1.0,
        items=400,
    )


def test_summary_of_agreeing_windows_is_their_median_and_converged() -> None:
    m = summarise(windows([1.0, 1.0, 1.0, 1.0], [0.5, 0.6, 0.4, 0.5]))
    assert m.energy_j_per_item == 1.0 and m.energy_above_idle_j_per_item == 0.5
    assert m.converged and m.ci95_rel == 0.0 and m.windows == 4
    assert m.notes == ("MACs not counted",)  # the notes passed in, none added
    assert m.throughput_items_per_s == pytest.approx(400 / 0.99)
    assert m.harness_overhead_rel == pytest.approx(0.01)
    assert m.latency_ms_p50 <= m.latency_ms_p90 <= m.latency_ms_p99 <= 4.0
    assert m.co2e_g_per_million_items > 0 and m.energy_source == "estimated:cpu-ccf"


def test_summary_notes_a_ci_short_of_the_target_and_energy_lost_in_idle_noise() -> None:
    m = summarise(windows([1.0, 2.0, 3.0], [-0.1, -0.2, 0.05]))
    assert not m.converged and m.ci95_rel > 0.02
    assert m.energy_j_per_item == 2.0
    assert m.energy_above_idle_j_per_item == 0.0  # clamped, and said so
    assert m.notes[0] == "MACs not counted"
    assert m.notes[1].startswith("J/item CI95 ±") and "after 3 windows" in m.notes[1]
    assert m.notes[2] == "energy above idle is within the idle-power noise"


def test_summary_of_a_single_window_reports_a_full_ci() -> None:
    m = summarise(windows([1.0], [0.5]))
    assert m.ci95_rel == 1.0 and not m.converged  # an infinite CI is stored as 100%


def test_the_default_window_can_be_set_for_a_process_and_a_bad_value_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wattwise.measure._harness import MIN_WINDOW_ENV, default_min_window_s

    monkeypatch.delenv(MIN_WINDOW_ENV, raising=False)
    assert default_min_window_s() == DEFAULT_MIN_WINDOW_S
    monkeypatch.setenv(MIN_WINDOW_ENV, "0.1")
    assert _window_plan(None, 0.01, 0.001) == (0.1, 100)
    assert _window_plan(0.3, 0.01, 0.001) == (0.3, 300)  # the caller's window wins
    assert _window_plan(None, 0.5, 0.001) == (0.5, 500)  # and so does the meter's minimum
    for bad in ("0", "-1", "fast", "nan", "1e9"):
        monkeypatch.setenv(MIN_WINDOW_ENV, bad)
        with pytest.raises(InputError, match=MIN_WINDOW_ENV):
            default_min_window_s()
