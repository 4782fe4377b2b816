"""Prune: coupled structures stay consistent, protection, caps, importances, sensitivity."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from passes.helpers import part
from wattwise.passes import Prune, allocate_ratios, compress, layer_sensitivity
from wattwise.tasks import Task


def test_residual_concat_and_grouped_convs_stay_consistent(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, log = compress(trained_zoo("resnet"), [Prune(ratio=0.5, finetune_epochs=0)], task=task)
    m = small
    # torch.cat of the two stems feeds layer1: its input is their sum of widths.
    stems = (
        part(m, "stem_a.0", nn.Conv2d).out_channels + part(m, "stem_b.0", nn.Conv2d).out_channels
    )
    assert part(m, "layer1.conv1.0", nn.Conv2d).in_channels == stems < 16
    # Residual adds tie each block's output to its shortcut.
    layer2 = part(m, "layer2.conv2.0", nn.Conv2d)
    assert layer2.out_channels == part(m, "layer2.short.0", nn.Conv2d).out_channels
    assert part(m, "layer3.conv2.0", nn.Conv2d).out_channels == layer2.out_channels
    # Grouped convs keep whole groups.
    for block in ("layer1", "layer2", "layer3"):
        grouped = part(m, f"{block}.conv2.0", nn.Conv2d)
        assert grouped.in_channels % grouped.groups == 0
        assert grouped.out_channels % grouped.groups == 0
    assert part(m, "fc", nn.Linear).out_features == 10
    assert log.records[0].macs < 0.5 * log.initial.macs


def test_depthwise_and_squeeze_excite(task: Task, trained_zoo: Callable[[str], nn.Module]) -> None:
    small, _ = compress(trained_zoo("mobilenet"), [Prune(ratio=0.5, finetune_epochs=0)], task=task)
    for block in part(small, "blocks", nn.Sequential):
        dw = part(block, "dw.0", nn.Conv2d)
        expand = part(block, "expand.0", nn.Conv2d)
        assert dw.groups == dw.in_channels == dw.out_channels == expand.out_channels
        assert part(block, "se.expand", nn.Conv2d).out_channels == dw.out_channels


def test_attention_dims_are_pruned_with_the_heads_intact(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, _ = compress(
        trained_zoo("transformer"),
        [Prune(ratio=0.5, scope="uniform", finetune_epochs=0)],
        task=task,
    )
    attn = part(small, "blocks.0.attn", nn.MultiheadAttention)
    assert attn.embed_dim < 32 and attn.num_heads == 4
    assert attn.get_parameter("in_proj_weight").shape == (3 * attn.embed_dim, attn.embed_dim)
    pos = small.get_parameter("pos")
    assert pos.shape[-1] == attn.embed_dim == part(small, "head", nn.Linear).in_features


def test_protect_keeps_a_module_exactly(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo("resnet")
    shapes = {k: v.shape for k, v in model.get_submodule("layer2").state_dict().items()}
    small, log = compress(
        model, [Prune(ratio=0.5, finetune_epochs=0, protect=("layer2",))], task=task
    )
    assert {k: v.shape for k, v in small.get_submodule("layer2").state_dict().items()} == shapes
    # Everything tied to layer2's inputs and outputs keeps its width (the stems feed it through
    # layer1's identity shortcut); channels inside the other blocks still go.
    assert part(small, "stem_a.0", nn.Conv2d).out_channels == 8
    assert part(small, "layer1.conv1.0", nn.Conv2d).out_channels < 16
    assert part(small, "layer3.conv1.0", nn.Conv2d).out_channels < 32
    assert any(s.startswith("layer2") and "protect" in s for s in log.records[0].skipped)


def test_global_scope_never_empties_a_group_past_max_layer_ratio(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo("mlp")
    small, _ = compress(
        model, [Prune(ratio=0.8, max_layer_ratio=0.85, finetune_epochs=0)], task=task
    )
    for name in ("net.1", "net.3"):
        before = part(model, name, nn.Linear).out_features
        after = part(small, name, nn.Linear).out_features
        assert after >= math.ceil(before * (1 - 0.85))


@pytest.mark.parametrize("importance", ["taylor", "bn_scale"])
def test_other_importances(
    importance: str, task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    _small, log = compress(
        trained_zoo("resnet"),
        [Prune(ratio=0.4, importance=importance, steps=2, finetune_epochs=1)],
        task=task,
    )
    assert log.records[0].macs < 0.75 * log.initial.macs
    assert log.records[0].accuracy_drop < 0.1


def test_bn_scale_skips_groups_without_batchnorm(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    _, log = compress(
        trained_zoo("mlp"), [Prune(ratio=0.5, importance="bn_scale", finetune_epochs=0)], task=task
    )
    rec = log.records[0]
    assert rec.macs == log.initial.macs
    assert any("no score" in s for s in rec.skipped)


def test_layer_sensitivity_and_allocation(task: Task, digits_cnn: nn.Module) -> None:
    sens = layer_sensitivity(digits_cnn, task, ratios=(0.25, 0.75))
    assert set(sens) == {"features.0", "features.3", "features.7"}
    for curve in sens.values():
        assert set(curve) == {0.25, 0.75}
        assert all(-1.0 <= d <= 1.0 for d in curve.values())
    ratios = allocate_ratios(digits_cnn, sens, 0.5)
    widths = {n: part(digits_cnn, n, nn.Conv2d).out_channels for n in ratios}
    mean = sum(ratios[n] * widths[n] for n in ratios) / sum(widths.values())
    assert mean == pytest.approx(0.5, abs=0.02)
    assert all(0.0 <= r <= 0.9 for r in ratios.values())


def test_prune_with_sensitivity_sets_per_layer_ratios(task: Task, digits_cnn: nn.Module) -> None:
    small, log = compress(
        digits_cnn, [Prune(ratio=0.5, sensitivity=True, finetune_epochs=2)], task=task
    )
    rec = log.records[0]
    assert rec.method == "sensitivity"
    assert set(rec.metrics["layer_ratios"]) == {"features.0", "features.3", "features.7"}
    assert rec.macs < log.initial.macs / 1.5
    assert rec.accuracy_drop <= 0.03
    with torch.no_grad():
        assert small(task.example_input).shape == (1, 10)
