"""Fixtures for the pass tests: the digits task, and zoo models trained once per session."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from passes.zoo import ZOO
from wattwise.tasks import Task, digits

# Short training: enough for each zoo model to be well above chance on digits (the contract
# checks accuracy *drops*, not absolute accuracy) while keeping the suite within budget.
ZOO_EPOCHS = 8


@pytest.fixture(autouse=True, scope="package")
def _quiet_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One intra-op thread and a private measurement lock while these tests run.

    The machine is shared: two threads per process oversubscribe its two cores and make tiny
    models several times slower, and other people's measurements hold the global CPU lock
    (which the Sparsify pass takes through ``wattwise.measure``) for minutes.
    """
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    mp.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        mp.undo()


@pytest.fixture(scope="session")
def task() -> Task:
    return digits()


@pytest.fixture(scope="session")
def trained_zoo(task: Task) -> Callable[[str], nn.Module]:
    """``trained_zoo(name)``: a zoo model trained once per session (callers get a copy)."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = task.fit(ZOO[name](), epochs=ZOO_EPOCHS, seed=0)
        return copy.deepcopy(cache[name])

    return get


@pytest.fixture(scope="session")
def digits_cnn(task: Task) -> nn.Module:
    """The task's DigitsCNN trained with its own recipe (~99% validation accuracy)."""
    torch.manual_seed(0)
    return task.fit(task.model_factory())
