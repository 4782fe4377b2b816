"""ResNet-18, -34 and -50.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
https://arxiv.org/abs/1512.03385

Stacks of residual units ``relu(x + F(x))`` (§3.1–3.3): two 3×3 convs per unit ("basic", for
the 18/34-layer nets) or a 1×1 → 3×3 → 1×1 "bottleneck" with 4× wider output (50 layers and
up, §4.1 "Deeper Bottleneck Architectures"). Where a unit changes shape the shortcut is a
1×1 projection + BatchNorm (the paper's option B); elsewhere it is the identity.

ResNet-50 here is the common "v1.5": the stride-2 of a downsampling bottleneck sits on its
3×3 conv, not on its first 1×1 as in the paper. The 1×1 then no longer throws away three
quarters of its input, which is worth ~0.5% top-1 for ~6% more multiply-adds (4.1G, not the
paper's 3.8G). ResNet-18/34 have no 1×1 in their units, so they are the paper's exactly.

The last BatchNorm of each residual branch starts at the paper's γ = 1 by default;
``zero_init_residual=True`` starts it at 0 instead (Goyal et al. 2017, "Accurate, Large
Minibatch SGD"), so every unit begins as the identity, which helps large-batch training.

At width 1.0 and 224×224 (paper, Table 1; "FLOPs" there are multiply-adds): ResNet-18 11.7M
parameters / 1.8G MACs, ResNet-34 21.8M / 3.6G, ResNet-50 25.6M / 3.8G (4.1G as v1.5).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, ClassVar

import torch
from torch import nn

from wattwise._core import check_choice
from wattwise.archs._common import (
    ArchConfig,
    Classifier,
    ConvBNAct,
    DropPath,
    _is_int,
    init_weights,
    make_act,
    make_divisible,
    scale_repeats,
)
from wattwise.config import register_config
from wattwise.errors import InputError

# Output channels of a unit over its stage width (the bottleneck's 1×1 expands 4×, §4.1).
EXPANSION: dict[str, int] = {"basic": 1, "bottleneck": 4}
STEMS = ("imagenet", "small")


@register_config
@dataclasses.dataclass(frozen=True)
class ResNetConfig(ArchConfig):
    """ResNet hyper-parameters; the defaults are ResNet-18 (see
    :class:`~wattwise.archs._common.ArchConfig` for the shared fields).

    The fields read like the paper's Table 1: the unit kind, and per stage (conv2_x …
    conv5_x) the number of units and the width of their 3×3 convs. The first stage keeps the
    resolution (the stem already reduced it), each later one halves it in its first unit.

    Attributes:
        block: ``"basic"`` (two 3×3 convs) or ``"bottleneck"`` (1×1, 3×3, 1×1 ×4 wide).
        stage_blocks: residual units per stage, before the depth multiplier (rounded up).
        stage_chans: width of each stage's 3×3 convs, scaled by ``width`` and rounded to a
            multiple of 8 like the other families (a no-op at width 1, where all are
            multiples of 64; at fractional widths it keeps the convs hardware-friendly).
        stem_chans: output of the stem conv, scaled by ``width`` like the stages.
        stem: ``"imagenet"``, the paper's 7×7 stride-2 conv + 3×3 stride-2 max-pool (output
            at 1/32 of the input), or ``"small"``, one 3×3 stride-1 conv and no pool (output
            at 1/8), the usual stem for 32×32 inputs such as CIFAR — the paper's own CIFAR
            nets (§4.2) are a different, thinner design. Pair it with ``resolution=32`` so
            that ``default_input_size`` says so.
        zero_init_residual: start the last BatchNorm of every residual branch at γ = 0.
        dropout: before the classifier; 0 as in the paper, which uses none.
    """

    TYPE: ClassVar[str] = "arch.resnet"

    block: str = "basic"
    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)
    stage_chans: tuple[int, ...] = (64, 128, 256, 512)
    stem_chans: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.block, EXPANSION, what="ResNetConfig.block")
        check_choice(self.stem, STEMS, what="ResNetConfig.stem")
        if not _is_int(self.stem_chans) or self.stem_chans < 1:
            raise InputError(
                f"ResNetConfig.stem_chans must be an int >= 1, got {self.stem_chans!r}"
            )
        if not isinstance(self.zero_init_residual, bool):
            raise InputError("ResNetConfig.zero_init_residual must be a bool")
        for field in ("stage_blocks", "stage_chans"):
            # from_dict hands tuples over as lists; keep the config frozen and hashable.
            object.__setattr__(self, field, _positive_ints(field, getattr(self, field)))
        if len(self.stage_blocks) != len(self.stage_chans):
            raise InputError(
                f"ResNetConfig.stage_blocks and stage_chans must have one entry per stage, got "
                f"{len(self.stage_blocks)} and {len(self.stage_chans)}"
            )
        super().__post_init__()


def _positive_ints(field: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise InputError(
            f"ResNetConfig.{field} must be a non-empty sequence of ints >= 1, got {value!r}"
        )
    return tuple(value)


class ResidualUnit(nn.Module):
    """``relu(shortcut(x) + branch(x))``: the paper's post-activation unit (Figure 2/5).

    ``branch`` ends in a linear ConvBNAct (its BatchNorm is the one ``zero_init_residual``
    zeroes); ``shortcut`` is the identity or a 1×1 projection, fixed at construction so
    fx/export see one static graph.
    """

    def __init__(
        self,
        branch: nn.Sequential,
        in_chans: int,
        out_chans: int,
        stride: int,
        cfg: ResNetConfig,
        rate: float,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and in_chans == out_chans
            else ConvBNAct(in_chans, out_chans, 1, stride, act=None, **_bn(cfg))
        )
        self.drop_path: nn.Module = DropPath(rate) if rate > 0 else nn.Identity()
        self.act = make_act("relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.branch(x)))

    def zero_init_last_bn(self) -> None:
        """Start the branch at zero, so the unit starts as its shortcut (Goyal et al. 2017)."""
        for module in self.branch[-1].modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.zeros_(module.weight)


def basic_block(
    in_chans: int, chans: int, stride: int, cfg: ResNetConfig, rate: float
) -> ResidualUnit:
    """Two 3×3 convs, the first carrying the stride (Figure 5, left)."""
    branch = nn.Sequential(
        OrderedDict(
            conv1=ConvBNAct(in_chans, chans, 3, stride, act="relu", **_pad_bn(cfg)),
            conv2=ConvBNAct(chans, chans, 3, act=None, **_bn(cfg)),
        )
    )
    return ResidualUnit(branch, in_chans, chans, stride, cfg, rate)


def bottleneck_block(
    in_chans: int, chans: int, stride: int, cfg: ResNetConfig, rate: float
) -> ResidualUnit:
    """1×1 reduce → 3×3 (carrying the stride: v1.5) → 1×1 expand ×4 (Figure 5, right)."""
    out_chans = chans * EXPANSION["bottleneck"]
    branch = nn.Sequential(
        OrderedDict(
            conv1=ConvBNAct(in_chans, chans, 1, act="relu", **_bn(cfg)),
            conv2=ConvBNAct(chans, chans, 3, stride, act="relu", **_pad_bn(cfg)),
            conv3=ConvBNAct(chans, out_chans, 1, act=None, **_bn(cfg)),
        )
    )
    return ResidualUnit(branch, in_chans, out_chans, stride, cfg, rate)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def _bn(cfg: ResNetConfig) -> dict[str, Any]:
    return {"bn_eps": cfg.bn_eps, "bn_momentum": cfg.bn_momentum}


def _pad_bn(cfg: ResNetConfig) -> dict[str, Any]:
    """BatchNorm settings plus the padding rule, for the convs that may carry a stride."""
    return {**_bn(cfg), "tf_same_padding": cfg.tf_same_padding}


def build_stem(cfg: ResNetConfig) -> tuple[nn.Sequential, int]:
    """The stem as one flat ``nn.Sequential`` (``conv, bn, act[, pool]``) and its channels."""
    chans = make_divisible(cfg.stem_chans * cfg.width)
    if cfg.stem == "small":
        return ConvBNAct(cfg.in_chans, chans, 3, 1, act="relu", **_bn(cfg)), chans
    layers = OrderedDict(
        ConvBNAct(cfg.in_chans, chans, 7, 2, act="relu", **_pad_bn(cfg)).named_children()
    )
    if cfg.tf_same_padding:
        # TF "SAME" pads after, not before. Zeros are as good as -inf here: the input is a
        # ReLU's output, never negative.
        layers["pool_pad"] = nn.ZeroPad2d((0, 1, 0, 1))
        layers["pool"] = nn.MaxPool2d(3, 2)
    else:
        layers["pool"] = nn.MaxPool2d(3, 2, padding=1)
    return nn.Sequential(layers), chans


def build_stages(cfg: ResNetConfig, in_chans: int) -> tuple[nn.Sequential, int]:
    """Every residual unit of every stage in one flat ``nn.Sequential``, and its output width.

    The first unit of each stage after the first halves the resolution; stochastic depth
    grows linearly from 0 at the first unit to ``drop_path_rate``, as in the other families.
    """
    plan: list[tuple[int, int]] = []  # (stage width, stride) per unit
    for i, (blocks, chans) in enumerate(zip(cfg.stage_blocks, cfg.stage_chans, strict=True)):
        width = make_divisible(chans * cfg.width)
        repeats = scale_repeats(blocks, cfg.depth)
        plan += [(width, 2 if i > 0 and j == 0 else 1) for j in range(repeats)]
    make_block = BLOCKS[cfg.block]
    units = []
    for idx, (chans, stride) in enumerate(plan):
        rate = cfg.drop_path_rate * idx / len(plan)
        units.append(make_block(in_chans, chans, stride, cfg, rate))
        in_chans = chans * EXPANSION[cfg.block]
    return nn.Sequential(*units), in_chans


class ResNet(Classifier):
    """ResNet built from a :class:`ResNetConfig`.

    ``stem`` → ``blocks`` (all residual units, flat) → global average pool → ``fc``; there is
    no 1×1 head conv, so ``head`` is the identity and :meth:`forward_features` returns the
    last stage's map: ``(N, C, H/32, W/32)``, or ``H/8`` with the small stem.

    Example:
        >>> net = ResNet(ResNetConfig(width=0.25, num_classes=10, stem="small", resolution=32))
        >>> net(torch.randn(2, *net.default_input_size)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem, chans = build_stem(cfg)
        self.blocks, chans = build_stages(cfg, chans)
        self.head = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(chans, cfg.num_classes)
        init_weights(self)
        if cfg.zero_init_residual:
            for module in self.blocks.modules():
                if isinstance(module, ResidualUnit):
                    module.zero_init_last_bn()


VARIANTS: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig(block="basic", stage_blocks=(2, 2, 2, 2)),
    "resnet34": ResNetConfig(block="basic", stage_blocks=(3, 4, 6, 3)),
    "resnet50": ResNetConfig(block="bottleneck", stage_blocks=(3, 4, 6, 3)),
}
