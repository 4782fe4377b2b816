"""Input batches as the deploy layer handles them: checked into a tuple of CPU tensors
(:func:`as_batch`; backends take positional inputs) and run through a callable with the
outputs brought back as CPU floats (:func:`run_batches`). Batches of a size are cut with
:func:`wattwise._inputs.take_rows`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wattwise._inputs import check_input, describe, detach_cpu
from wattwise.deploy._base import Batch
from wattwise.errors import InputError

__all__ = ["as_batch", "run_batches"]


def as_batch(value: Any, what: str) -> Batch:
    """``value`` (a tensor, or a tuple/list of tensors with one batch size) as a tuple of
    detached CPU tensors: the positional arguments a backend runs.

    Raises:
        InputError: not tensors, no batch dimension, or tensors that disagree on its size;
            the message starts with ``what`` (see :func:`wattwise._inputs.check_input`).
    """
    check_input(value, what)
    if isinstance(value, Mapping):
        raise InputError(
            f"{what} is a dict ({describe(value)}); backends take positional inputs "
            "(wattwise.deploy.deploy wraps a dict-input model for them)"
        )
    batch = detach_cpu(value)
    return batch if isinstance(batch, tuple) else (batch,)


def run_batches(fn: Any, batches: list[Batch]) -> list[Any]:
    """``fn(*batch)`` for each batch under ``inference_mode``; tensors come back on the CPU,
    floating-point ones as fp32."""
    import torch

    outs = []
    with torch.inference_mode():
        for batch in batches:
            out = fn(*batch)
            outs.append(torch.utils._pytree.tree_map(_to_cpu_float, out))
    return outs


def _to_cpu_float(t: Any) -> Any:
    import torch

    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return t.float() if t.is_floating_point() else t
    return t
