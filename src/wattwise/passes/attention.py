"""Attention on PyTorch's fused scaled-dot-product kernel, where the model allows it.

A Hugging Face model picks its attention kernel by a config field: ``"eager"`` computes
``softmax(QKᵀ/√d)V`` as separate ops and keeps the score matrix, ``"sdpa"`` calls
``F.scaled_dot_product_attention``, one fused kernel (flash or memory-efficient on a GPU, a
fused loop on the CPU). transformers already chooses SDPA where a class supports it, so this
pass matters for a model built or loaded with ``attn_implementation="eager"`` (often to read
attention weights) and then deployed as it is. The weights do not change; outputs agree to
float rounding.

``nn.MultiheadAttention`` needs no pass: it calls SDPA itself when called with
``need_weights=False``, as ``nn.TransformerEncoderLayer`` does.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import first_line
from wattwise.passes._base import Pass, PassContext, register_handler, register_pass
from wattwise.passes._fields import choice

if TYPE_CHECKING:
    from torch import nn

IMPLEMENTATIONS = ("sdpa", "eager")


@register_pass
@dataclasses.dataclass(frozen=True)
class Attention(Pass):
    """Set the attention kernel of every Hugging Face model inside the model.

    Args:
        implementation: ``"sdpa"`` (PyTorch's fused kernel) or ``"eager"`` (separate ops; the
            only one that can return attention weights).

    Example:
        >>> model2, log = wattwise.compress(model, [Attention("sdpa")], task=task)
    """

    TYPE: ClassVar[str] = "attention"

    implementation: str = "sdpa"

    def __post_init__(self) -> None:
        choice(self, "implementation", IMPLEMENTATIONS)


def _hf_models(model: nn.Module) -> list[tuple[str, Any]]:
    """The outermost modules that choose their attention by config, by name."""
    found: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if not hasattr(config, "_attn_implementation"):
            continue
        if not callable(getattr(module, "set_attn_implementation", None)):
            continue
        if any(name.startswith(f"{outer}.") or not outer for outer, _ in found):
            continue
        found.append((name, module))
    return found


@register_handler(Attention)
def _attention(model: nn.Module, cfg: Attention, ctx: PassContext) -> nn.Module:
    target = cfg.implementation
    ctx.method = target
    found = _hf_models(model)
    if not found:
        ctx.skip(
            "",
            "no Hugging Face model inside, nothing to switch (nn.MultiheadAttention calls SDPA "
            "itself when called with need_weights=False)",
        )
        return model
    for name, module in found:
        label = name or "<model>"
        kind = type(module).__name__
        current = module.config._attn_implementation
        if current == target:
            ctx.note(f"{label}: {kind} already uses {target} attention")
            continue
        if target == "sdpa" and not getattr(module, "_supports_sdpa", False):
            ctx.skip(name, f"{kind} has no SDPA attention in transformers")
            continue
        try:
            module.set_attn_implementation(target)
        except Exception as exc:
            ctx.skip(name, f"{kind} refused {target} attention: {first_line(exc)}")
            continue
        now = module.config._attn_implementation
        if now != target:
            ctx.skip(name, f"{kind} cannot change its attention after it is built (still {now})")
            continue
        ctx.note(f"{label}: {kind} attention {current} -> {target}")
    return model
