"""Task factories for the search tests, importable as ``search_tasks:NAME`` (this directory is
on ``sys.path`` under pytest, and on ``PYTHONPATH`` for the CLI subprocesses).

``tiny``: the digits data with a quarter-width DigitsCNN trained for 2 epochs (a second).
``tiny_lm``: a generative task: a one-layer, 30 k-parameter TinyLM on 20 KB of CPython's
help text (one epoch, a second or two), responses of 8 prompt and 8 new bytes.
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


def tiny_lm() -> Task:
    from wattwise.archs.tinylm import tinylm
    from wattwise.measure import GenerateSpec
    from wattwise.tasks.tinylm import ByteWindows, byte_corpus, next_token_accuracy, next_token_loss

    corpus = byte_corpus(0)
    train = ByteWindows(corpus.train[:20_000], window=32)
    held_out = ByteWindows(corpus.held_out[:4_000], window=32)
    return Task(
        "tiny-lm",
        functools.partial(tinylm, width=0.25, depth=0.25, max_seq_len=64),
        train,
        held_out,
        example_input=train[0][0].unsqueeze(0),
        metric=next_token_accuracy,
        loss_fn=next_token_loss,
        epochs=1,
        lr=3e-3,
        batch_size=32,
        generate=GenerateSpec(prompt_tokens=8, new_tokens=8),
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
