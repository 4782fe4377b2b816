"""Tasks for the training tests, importable as ``train_tasks:NAME`` (this folder is on
``sys.path`` under pytest, which spawned children inherit, and on ``PYTHONPATH`` for the CLI).

``tiny``: digits with a quarter-width DigitsCNN, 4 epochs.
``user_mlp``: a model wattwise has never seen, written here the way a user would: an MLP on
the flattened 8×8 digits, its factory taking no arguments.
"""

from __future__ import annotations

import dataclasses
import functools

from torch import nn

from wattwise.tasks import DigitsCNN, Task, digits


def tiny() -> Task:
    return dataclasses.replace(
        digits(), name="tiny", model_factory=functools.partial(DigitsCNN, width=0.25), epochs=4
    )


class UserMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


def user_mlp() -> Task:
    return dataclasses.replace(
        digits(), name="user-mlp", model_factory=UserMLP, epochs=6, lr=3e-3, batch_size=32
    )
