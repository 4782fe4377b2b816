"""Weight sparsity: unstructured magnitude pruning and 2:4 semi-structured, offered honestly.

Zeroing weights shrinks a model only once it is stored compressed, and speeds it up only on
kernels that skip zeros: 2:4 patterns on sparse tensor cores (NVIDIA Ampere and later, via
``torch.sparse.to_sparse_semi_structured``), unstructured sparsity on sparse CPU libraries at
very high sparsity. PyTorch's dense CPU kernels multiply the zeros like any other number. So
this pass *measures* the model before and after with :func:`wattwise.measure.measure` and
writes the latency and energy ratios it saw into the log, rather than claiming a saving.

The masks are applied with ``torch.nn.utils.prune`` (so fine-tuning keeps the zeros) and then
made permanent: the result is a plain model whose weights contain zeros.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise.passes._base import Pass, PassContext, register_handler, register_pass
from wattwise.passes._fields import choice, flag, integer, names, number
from wattwise.passes._model import model_device, resolve_modules

if TYPE_CHECKING:
    import torch
    from torch import nn

PATTERNS = ("unstructured", "2:4")
SCOPES = ("global", "layer")
_MEASURE_BATCH = 32


@register_pass
@dataclasses.dataclass(frozen=True)
class Sparsify(Pass):
    """Zero the smallest-magnitude weights of Conv and Linear layers.

    Args:
        ratio: fraction of weights to zero (unstructured only; 2:4 is always one half).
        pattern: ``"unstructured"`` or ``"2:4"`` (in each group of 4 consecutive input
            weights, the 2 smallest are zeroed; layers whose fan-in is not a multiple of 4 are
            skipped).
        scope: ``"global"`` ranks all weights together, ``"layer"`` zeroes ``ratio`` of each.
        finetune_epochs: epochs of ``task.fit`` with the masks held fixed.
        measure: measure latency and energy before and after (``isolate=False``).
        max_time_s: time cap of each of those two measurements.
        protect: module names to leave dense.
    """

    TYPE: ClassVar[str] = "sparsify"

    ratio: float = 0.5
    pattern: str = "unstructured"
    scope: str = "global"
    finetune_epochs: int = 0
    measure: bool = True
    max_time_s: float = 1.0
    protect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        number(self, "ratio", low=0.0, high=1.0, high_open=True)
        choice(self, "pattern", PATTERNS)
        choice(self, "scope", SCOPES)
        integer(self, "finetune_epochs", low=0)
        flag(self, "measure")
        number(self, "max_time_s", low=0.0, low_open=True)
        names(self, "protect")


def _mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| in every group of 4 consecutive fan-in weights of each output."""
    import torch

    rows = weight.detach().reshape(weight.shape[0], -1)
    groups = rows.abs().reshape(rows.shape[0], -1, 4)
    keep = torch.topk(groups, 2, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def _targets(model: nn.Module, cfg: Sparsify, ctx: PassContext) -> dict[str, nn.Module]:
    from torch import nn

    protected = resolve_modules(model, cfg.protect, cls="Sparsify", field="protect")
    frozen = {id(sub) for m in protected.values() for sub in m.modules()}
    for name in protected:
        ctx.skip(name, "protected (Sparsify.protect)")
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear | nn.modules.conv._ConvNd) or id(m) in frozen:
            continue
        if cfg.pattern == "2:4" and m.weight[0].numel() % 4:
            ctx.skip(name, f"fan-in {m.weight[0].numel()} is not a multiple of 4 (2:4 groups)")
            continue
        out[name] = m
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention | nn.RNNBase):
            ctx.skip(name, f"{type(m).__name__} weights are not sparsified (Conv/Linear only)")
    return out


def _measure(model: nn.Module, x: torch.Tensor, max_time_s: float) -> Any:
    from wattwise.measure import measure

    x = x.to(model_device(model))
    return measure(
        model,
        x,
        device=str(x.device),
        batch_size=_MEASURE_BATCH,
        isolate=False,
        max_time_s=max_time_s,
        warmup_max_s=max_time_s / 2,
    )


@register_handler(Sparsify)
def _sparsify(model: nn.Module, cfg: Sparsify, ctx: PassContext) -> nn.Module:
    import torch
    from torch.nn.utils import prune

    task = ctx.task
    model.eval()
    targets = _targets(model, cfg, ctx)
    before = _measure(model, task.example_input, cfg.max_time_s) if cfg.measure else None
    if not targets or (cfg.pattern == "unstructured" and cfg.ratio == 0.0):
        ctx.note("nothing to sparsify")
        return model
    weights: dict[str, torch.Tensor] = {n: m.weight for n, m in targets.items()}  # type: ignore[misc]
    if cfg.pattern == "2:4":
        for n, m in targets.items():
            prune.custom_from_mask(m, "weight", _mask_2_4(weights[n]))
    elif cfg.scope == "global":
        prune.global_unstructured(
            [(m, "weight") for m in targets.values()],
            pruning_method=prune.L1Unstructured,
            amount=cfg.ratio,
        )
    else:
        for m in targets.values():
            prune.l1_unstructured(m, "weight", amount=cfg.ratio)
    if cfg.finetune_epochs:
        task.fit(model, epochs=cfg.finetune_epochs, seed=ctx.seed * 1000)
    for m in targets.values():
        prune.remove(m, "weight")  # weight = weight_orig * mask, for good
    model.eval()
    final: list[torch.Tensor] = [m.weight for m in targets.values()]  # type: ignore[misc]
    zeros = sum(int((w == 0).sum()) for w in final)
    total = sum(int(w.numel()) for w in final)
    ctx.metrics["sparsity"] = zeros / total
    ctx.method = cfg.pattern
    if before is None:
        ctx.note(f"{zeros / total:.0%} of Conv/Linear weights are zero; speed not measured")
        return model
    after = _measure(copy.deepcopy(model), task.example_input, cfg.max_time_s)
    latency = after.latency_ms_p50 / before.latency_ms_p50
    energy = after.energy_j_per_item / before.energy_j_per_item
    ctx.metrics.update(
        latency_ratio=latency,
        energy_ratio=energy,
        latency_ms_p50_dense=before.latency_ms_p50,
        latency_ms_p50_sparse=after.latency_ms_p50,
        energy_j_per_item_dense=before.energy_j_per_item,
        energy_j_per_item_sparse=after.energy_j_per_item,
        measure_energy_source=after.energy_source,
    )
    what = "unstructured sparsity" if cfg.pattern == "unstructured" else "2:4 sparsity"
    verdict = "saves nothing" if latency > 0.95 else "is faster"
    where = "dense CPU kernels" if model_device(model).type == "cpu" else "dense kernels"
    ctx.note(
        f"{what} {verdict} on {where}: latency ratio {latency:.2f}, energy ratio {energy:.2f} "
        f"({after.energy_source} ±{after.energy_uncertainty:.0%}, batch {_MEASURE_BATCH})"
        + (
            "; 2:4 pays off only on sparse tensor cores (Ampere+ GPUs)"
            if cfg.pattern == "2:4"
            else ""
        )
    )
    del torch
    return model
