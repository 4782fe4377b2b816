"""Shared by the input tests: a private device lock and short measuring windows."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_device_lock(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The harness holds a machine-wide lock per device while measuring; on a shared machine
    # these tests would otherwise queue behind other people's long measurements. Subprocesses
    # inherit the variable.
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    # These tests check what flows where (dtypes, names, MACs, token counts), not the figures'
    # precision: the CLI's measurements take 0.1 s windows (see measure/_harness.py).
    monkeypatch.setenv("WATTWISE_MIN_WINDOW_S", "0.1")
