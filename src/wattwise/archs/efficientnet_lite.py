"""EfficientNet-Lite0 … Lite4.

Tan, Le. "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks." ICML
2019. https://arxiv.org/abs/1905.11946 — and Google's Lite variants for mobile and edge
accelerators (Liu, "Higher accuracy on vision models with EfficientNet-Lite", TensorFlow
blog, March 2020; ``efficientnet/lite/efficientnet_lite_builder.py`` in tensorflow/tpu).

The Lite changes to EfficientNet-B0: no squeeze-and-excitation (poorly supported by mobile
accelerators), ReLU6 instead of swish (friendlier to quantization), and the stem (32) and head
(1280) channels — and the repeats of the first and last rows — kept fixed while scaling,
since they are the layers that grow the model most for the least accuracy.

Compound scaling (width, depth, resolution, dropout): lite0 (1.0, 1.0, 224, 0.2), lite1 (1.0,
1.1, 240, 0.2), lite2 (1.1, 1.2, 260, 0.3), lite3 (1.2, 1.4, 280, 0.3), lite4 (1.4, 1.8, 300,
0.3). Depth rounds up (``ceil``), width to a multiple of 8. Lite0 at 224: 4.7M parameters,
~400M multiply-adds.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from wattwise.archs._common import ArchConfig, BlockRow, Classifier, build_trunk, init_weights
from wattwise.config import register_config

# EfficientNet-B0's table (paper, Table 1: MBConv{expansion}, kernel, stride, channels,
# layers), with ReLU6 and no SE.
ROWS: tuple[BlockRow, ...] = (
    BlockRow(expand_ratio=1, kernel=3, stride=1, out_chans=16, repeats=1),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=24, repeats=2),
    BlockRow(expand_ratio=6, kernel=5, stride=2, out_chans=40, repeats=2),
    BlockRow(expand_ratio=6, kernel=3, stride=2, out_chans=80, repeats=3),
    BlockRow(expand_ratio=6, kernel=5, stride=1, out_chans=112, repeats=3),
    BlockRow(expand_ratio=6, kernel=5, stride=2, out_chans=192, repeats=4),
    BlockRow(expand_ratio=6, kernel=3, stride=1, out_chans=320, repeats=1),
)


@register_config
@dataclasses.dataclass(frozen=True)
class EfficientNetLiteConfig(ArchConfig):
    """EfficientNet-Lite hyper-parameters; the defaults are Lite0 (see
    :class:`~wattwise.archs._common.ArchConfig` for the shared fields).

    Attributes:
        rows: the block table (EfficientNet-B0's, ReLU6, no SE).
        stem_chans: the first 3×3 stride-2 conv; not scaled (Lite).
        head_chans: the last 1×1 conv; not scaled (Lite).
    """

    TYPE: ClassVar[str] = "arch.efficientnet_lite"

    rows: tuple[BlockRow, ...] = ROWS
    stem_chans: int = 32
    head_chans: int = 1280
    # TF's BatchNorm defaults (decay 0.99, eps 1e-3) and "SAME" padding, which the ported
    # ImageNet weights were trained with.
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    tf_same_padding: bool = True


class EfficientNetLite(Classifier):
    """EfficientNet-Lite built from an :class:`EfficientNetLiteConfig`.

    Example:
        >>> net = EfficientNetLite(VARIANTS["efficientnet_lite2"])
        >>> net.default_input_size
        (3, 260, 260)
    """

    def __init__(self, cfg: EfficientNetLiteConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem, self.blocks, self.head = build_trunk(
            cfg,
            cfg.rows,
            stem_chans=cfg.stem_chans,
            head_chans=cfg.head_chans,
            act="relu6",
            fixed_depth_rows=(0, -1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.head_chans, cfg.num_classes)
        init_weights(self)


# (width, depth, resolution, dropout) from efficientnet_lite_builder.efficientnet_lite_params.
_SCALING: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

VARIANTS: dict[str, EfficientNetLiteConfig] = {
    name: EfficientNetLiteConfig(width=w, depth=d, resolution=r, dropout=p)
    for name, (w, d, r, p) in _SCALING.items()
}
