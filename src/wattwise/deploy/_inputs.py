"""Input batches as the deploy layer handles them: checked into a tuple of CPU tensors
(:func:`as_batch`), cut or repeated to a batch size (:func:`take_rows`), and run through a
callable with the outputs brought back as CPU floats (:func:`run_batches`)."""

from __future__ import annotations

from typing import Any

from wattwise.deploy._base import Batch
from wattwise.errors import InputError

__all__ = ["as_batch", "run_batches", "take_rows"]


def as_batch(value: Any, what: str) -> Batch:
    """``value`` (a tensor, or a tuple/list of tensors with one batch size) as a tuple of
    detached CPU tensors.

    Raises:
        InputError: not tensors, no batch dimension, or tensors that disagree on its size;
            the message starts with ``what``.
    """
    import torch

    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InputError(f"{what} must be a tensor or a tuple of tensors")
    for t in items:
        if t.dim() < 1 or t.shape[0] < 1:
            raise InputError(f"{what} needs a batch dimension, got shape {tuple(t.shape)}")
    n = items[0].shape[0]
    if any(t.shape[0] != n for t in items):
        raise InputError(f"{what}: tensors disagree on the batch size")
    return tuple(t.detach().cpu() for t in items)


def take_rows(batch: Batch, n: int) -> Batch:
    """``n`` rows of ``batch``, cycling through its rows if it has fewer."""
    import torch

    have = batch[0].shape[0]
    index = torch.arange(n) % have
    return tuple(t[index].contiguous() for t in batch)


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
