"""Shared by the input tests: a private device lock, and the stranger models importable by
name (``stranger_models``) as the CLI's measuring child imports them."""

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
