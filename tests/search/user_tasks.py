"""Tasks whose model does what user code does, importable as ``user_tasks:NAME``.

Both models are the tiny digits CNN of ``search_tasks:tiny``; they misbehave only at their
own batch size (candidates only: the baseline runs batch 1 and trains on batches of 64).

``held``: at batch 4, while the file named by :data:`HOLD_ENV` exists, the forward pass writes
its process id next to that file and waits: a test then knows a trial's child is inside the
user's code, can kill its worker there when it likes, and lets a later trial (the retry)
through by deleting the file.

``chatty``: prints on every forward pass, to stdout and at the file-descriptor level to
stderr; at batch 5 it prints its last words and outputs NaN, failing the trial.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
from search_tasks import tiny
from torch import nn

from wattwise.tasks import DigitsCNN, Task

HOLD_ENV = "WATTWISE_TEST_HOLD"
HOLD_BATCH = 4
MAX_HOLD_S = 300  # a test that forgets its file must not leave a child waiting for ever


def pid_file(hold: Path) -> Path:
    return hold.with_name(hold.name + ".pid")


class Held(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = DigitsCNN(width=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hold = os.environ.get(HOLD_ENV)
        if hold and int(x.shape[0]) == HOLD_BATCH and Path(hold).exists():
            pid_file(Path(hold)).write_text(str(os.getpid()))
            deadline = time.monotonic() + MAX_HOLD_S
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.net(x)


def held() -> Task:
    return dataclasses.replace(tiny(), name="held", model_factory=Held)


CHATTY_FAIL_BATCH = 5


class Chatty(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = DigitsCNN(width=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        print(f"chatty forward at batch {n}")
        os.write(2, f"chatty fd2 at batch {n}\n".encode())
        if n == CHATTY_FAIL_BATCH:
            for i in range(3):
                print(f"chatty last words {i}")
            return torch.full((n, 10), float("nan"))
        return self.net(x)


def chatty() -> Task:
    return dataclasses.replace(tiny(), name="chatty", model_factory=Chatty)
