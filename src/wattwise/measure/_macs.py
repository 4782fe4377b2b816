"""The one MAC counter: multiply-accumulates of a model call, as torch's ``FlopCounterMode``
sees them (its FLOPs / 2: convolutions, matmuls and attention; not elementwise work).

Everything that reports MACs comes here: the harness (``macs_per_item``), the compression log
(:class:`wattwise.passes.ModelStats`), the student search (:mod:`wattwise.archs`). Counting is a
dispatch mode around one real call, so it sees only the operators that call runs, and three
things would hide them:

* ``torch.compile``: a compiled model called under a dispatch mode recompiles, and the new
  graph can replace the fast one (a PT2E int8 model measured 5x slower after counting). We count
  on the eager code path instead (``set_stance("force_eager")``): the same operations, and the
  compiled cache stays as it was.
* the fused transformer fast path: in eval mode without autograd, ``nn.TransformerEncoderLayer``
  runs as one ``torch._transformer_encoder_layer_fwd`` and ``nn.MultiheadAttention`` as one
  ``torch._native_multi_head_attention``, operators with no FLOP formula, so a 2-layer encoder
  counted 0 MACs. The fast path computes the same products as the ordinary one, so we turn it
  off for the counted call.
* CPU attention: ``scaled_dot_product_attention`` runs as
  ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward), which torch's table
  misses while it has the CUDA kernels; we count it with torch's own SDPA formulas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from wattwise._inputs import call

__all__ = ["count_macs", "count_step_macs"]


def count_macs(model: Any, example_input: Any) -> float:
    """MACs of one forward call of ``model`` on ``example_input``, in eval mode and without
    autograd. The input is a tensor, a tuple (positional arguments) or a dict (keyword
    arguments, e.g. ``input_ids`` and ``attention_mask``); see :func:`wattwise._inputs.call`.

    The model's train/eval mode is put back afterwards. A batch of one cannot go through
    BatchNorm in training mode, and eval is what a deployment runs.

    Example:
        >>> count_macs(torch.nn.Linear(8, 4), torch.randn(1, 8))
        32.0
    """
    import torch

    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    # Exported graphs refuse train()/eval(): they have no modes to switch.
    if module is not None:
        with contextlib.suppress(NotImplementedError):
            module.eval()
    try:
        with torch.no_grad():
            return count_step_macs(lambda: call(model, example_input))
    finally:
        if module is not None and was_training:
            with contextlib.suppress(NotImplementedError):
                module.train(True)


def count_step_macs(step: Callable[[], Any]) -> float:
    """MACs of one call of ``step`` (whatever it runs: a forward pass, or a training step with
    its backward pass), with the guards of the module docstring."""
    with _counting() as counter:
        step()
    # FLOPs as torch counts them are 2 per multiply-accumulate.
    return counter.get_total_flops() / 2.0


@contextlib.contextmanager
def _counting() -> Iterator[Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    eager = set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()
    mha = getattr(torch.backends, "mha", None)
    fast_path = mha.get_fastpath_enabled() if mha is not None else False
    if mha is not None:
        # A process-wide switch: a thread running a transformer meanwhile takes the ordinary
        # path for these few milliseconds, which computes the same.
        mha.set_fastpath_enabled(False)
    try:
        with eager, counter:
            yield counter
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fast_path)


def _cpu_attention_formulas() -> dict[Any, Any]:
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    formulas: dict[Any, Any] = {}

    # Both CPU kernels take (query, key, value, ...), the backward after grad_out, like the
    # CUDA kernels torch's table counts with these same formulas.
    def sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query, key, value))

    def sdpa_backward(grad: Any, query: Any, key: Any, value: Any, *a: Any, **k: Any) -> int:
        return int(flop_counter.sdpa_backward_flop_count(grad, query, key, value))

    if forward is not None:
        formulas[forward] = sdpa
    if backward is not None:
        formulas[backward] = sdpa_backward
    return formulas
