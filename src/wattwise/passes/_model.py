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


# -- the stack of repeated layers -------------------------------------------------------------


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The model's stack of repeated layers (a transformer's encoder blocks): the
    ``nn.ModuleList`` of two or more modules of one class that holds the most parameters, with
    its name; ``None`` if the model has none."""
    from torch import nn

    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size and (best is None or size > best[0]):
            best = (size, name, module)
    return None if best is None else (best[1], best[2])


def keep_layers(model: nn.Module, keep: float) -> tuple[str, int, list[int]]:
    """Cut ``model``'s :func:`layer_stack` to ``keep`` of its layers, in place: every other
    layer for 0.5 (DistilBERT's initialisation of a student from its teacher), evenly spaced
    from the first. Counts the model keeps of its layers (``num_layers`` of
    ``nn.TransformerEncoder``, ``config.num_hidden_layers`` of Hugging Face models) follow.

    Returns:
        The stack's name, how many layers it had, and the indices kept.

    Raises:
        InputError: the model has no stack of repeated layers, or too few to drop any.
    """
    from torch import nn

    found = layer_stack(model)
    if found is None:
        raise InputError(
            f"{type(model).__name__} has no stack of repeated layers (an nn.ModuleList of "
            "blocks of one class) to drop layers from"
        )
    name, stack = found
    n = len(stack)
    k = max(1, round(n * keep))
    if k >= n:
        raise InputError(f"keeping {keep:g} of the {n} layers of {name} keeps them all")
    kept = [i * n // k for i in range(k)]
    layers = [stack[i] for i in kept]
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(owner, name.rpartition(".")[2], nn.ModuleList(layers))
    for module in model.modules():
        if getattr(module, "num_layers", None) == n:
            setattr(module, "num_layers", k)  # noqa: B010  (an nn.Module attribute mypy can't see)
        config = getattr(module, "config", None)
        if getattr(config, "num_hidden_layers", None) == n:
            config.num_hidden_layers = k  # type: ignore[union-attr]
    return name, n, kept
