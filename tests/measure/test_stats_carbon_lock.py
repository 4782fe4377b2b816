from __future__ import annotations

import math
import multiprocessing as mp
import time

import pytest

from wattwise.errors import InputError, WattwiseError
from wattwise.measure import _carbon, _stats
from wattwise.measure._lock import device_lock


def test_percentile_matches_linear_interpolation() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert _stats.percentile(values, 0) == 1.0
    assert _stats.percentile(values, 100) == 4.0
    assert _stats.percentile(values, 50) == 2.5
    assert _stats.percentile(values, 90) == pytest.approx(3.7)


def test_ci95_shrinks_with_agreement() -> None:
    assert _stats.ci95_rel([1.0]) == math.inf
    tight = _stats.ci95_rel([1.0, 1.01, 0.99, 1.0, 1.0])
    loose = _stats.ci95_rel([1.0, 1.5, 0.5, 1.2, 0.8])
    assert 0 < tight < 0.02 < loose
    # t-based: n=2, values 1 and 3 → mean 2, s=√2, half = 12.706·√2/√2 = 12.706, median 2
    assert _stats.ci95_rel([1.0, 3.0]) == pytest.approx(12.706 / 2)


def test_co2e_from_joules() -> None:
    # 3.6 J/item × 1e6 items = 1 kWh → the grid intensity in grams.
    assert _carbon.co2e_g_per_million_items(3.6, 480.0) == pytest.approx(480.0)


def test_grid_intensity_override_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _carbon.grid_intensity(None)[0] == _carbon.WORLD_AVERAGE_G_PER_KWH
    assert _carbon.grid_intensity(50.0) == (50.0, "user")
    monkeypatch.setenv("WATTWISE_GRID_G_PER_KWH", "120")
    assert _carbon.grid_intensity(None)[0] == 120.0
    monkeypatch.setenv("WATTWISE_GRID_G_PER_KWH", "lots")
    with pytest.raises(InputError, match="WATTWISE_GRID_G_PER_KWH"):
        _carbon.grid_intensity(None)
    with pytest.raises(InputError):
        _carbon.grid_intensity(-1.0)


def _hold(lock_dir: str, ready, hold_s: float) -> None:  # pragma: no cover - child
    import os

    os.environ["WATTWISE_LOCK_DIR"] = lock_dir
    with device_lock("cpu"):
        ready.set()
        time.sleep(hold_s)


def test_device_lock_excludes_other_processes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, 1.5))
    holder.start()
    try:
        assert ready.wait(30)
        with (
            pytest.raises(WattwiseError, match="waiting for the cpu measurement lock"),
            device_lock("cpu", timeout_s=0.2),
        ):
            pass
        with device_lock("cpu", timeout_s=30) as waited_s:
            assert waited_s > 0.2
        # A different device has its own lock.
        with device_lock("cuda:1", timeout_s=0.1):
            pass
    finally:
        holder.join(10)
