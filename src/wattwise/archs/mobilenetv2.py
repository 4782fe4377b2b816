"""MobileNetV2.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear
Bottlenecks." CVPR 2018. https://arxiv.org/abs/1801.04381

Inverted residual blocks (narrow → wide → narrow, shortcut between the narrow ends), a linear
projection (no activation after it, §3.2) and ReLU6 elsewhere. At width 1.0 and 224×224:
3.4M parameters and 300M multiply-adds (paper, Table 4).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from wattwise.archs._common import (
    ArchConfig,
    BlockRow,
    Classifier,
    build_trunk,
    init_weights,
    make_divisible,
)
from wattwise.config import register_config

# Table 2 of the paper: t (expansion), c (out channels), n (repeats), s (stride); all 3×3.
ROWS: tuple[BlockRow, ...] = (
    BlockRow(expand_ratio=1, kernel=3, stride=1, out_chans=16, repeats=1),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=24, repeats=2),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=32, repeats=3),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=64, repeats=4),
    BlockRow(expand_ratio=6, kernel=3, stride=1, out_chans=96, repeats=3),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=160, repeats=3),
    BlockRow(expand_ratio=6, kernel=3, stride=1, out_chans=320, repeats=1),
)


@register_config
@dataclasses.dataclass(frozen=True)
class MobileNetV2Config(ArchConfig):
    """MobileNetV2 hyper-parameters (see :class:`~wattwise.archs._common.ArchConfig` for the
    shared fields).

    Attributes:
        rows: the block table (Table 2).
        stem_chans: the first 3×3 stride-2 conv, scaled by ``width``.
        head_chans: the last 1×1 conv; only scaled up, never down ("for multipliers less than
            one, we apply width multiplier to all layers except the very last", §6.1).
    """

    TYPE: ClassVar[str] = "arch.mobilenetv2"

    rows: tuple[BlockRow, ...] = ROWS
    stem_chans: int = 32
    head_chans: int = 1280


class MobileNetV2(Classifier):
    """MobileNetV2 built from a :class:`MobileNetV2Config`.

    Example:
        >>> net = MobileNetV2(MobileNetV2Config(width=0.5, num_classes=10))
        >>> net(torch.randn(2, *net.default_input_size)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: MobileNetV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        head = make_divisible(cfg.head_chans * max(1.0, cfg.width))
        self.stem, self.blocks, self.head = build_trunk(
            cfg,
            cfg.rows,
            stem_chans=make_divisible(cfg.stem_chans * cfg.width),
            head_chans=head,
            act="relu6",
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(head, cfg.num_classes)
        init_weights(self)


VARIANTS: dict[str, MobileNetV2Config] = {"mobilenetv2": MobileNetV2Config()}
