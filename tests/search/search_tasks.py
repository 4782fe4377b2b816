"""Task factories for the search tests, importable as ``search_tasks:NAME`` (this directory is
on ``sys.path`` under pytest, and on ``PYTHONPATH`` for the CLI subprocesses).

``tiny``: the digits data with a quarter-width DigitsCNN trained for 2 epochs (a second).
``flaky``: the same model, misbehaving at chosen batch sizes only, so the baseline (batch 1,
training batches of 64) is fine and only candidates fail: batch 3 hangs, 5 outputs NaN,
7 segfaults, 9 raises MemoryError.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time

import torch
from torch import nn

from wattwise.tasks import DigitsCNN, Task, digits


def tiny() -> Task:
    return dataclasses.replace(
        digits(), name="tiny", model_factory=functools.partial(DigitsCNN, width=0.25), epochs=2
    )


def other() -> Task:
    return dataclasses.replace(tiny(), name="other")


class Flaky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = DigitsCNN(width=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        if n == 3:
            time.sleep(3600)
        if n == 5:
            return torch.full((n, 10), float("nan"))
        if n == 7:
            os.kill(os.getpid(), signal.SIGSEGV)
        if n == 9:
            raise MemoryError("pretend the batch does not fit")
        return self.net(x)


def flaky() -> Task:
    return dataclasses.replace(tiny(), name="flaky", model_factory=Flaky)


def wrong_type() -> int:
    return 42


def empty() -> Task:
    task = tiny()
    return Task(
        name="empty",
        model_factory=task.model_factory,
        train_data=task.train_data,
        val_data=torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)),
        example_input=task.example_input,
    )
