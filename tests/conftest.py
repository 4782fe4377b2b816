"""Settings for the whole suite."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI must be reproducible: property tests draw the same examples on every run (set
# HYPOTHESIS_PROFILE=explore to search afresh while developing).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The confirmation stage re-measures the headline in 3 x 4 child processes at the end of every
# search (about a minute here). Most search tests check other things; the ones that check the
# confirmation set WATTWISE_CONFIRM_ROUNDS (or confirm_rounds=) themselves. Set before any test
# starts, so CLI subprocesses inherit it.
os.environ.setdefault("WATTWISE_CONFIRM_ROUNDS", "0")

# Folders whose tests run searches: they check what a search does with its figures, not the
# figures' precision, so each measurement there takes 0.1 s windows instead of 0.5 s (about
# 1.5 s less for every trial, baseline and confirmation child; see measure/_harness.py).
_SHORT_WINDOWS = ("search", "robustness", "report")

# Tests whose figures another process's load would distort (they compare energies measured
# side by side, time warm-ups and windows, or check that a quiet measurement is not flagged):
# `make test` runs them after the rest, alone, instead of beside a second xdist worker. The
# measure tests that check counts, files, processes and generation's plumbing, not figures
# (MACs, the RAPL/NVML readers, the meter registry, child processes, generation) run beside
# the rest: alone they took a third of the quiet phase.
_QUIET = (
    "measure/test_disturbance.py",
    "measure/test_harness.py",
    "measure/test_harness_steps.py",
    "measure/test_meter_estimate.py",
    "measure/test_stats_carbon_lock.py",
    "deploy/test_deploy_scenario.py",
    "deploy/test_scenario_steps.py",
    "archs/test_student.py",
)

_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.resolve().relative_to(_TESTS).as_posix()
        if where.startswith(_QUIET):
            item.add_marker(pytest.mark.quiet)


@pytest.fixture(autouse=True)
def _short_windows_for_searches(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = request.node.path.resolve().relative_to(_TESTS).parts
    if where and where[0] in _SHORT_WINDOWS:
        monkeypatch.setenv("WATTWISE_MIN_WINDOW_S", "0.1")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module's tests, restored after: small inputs gain nothing from
    a second thread, and on a busy 2-core machine OpenMP's spin-waiting made the architecture
    tests about 10x slower (128 s against 10 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
