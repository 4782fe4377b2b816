"""Structured channel pruning with Torch-Pruning: channels are removed, not masked.

Torch-Pruning's dependency graph finds which layers are coupled (a residual add ties the
channels of every branch it joins; a depthwise conv ties its input to its output; ``torch.cat``
maps channel ranges; attention ties q, k, v and the heads), groups them, and removes whole
channels from every layer of a group at once, so the result is a smaller dense model that
is faster on any backend.

What this module adds on top of Torch-Pruning:

* the final classifier is always kept whole (its outputs are the model's outputs);
* ``protect`` keeps named modules entirely as they are (their inputs and outputs too);
* recurrent layers are kept whole, with everything coupled to them: Torch-Pruning 1.6 has no
  GRU/RNN pruner, and its LSTM pruner fails on the gate weights (an ``IndexError`` slicing
  ``weight_hh``). We trace them through a shape-alike stand-in so the coupling is still known;
* ``max_layer_ratio`` caps how much of any one group a *global* ranking may remove (Torch-
  Pruning only checks its ``max_pruning_ratio`` between steps, not within one);
* models Torch-Pruning cannot follow are refused with an :class:`InputError` instead of
  being pruned into a broken network: a module that never ran during the traced forward
  (data-dependent control flow), or a pruned model that no longer runs.

The Torch-Pruning side of this (stand-ins, frozen groups, the cap) is the adapter in
:mod:`wattwise.passes._torch_pruning`, which :func:`layer_sensitivity` prunes through too.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import first_line
from wattwise._inputs import call
from wattwise.errors import InputError
from wattwise.passes._base import Pass, PassContext, register_handler, register_pass
from wattwise.passes._fields import choice, flag, integer, names, number
from wattwise.passes._model import resolve_modules
from wattwise.passes._sensitivity import allocate_ratios, layer_sensitivity
from wattwise.passes._torch_pruning import (
    build_pruner,
    channels,
    recurrent_swapped,
    taylor_gradients,
)

if TYPE_CHECKING:
    from torch import nn

    from wattwise.tasks import Task

SCOPES = ("global", "uniform")
IMPORTANCES = ("magnitude", "taylor", "bn_scale")


@register_pass
@dataclasses.dataclass(frozen=True)
class Prune(Pass):
    """Remove a fraction of the channels (conv filters, linear units, attention dims).

    Args:
        ratio: fraction of channels to remove, ``0 <= ratio < 1``. MACs of a conv between two
            pruned layers fall by about ``(1 - ratio) ** 2``.
        scope: ``"global"`` ranks channels of all layers together (layers that matter less lose
            more), ``"uniform"`` removes ``ratio`` of every layer.
        importance: ``"magnitude"`` (L2 norm of the group's weights), ``"taylor"`` (|weight ×
            gradient| of the task loss, Molchanov et al. 2019), ``"bn_scale"`` (|BatchNorm γ|,
            network slimming; groups without BatchNorm are skipped).
        steps: prune in this many equal steps, fine-tuning after each.
        finetune_epochs: epochs of ``task.fit`` after each step (0: no fine-tuning).
        lr: fine-tuning learning rate (default: the task's).
        protect: module names to leave exactly as they are. The final classifier is always
            protected (its input channels may still shrink with the layer feeding it).
        sensitivity: measure each layer group's accuracy drop when pruned alone
            (:func:`layer_sensitivity`) and give sensitive groups smaller ratios, keeping the
            channel-weighted mean at ``ratio``. ``scope`` is then unused.
        max_layer_ratio: no group loses more than this fraction of its channels.

    Example:
        >>> model2, log = wattwise.compress(model, [Prune(ratio=0.5, finetune_epochs=4)], task=task)
    """

    TYPE: ClassVar[str] = "prune"

    ratio: float = 0.5
    scope: str = "global"
    importance: str = "magnitude"
    steps: int = 1
    finetune_epochs: int = 3
    lr: float | None = None
    protect: tuple[str, ...] = ()
    sensitivity: bool = False
    max_layer_ratio: float = 0.9

    def __post_init__(self) -> None:
        number(self, "ratio", low=0.0, high=1.0, high_open=True)
        choice(self, "scope", SCOPES)
        choice(self, "importance", IMPORTANCES)
        integer(self, "steps", low=1, high=100)
        integer(self, "finetune_epochs", low=0)
        number(self, "lr", low=0.0, low_open=True, optional=True)
        names(self, "protect")
        flag(self, "sensitivity")
        number(self, "max_layer_ratio", low=0.0, high=1.0, low_open=True, high_open=True)
        if self.ratio > self.max_layer_ratio:
            raise InputError(
                f"Prune.ratio {self.ratio} is above Prune.max_layer_ratio {self.max_layer_ratio}"
            )


@register_handler(Prune)
def _prune(model: nn.Module, cfg: Prune, ctx: PassContext) -> nn.Module:
    import torch

    task = ctx.task
    example = task.example_input
    model.eval()
    resolve_modules(model, cfg.protect, cls="Prune", field="protect")
    if cfg.ratio == 0.0:
        ctx.note("ratio 0: nothing to prune")
        return model
    ratio_dict: dict[str, float] | None = None
    if cfg.sensitivity:
        sens = layer_sensitivity(model, task, importance=cfg.importance, protect=cfg.protect)
        ratio_dict = allocate_ratios(model, sens, cfg.ratio, max_layer_ratio=cfg.max_layer_ratio)
        ctx.metrics["sensitivity"] = {k: {str(r): d for r, d in v.items()} for k, v in sens.items()}
        ctx.metrics["layer_ratios"] = dict(ratio_dict)
        ctx.method = "sensitivity"
        ctx.note("scope unused: sensitivity analysis set each group's ratio")
    before = {n: channels(m) for n, m in model.named_modules() if channels(m) is not None}
    with recurrent_swapped(model) as stand_ins:
        setup = build_pruner(
            model,
            example,
            ratio=cfg.ratio,
            scope=cfg.scope,
            importance=cfg.importance,
            steps=cfg.steps,
            protect=cfg.protect,
            ratio_dict=ratio_dict,
            max_layer_ratio=cfg.max_layer_ratio,
        )
    if setup.classifier is not None:
        ctx.skip(
            setup.classifier,
            "final classifier: its outputs are the model's outputs (inputs may shrink)",
        )
    for name in stand_ins:
        ctx.skip(
            name,
            "recurrent layer kept whole: Torch-Pruning 1.6 has no GRU/RNN pruner and its LSTM "
            "pruner fails on the gate weights",
        )
    for name, why in setup.dead_ends.items():
        ctx.skip(name, why)
    attention_names = {id(m): n for n, m in model.named_modules()}
    heads_before = {
        attention_names[id(a.module)]: int(getattr(a.module, a.count_attr)) for a in setup.attention
    }
    for step in range(cfg.steps):
        if cfg.importance == "taylor":
            taylor_gradients(model, task)
        with recurrent_swapped(model, reuse=stand_ins):
            try:
                setup.step()
            except Exception as exc:
                raise InputError(
                    f"Prune: Torch-Pruning failed on {type(model).__name__} at step {step + 1}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        model.zero_grad(set_to_none=True)
        _check_runs(model, task)
        if cfg.finetune_epochs:
            task.fit(
                model,
                epochs=cfg.finetune_epochs,
                lr=cfg.lr,
                seed=ctx.seed * 1000 + step,
                on_epoch=ctx.stop_when_recovered(lambda: task.evaluate(model), ctx.accuracy_before),
            )
    model.eval()
    for name, why in sorted(setup.guard.skipped.items()):
        if name != setup.classifier:
            ctx.skip(name, why)
    after = {n: channels(m) for n, m in model.named_modules() if n in before}
    total_before = sum(v or 0 for v in before.values())
    total_after = sum(v or 0 for v in after.values())
    ctx.metrics["channels_before"] = total_before
    ctx.metrics["channels_after"] = total_after
    ctx.metrics["widths"] = {n: [before[n], after[n]] for n in before if before[n] != after[n]}
    if setup.attention:
        ctx.metrics["heads"] = {
            attention_names[id(a.module)]: [
                heads_before[attention_names[id(a.module)]],
                int(getattr(a.module, a.count_attr)),
            ]
            for a in setup.attention
        }
    if ctx.method is None:
        ctx.method = f"{cfg.scope}/{cfg.importance}"
    del torch
    return model


def _check_runs(model: nn.Module, task: Task) -> None:
    """The pruned model must still run on real batches (a missed coupling shows up here).

    Raises:
        InputError: naming the innermost module that failed and what to do about it.
    """
    import torch

    x = task.calibration_batches(n_items=8, batch_size=8)[0]
    names = {m: n for n, m in model.named_modules()}
    inside: list[str] = []  # the modules whose forward is running, outermost first

    def enter(m: nn.Module, _args: Any) -> None:
        inside.append(names.get(m, ""))

    def leave(m: nn.Module, _args: Any, _out: Any) -> None:
        inside.pop()

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        with torch.no_grad():
            call(model, task.example_input)
            call(model, x)
    except Exception as exc:
        failed_in = [n for n in inside if n]
        where = failed_in[-1] if failed_in else type(model).__name__
        owner = failed_in[-2] if len(failed_in) > 1 else where
        kind = type(model.get_submodule(owner)).__name__ if failed_in else ""
        alike = [n for m, n in names.items() if n and type(m).__name__ == kind]
        protect = f"[{owner!r}]" if len(alike) < 2 else f"[the {len(alike)} {kind} modules]"
        raise InputError(
            f"Prune: the pruned {type(model).__name__} no longer runs: {where} raised "
            f"{type(exc).__name__}: {first_line(exc)}; Torch-Pruning missed a coupling there. "
            f"Leave such blocks whole with Prune(protect={protect}) (e.g. {owner!r}), or, for "
            "attention whose head size is fixed in its code, distil a shallower student "
            "instead (Distill(student='layers'))"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
