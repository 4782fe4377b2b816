"""What the passes and the search read off a model: its parameters, MACs, bytes on disk and
device, and its modules by name (with a hint when a name is not there).

Kept out of :mod:`._base` (what a pass is): the search's trials and the benchmarks count
models too, and need none of the pass machinery.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from wattwise.errors import InputError
from wattwise.measure._macs import count_macs as count_macs  # re-exported: one place for all four

if TYPE_CHECKING:
    import torch
    from torch import nn


# -- model statistics -------------------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    """Parameter elements, plus integer weight buffers (int8 weights a quantizer stored)."""
    import torch

    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    for b in model.buffers():
        # Integer buffers of rank ≥ 2 are quantized weights (pt2e folds them into buffers);
        # rank-1 integer buffers are zero points or counters.
        if id(b) not in seen and b.dim() >= 2 and b.dtype in (torch.int8, torch.uint8):
            seen.add(id(b))
            total += b.numel()
    for m in model.modules():
        # Eager dynamic-quantized RNNs keep their weights packed, outside parameters/buffers.
        weight_bias = getattr(m, "_weight_bias", None)
        if callable(weight_bias) and not list(m.parameters(recurse=False)):
            for table in weight_bias().values():
                total += sum(t.numel() for t in table.values() if torch.is_tensor(t))
    return int(total)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the weights cost on disk."""
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def model_device(model: nn.Module) -> torch.device:
    import torch

    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


# -- modules by name --------------------------------------------------------------------------


def resolve_modules(
    model: nn.Module, names: tuple[str, ...], *, cls: str, field: str
) -> dict[str, nn.Module]:
    """Map module names to modules, or raise InputError naming the first that is not there."""
    table = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in table:
            near = [n for n in table if n and (name in n or n.endswith(name.split(".")[-1]))][:5]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise InputError(
                f"{cls}.{field}: {type(model).__name__} has no module named {name!r}{hint}"
            )
        out[name] = table[name]
    return out
