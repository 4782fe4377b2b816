"""Per-layer pruning sensitivity, and per-layer ratios that follow it.

:func:`layer_sensitivity` prunes each prunable group *alone* (a group is a set of coupled
layers, named by its root module), at each ratio, without fine-tuning, and records the drop of
the task metric. :func:`allocate_ratios` then gives every group the largest ratio whose drop
stays under one shared threshold, and finds the threshold (by bisection) at which the
channel-weighted mean ratio equals the target: sensitive groups keep more channels, robust
ones give more up, and all end up costing about the same accuracy (Li et al. 2017, "Pruning
Filters for Efficient ConvNets", §3.4, pick per-layer ratios from such curves by hand).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from wattwise.errors import InputError
from wattwise.passes._torch_pruning import (
    PrunerSetup,
    build_pruner,
    channels,
    recurrent_swapped,
    taylor_gradients,
)

if TYPE_CHECKING:
    from torch import nn

    from wattwise.tasks import Task

DEFAULT_RATIOS = (0.25, 0.5, 0.75)


@contextmanager
def _pruner(
    model: nn.Module,
    task: Task,
    *,
    protect: tuple[str, ...],
    scope: str,
    importance: str = "magnitude",
    ratio_dict: dict[str, float] | None = None,
) -> Iterator[PrunerSetup]:
    """A pruner on ``model`` that removes nothing but what ``ratio_dict`` names, with the
    recurrent layers swapped for stand-ins while it is in use."""
    with recurrent_swapped(model):
        yield build_pruner(
            model,
            task.example_input,
            ratio=0.0,
            scope=scope,
            importance=importance,
            protect=protect,
            ratio_dict=ratio_dict,
            who="layer_sensitivity",
        )


def prunable_groups(
    model: nn.Module, task: Task, *, protect: tuple[str, ...] = ()
) -> dict[str, int]:
    """Root module name → channels, for every group Prune may cut (in graph order)."""
    probe = copy.deepcopy(model).eval()
    with _pruner(probe, task, protect=protect, scope="global") as setup:
        pruner = setup.pruner
        names = {m: n for n, m in probe.named_modules()}
        out: dict[str, int] = {}
        for group in pruner.DG.get_all_groups(
            ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
        ):
            root = group[0].dep.target.module
            if setup.guard(group) is None or root not in names:
                continue
            out[names[root]] = channels(root) or int(pruner.DG.get_out_channels(root) or 0)
    return out


def layer_sensitivity(
    model: nn.Module,
    task: Task,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    importance: str = "magnitude",
    protect: tuple[str, ...] = (),
) -> dict[str, dict[float, float]]:
    """Accuracy drop of ``model`` when each prunable group alone loses each ratio of channels.

    No fine-tuning happens, so the drops are upper bounds of what pruning costs after it;
    what matters is their order across groups. ``model`` is not changed.

    Args:
        model: a trained model.
        task: its task (the metric and the example input).
        ratios: channel fractions to try, each in (0, 1).
        importance: how channels are ranked (see :class:`Prune`).
        protect: module names to leave out.

    Returns:
        ``{group root name: {ratio: metric before − metric after}}``.

    Example:
        >>> sens = layer_sensitivity(model, task, ratios=(0.25, 0.5))
        >>> sens["features.0"][0.5]
        0.0083
    """
    ratios = tuple(float(r) for r in ratios)
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise InputError(f"layer_sensitivity: ratios must be numbers in (0, 1), got {ratios!r}")
    base = task.evaluate(model)
    out: dict[str, dict[float, float]] = {}
    for name in prunable_groups(model, task, protect=protect):
        out[name] = {}
        for r in ratios:
            trial = copy.deepcopy(model).eval()
            if importance == "taylor":
                taylor_gradients(trial, task)
            with _pruner(
                trial,
                task,
                protect=protect,
                scope="uniform",
                importance=importance,
                ratio_dict={name: r},
            ) as setup:
                setup.step()
            out[name][r] = base - task.evaluate(trial)
    return out


def allocate_ratios(
    model: nn.Module,
    sensitivity: dict[str, dict[float, float]],
    target: float,
    *,
    max_layer_ratio: float = 0.9,
) -> dict[str, float]:
    """Per-group ratios with equal accuracy cost whose channel-weighted mean is ``target``."""
    table = dict(model.named_modules())
    weights = {n: float(channels(table[n]) or 1) for n in sensitivity if n in table}
    if not weights:
        return {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for name in weights:
        points = [(0.0, 0.0), *sorted(sensitivity[name].items())]
        running = 0.0
        curve = []
        for r, d in points:  # a drop never shrinks as more is pruned: take the running max
            running = max(running, d)
            curve.append((r, running))
        curves[name] = curve

    def ratio_at(curve: list[tuple[float, float]], tau: float) -> float:
        best = 0.0
        for (r0, d0), (r1, d1) in itertools.pairwise(curve):
            if d1 <= tau:
                best = r1
                continue
            best = r0 + (r1 - r0) * (tau - d0) / (d1 - d0) if d1 > d0 else r0
            break
        return min(best, max_layer_ratio)

    def mean_ratio(tau: float) -> float:
        total = sum(weights.values())
        return sum(w * ratio_at(curves[n], tau) for n, w in weights.items()) / total

    lo, hi = 0.0, max(d for c in curves.values() for _, d in c) + 1e-9
    if mean_ratio(hi) >= target:
        for _ in range(60):
            mid = (lo + hi) / 2
            if mean_ratio(mid) >= target:
                hi = mid
            else:
                lo = mid
    ratios = {n: ratio_at(curves[n], hi) for n in weights}
    mean = mean_ratio(hi)
    if mean > target > 0:
        # Flat curves (no drop at any tried ratio) jump straight to the largest ratio; scale
        # back so the mean is the target, keeping the groups' proportions.
        ratios = {n: r * target / mean for n, r in ratios.items()}
    return {n: round(r, 4) for n, r in ratios.items()}
