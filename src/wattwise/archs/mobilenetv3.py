"""MobileNetV3, Large and Small.

Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam. "Searching for
MobileNetV3." ICCV 2019. https://arxiv.org/abs/1905.02244

MobileNetV2's inverted residual plus squeeze-and-excitation with a hard-sigmoid gate, and
hard-swish (``x * relu6(x + 3) / 6``) in the deeper half where it pays off (§5.2). The head
pools *before* its last wide layer, a 1×1 conv without BatchNorm (here an ``nn.Linear``),
which saves most of the head's multiply-adds (§5.1, Figure 5). At width 1.0 and 224×224:
Large 5.4M parameters / 219M MAdds, Small 2.5M / 56M (paper, Table 3).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from wattwise.archs._common import (
    ArchConfig,
    BlockRow,
    Classifier,
    build_trunk,
    init_weights,
    make_act,
    make_divisible,
)
from wattwise.config import register_config

# Table 1 of the paper. The expansion ratio is the "exp size" column over the input channels,
# written as that fraction; identical consecutive rows are merged into ``repeats`` (the first
# carries the stride) so that a depth multiplier has something to scale.
LARGE_ROWS: tuple[BlockRow, ...] = (
    BlockRow(expand_ratio=16 / 16, kernel=3, stride=1, out_chans=16, act="relu"),
    BlockRow(expand_ratio=64 / 16, kernel=3, stride=2, out_chans=24, act="relu"),
    BlockRow(expand_ratio=72 / 24, kernel=3, stride=1, out_chans=24, act="relu"),
    BlockRow(expand_ratio=72 / 24, kernel=5, stride=2, out_chans=40, repeats=3, se=True, act="relu"),
    BlockRow(expand_ratio=240 / 40, kernel=3, stride=2, out_chans=80, act="hardswish"),
    BlockRow(expand_ratio=200 / 80, kernel=3, stride=1, out_chans=80, act="hardswish"),
    BlockRow(expand_ratio=184 / 80, kernel=3, stride=1, out_chans=80, repeats=2, act="hardswish"),
    BlockRow(expand_ratio=480 / 80, kernel=3, stride=1, out_chans=112, repeats=2, se=True, act="hardswish"),
    BlockRow(expand_ratio=672 / 112, kernel=5, stride=2, out_chans=160, repeats=3, se=True, act="hardswish"),
)  # fmt: skip

# Table 2 of the paper.
SMALL_ROWS: tuple[BlockRow, ...] = (
    BlockRow(expand_ratio=16 / 16, kernel=3, stride=2, out_chans=16, se=True, act="relu"),
    BlockRow(expand_ratio=72 / 16, kernel=3, stride=2, out_chans=24, act="relu"),
    BlockRow(expand_ratio=88 / 24, kernel=3, stride=1, out_chans=24, act="relu"),
    BlockRow(expand_ratio=96 / 24, kernel=5, stride=2, out_chans=40, se=True, act="hardswish"),
    BlockRow(expand_ratio=240 / 40, kernel=5, stride=1, out_chans=40, repeats=2, se=True, act="hardswish"),
    BlockRow(expand_ratio=120 / 40, kernel=5, stride=1, out_chans=48, repeats=2, se=True, act="hardswish"),
    BlockRow(expand_ratio=288 / 48, kernel=5, stride=2, out_chans=96, repeats=3, se=True, act="hardswish"),
)  # fmt: skip


@register_config
@dataclasses.dataclass(frozen=True)
class MobileNetV3Config(ArchConfig):
    """MobileNetV3 hyper-parameters; the defaults are MobileNetV3-Large (see
    :class:`~wattwise.archs._common.ArchConfig` for the shared fields).

    Attributes:
        rows: the block table (Table 1 for Large, Table 2 for Small).
        stem_chans: the first 3×3 stride-2 conv (hard-swish), scaled by ``width``.
        head_chans: the 1×1 conv after the blocks (960 Large, 576 Small), scaled by ``width``.
        hidden_chans: the pooled linear layer before the classifier (1280 Large, 1024 Small);
            not scaled, as in the reference implementation.
    """

    TYPE: ClassVar[str] = "arch.mobilenetv3"

    rows: tuple[BlockRow, ...] = LARGE_ROWS
    stem_chans: int = 16
    head_chans: int = 960
    hidden_chans: int = 1280
    # The paper trains with TF's BatchNorm defaults (decay 0.99, eps 1e-3).
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01


class MobileNetV3(Classifier):
    """MobileNetV3 built from a :class:`MobileNetV3Config`.

    Example:
        >>> net = MobileNetV3(VARIANTS["mobilenetv3_small"])
        >>> net(torch.randn(1, *net.default_input_size)).shape
        torch.Size([1, 1000])
    """

    def __init__(self, cfg: MobileNetV3Config) -> None:
        super().__init__()
        self.cfg = cfg
        head = make_divisible(cfg.head_chans * cfg.width)
        self.stem, self.blocks, self.head = build_trunk(
            cfg,
            cfg.rows,
            stem_chans=make_divisible(cfg.stem_chans * cfg.width),
            head_chans=head,
            act="hardswish",
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(head, cfg.hidden_chans)
        self.hidden_act = make_act("hardswish")
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden_chans, cfg.num_classes)
        init_weights(self)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(self.hidden_act(self.hidden(x))))


VARIANTS: dict[str, MobileNetV3Config] = {
    "mobilenetv3_large": MobileNetV3Config(),
    "mobilenetv3_small": MobileNetV3Config(
        rows=SMALL_ROWS, stem_chans=16, head_chans=576, hidden_chans=1024
    ),
}
