"""Sparsify: the zeros are real and permanent, and the speed claim is a measured number."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from passes.helpers import weight_of
from wattwise.passes import Sparsify, compress
from wattwise.tasks import Task


@pytest.mark.slow
def test_unstructured_sparsity_reports_what_it_measured(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, log = compress(trained_zoo("mlp"), [Sparsify(ratio=0.5, max_time_s=0.3)], task=task)
    rec = log.records[0]
    note = next(n for n in rec.notes if "latency ratio" in n)
    match = re.search(
        r"unstructured sparsity (saves nothing|is faster) on dense CPU kernels: latency ratio (\d+\.\d\d)",
        note,
    )
    assert match, note
    assert float(match.group(2)) == round(rec.metrics["latency_ratio"], 2)
    assert rec.metrics["latency_ratio"] > 0 and rec.metrics["energy_ratio"] > 0
    assert rec.metrics["measure_energy_source"].startswith(("measured:", "estimated:"))
    # Permanent: plain parameters, no masks or reparametrisation left behind.
    assert not any("mask" in k or "orig" in k for k in small.state_dict())
    zeros = sum(int((m.weight == 0).sum()) for m in small.modules() if isinstance(m, nn.Linear))
    total = sum(m.weight.numel() for m in small.modules() if isinstance(m, nn.Linear))
    assert abs(zeros / total - 0.5) < 0.01


def test_two_four_pattern(task: Task, digits_cnn: nn.Module) -> None:
    small, log = compress(
        digits_cnn, [Sparsify(pattern="2:4", measure=False, finetune_epochs=1)], task=task
    )
    rec = log.records[0]
    assert any(s.startswith("features.0:") and "multiple of 4" in s for s in rec.skipped)
    for name in ("features.3", "features.7", "classifier"):
        w = weight_of(small, name).detach()
        groups = w.reshape(w.shape[0], -1, 4)
        assert ((groups == 0).sum(-1) >= 2).all(), name
    first = weight_of(small, "features.0")
    assert torch.count_nonzero(first) == first.numel()
    assert rec.accuracy_drop < 0.05
