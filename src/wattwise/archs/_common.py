"""Building blocks shared by the MobileNet / EfficientNet-Lite families (ResNet reuses
:class:`ConvBNAct`, :class:`DropPath`, :func:`make_divisible` and :func:`init_weights`).

Everything here is a plain ``nn.Module`` with static structure: no in-place activations, no
Python branches on tensor values, so the models trace with ``torch.fx`` / ``torch.export`` and
Torch-Pruning can follow every channel through its dependency graph.

The block table of each family is a tuple of :class:`BlockRow`, written as in the papers'
tables (one row = ``repeats`` identical blocks, the first of which carries the stride).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any, ClassVar

import torch
from torch import nn

from wattwise._core import check_choice
from wattwise.config import Config, register_config
from wattwise.errors import InputError

# Activation names a block row may use; the modules are torch's own (never in place).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,  # x * relu6(x + 3) / 6, Howard et al. 2019, eq. 2
    "hardsigmoid": nn.Hardsigmoid,  # relu6(x + 3) / 6
}


def make_act(name: str | None) -> nn.Module:
    """A fresh activation module for ``name`` (``None`` → identity, a linear bottleneck)."""
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise InputError(
            f"unknown activation {name!r}; choose from: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, losing at most 10%.

    This is the rule of the TF MobileNet/EfficientNet code (``_make_divisible`` /
    ``round_filters``): hardware likes multiples of 8, and never dropping more than 10% keeps
    a width multiplier from shrinking a layer much more than asked.

    Example:
        >>> make_divisible(16 * 0.35), make_divisible(32 * 1.1), make_divisible(11)
        (8, 32, 16)
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def scale_repeats(repeats: int, depth: float) -> int:
    """Blocks in a row after a depth multiplier: ``ceil`` as in EfficientNet (never below 1)."""
    return max(1, math.ceil(repeats * depth))


@register_config
@dataclasses.dataclass(frozen=True)
class BlockRow(Config):
    """One row of a paper's block table: ``repeats`` inverted-residual blocks.

    Attributes:
        expand_ratio: hidden channels / input channels (the paper's ``t``; MobileNetV3's
            "exp size" column divided by the input channels). 1 means no expansion conv.
        kernel: depthwise kernel size (odd).
        stride: stride of the first block of the row (1 or 2); the others use 1.
        out_chans: output channels before the width multiplier.
        repeats: number of blocks before the depth multiplier.
        se: squeeze-and-excitation after the depthwise conv (MobileNetV3).
        act: activation of the expansion and depthwise convs (the projection is linear).
    """

    TYPE: ClassVar[str] = "arch.block_row"

    expand_ratio: float
    kernel: int
    stride: int
    out_chans: int
    repeats: int = 1
    se: bool = False
    act: str = "relu6"

    def __post_init__(self) -> None:
        if not _is_number(self.expand_ratio) or not self.expand_ratio >= 1:
            raise InputError(f"BlockRow.expand_ratio must be >= 1, got {self.expand_ratio!r}")
        if not _is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
            raise InputError(f"BlockRow.kernel must be a positive odd int, got {self.kernel!r}")
        if self.stride not in (1, 2) or isinstance(self.stride, bool):
            raise InputError(f"BlockRow.stride must be 1 or 2, got {self.stride!r}")
        if not _is_int(self.out_chans) or self.out_chans < 1:
            raise InputError(f"BlockRow.out_chans must be an int >= 1, got {self.out_chans!r}")
        if not _is_int(self.repeats) or self.repeats < 1:
            raise InputError(f"BlockRow.repeats must be an int >= 1, got {self.repeats!r}")
        if not isinstance(self.se, bool):
            raise InputError(f"BlockRow.se must be a bool, got {self.se!r}")
        check_choice(self.act, sorted(ACTIVATIONS), what="BlockRow.act")


@dataclasses.dataclass(frozen=True)
class ArchConfig(Config):
    """Fields every family shares. Subclasses add their block table and head.

    Attributes:
        width: channel multiplier (the total one: efficientnet_lite2 is 1.1).
        depth: multiplier on each row's ``repeats`` (rounded up).
        num_classes: outputs of the classifier.
        in_chans: input channels (3 for RGB, 1 for grey digits).
        dropout: dropout probability before the classifier.
        resolution: the side of the square input the variant was designed for; the networks
            pool globally, so other sizes work too.
        drop_path_rate: stochastic-depth rate of the last block (0 = off), scaled linearly
            from 0 at the first block as in EfficientNet.
        bn_eps, bn_momentum: BatchNorm settings (torch convention: momentum 0.01 is TF's 0.99).
        tf_same_padding: pad stride-2 convs like TF's "SAME" (more on the bottom/right) instead
            of symmetrically; needed to reproduce weights trained in TF.
    """

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float = 0.2
    resolution: int = 224
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    tf_same_padding: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("width", "depth"):
            value = getattr(self, field)
            if not _is_number(value) or not 0 < value <= 16:
                raise InputError(f"{name}.{field} must be in (0, 16], got {value!r}")
        for field, low in (("num_classes", 1), ("in_chans", 1), ("resolution", 8)):
            value = getattr(self, field)
            if not _is_int(value) or value < low:
                raise InputError(f"{name}.{field} must be an int >= {low}, got {value!r}")
        for field in ("dropout", "drop_path_rate"):
            value = getattr(self, field)
            if not _is_number(value) or not 0 <= value < 1:
                raise InputError(f"{name}.{field} must be in [0, 1), got {value!r}")
        if not _is_number(self.bn_eps) or self.bn_eps <= 0:
            raise InputError(f"{name}.bn_eps must be > 0, got {self.bn_eps!r}")
        if not _is_number(self.bn_momentum) or not 0 < self.bn_momentum <= 1:
            raise InputError(f"{name}.bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        if not isinstance(self.tf_same_padding, bool):
            raise InputError(f"{name}.tf_same_padding must be a bool")
        rows = getattr(self, "rows", None)
        if rows is not None:
            # from_dict hands rows over as a list of dicts; keep the config frozen and hashable.
            if not isinstance(rows, list | tuple) or not rows:
                raise InputError(f"{name}.rows must be a non-empty sequence of BlockRow")
            fixed = tuple(BlockRow.from_dict(r) if isinstance(r, dict) else r for r in rows)
            if not all(isinstance(r, BlockRow) for r in fixed):
                raise InputError(f"{name}.rows must hold BlockRow (or dicts of their fields)")
            object.__setattr__(self, "rows", fixed)

    @property
    def default_input_size(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one input at the design resolution."""
        return (self.in_chans, self.resolution, self.resolution)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → activation; children ``[pad,] conv, bn, act``.

    With ``tf_same_padding`` and stride 2 the padding is TF's "SAME" for even input sizes:
    ``k // 2 - 1`` before and ``k // 2`` after, done by a ``ZeroPad2d`` so the graph stays
    static (TF computes it from the input size; for odd sizes the output size is the same and
    only the alignment differs by half a pixel).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel: int = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        act: str | None = "relu6",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        tf_same_padding: bool = False,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        padding = kernel // 2
        if tf_same_padding and stride > 1 and kernel > 1:
            layers["pad"] = nn.ZeroPad2d(
                (kernel // 2 - 1, kernel // 2, kernel // 2 - 1, kernel // 2)
            )
            padding = 0
        layers["conv"] = nn.Conv2d(
            in_chans, out_chans, kernel, stride, padding, groups=groups, bias=False
        )
        layers["bn"] = nn.BatchNorm2d(out_chans, eps=bn_eps, momentum=bn_momentum)
        layers["act"] = make_act(act)
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    """Channel attention of Hu et al. 2018 as MobileNetV3 uses it (Howard et al. 2019, §5.3):
    global pool → 1×1 conv → ReLU → 1×1 conv → hard-sigmoid gate → scale the input."""

    def __init__(
        self, chans: int, squeeze_chans: int, act: str = "relu", gate: str = "hardsigmoid"
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(chans, squeeze_chans, 1)
        self.act = make_act(act)
        self.fc2 = nn.Conv2d(squeeze_chans, chans, 1)
        self.gate = make_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample in training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:  # module state, not data: traces statically
            return x
        keep = 1.0 - self.rate
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class InvertedResidual(nn.Module):
    """The inverted residual with linear bottleneck (Sandler et al. 2018, §3.3), optionally with
    squeeze-and-excitation (MobileNetV3) — EfficientNet calls it MBConv.

    ``expand`` (1×1, skipped when the ratio is 1) → ``dw`` (k×k depthwise) → ``se`` →
    ``project`` (1×1, linear), plus the identity shortcut when stride is 1 and channels match.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se: bool = False,
        act: str = "relu6",
        drop_path_rate: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        tf_same_padding: bool = False,
    ) -> None:
        super().__init__()
        mid = in_chans if expand_ratio == 1 else make_divisible(in_chans * expand_ratio)
        self.expand: nn.Module = (
            nn.Identity()
            if mid == in_chans
            else ConvBNAct(in_chans, mid, 1, act=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
        )
        self.dw = ConvBNAct(
            mid,
            mid,
            kernel,
            stride,
            groups=mid,
            act=act,
            tf_same_padding=tf_same_padding,
            bn_eps=bn_eps,
            bn_momentum=bn_momentum,
        )
        # MobileNetV3: squeeze to a quarter of the expanded channels, kept a multiple of 8.
        self.se: nn.Module = SqueezeExcite(mid, make_divisible(mid / 4)) if se else nn.Identity()
        self.project = ConvBNAct(
            mid, out_chans, 1, act=None, bn_eps=bn_eps, bn_momentum=bn_momentum
        )
        self.has_shortcut = stride == 1 and in_chans == out_chans
        self.drop_path: nn.Module = (
            DropPath(drop_path_rate) if self.has_shortcut and drop_path_rate > 0 else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        if self.has_shortcut:  # fixed at construction, so fx/export see one static graph
            out = x + self.drop_path(out)
        return out


def build_blocks(
    rows: tuple[BlockRow, ...],
    in_chans: int,
    cfg: ArchConfig,
    *,
    fixed_depth_rows: tuple[int, ...] = (),
) -> tuple[nn.Sequential, int]:
    """Expand a block table into one flat ``nn.Sequential`` of :class:`InvertedResidual`.

    Args:
        rows: the family's table before scaling.
        in_chans: channels coming out of the stem (already scaled).
        cfg: supplies width, depth, BatchNorm, padding and drop-path settings.
        fixed_depth_rows: indices of rows (negative allowed) whose repeats the depth multiplier
            leaves alone (EfficientNet-Lite keeps the first and last).

    Returns:
        The blocks and their output channel count.
    """
    fixed = {i % len(rows) for i in fixed_depth_rows}
    plan: list[tuple[BlockRow, int, int]] = []  # (row, out_chans, stride)
    for i, row in enumerate(rows):
        repeats = row.repeats if i in fixed else scale_repeats(row.repeats, cfg.depth)
        out = make_divisible(row.out_chans * cfg.width)
        plan += [(row, out, row.stride if j == 0 else 1) for j in range(repeats)]
    blocks = []
    for idx, (row, out, stride) in enumerate(plan):
        blocks.append(
            InvertedResidual(
                in_chans,
                out,
                kernel=row.kernel,
                stride=stride,
                expand_ratio=row.expand_ratio,
                se=row.se,
                act=row.act,
                drop_path_rate=cfg.drop_path_rate * idx / len(plan),
                bn_eps=cfg.bn_eps,
                bn_momentum=cfg.bn_momentum,
                tf_same_padding=cfg.tf_same_padding,
            )
        )
        in_chans = out
    return nn.Sequential(*blocks), in_chans


def build_trunk(
    cfg: ArchConfig,
    rows: tuple[BlockRow, ...],
    *,
    stem_chans: int,
    head_chans: int,
    act: str,
    fixed_depth_rows: tuple[int, ...] = (),
) -> tuple[ConvBNAct, nn.Sequential, ConvBNAct]:
    """What every MobileNet / EfficientNet-Lite is made of before pooling: the stem (a 3×3
    stride-2 :class:`ConvBNAct` to ``stem_chans``), the blocks of ``rows``
    (:func:`build_blocks`) and the head (a 1×1 :class:`ConvBNAct` to ``head_chans``), both
    convs with ``act`` and the config's BatchNorm and padding settings.

    The families differ only in the channel counts (how ``width`` scales the stem and the head)
    and the activation, which the caller passes.
    """
    stem = ConvBNAct(
        cfg.in_chans,
        stem_chans,
        3,
        2,
        act=act,
        tf_same_padding=cfg.tf_same_padding,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
    )
    blocks, chans = build_blocks(rows, stem_chans, cfg, fixed_depth_rows=fixed_depth_rows)
    head = ConvBNAct(chans, head_chans, 1, act=act, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
    return stem, blocks, head


def init_weights(model: nn.Module) -> None:
    """The initialisation of the reference implementations (fan-out He for convs, N(0, 0.01)
    for linear layers, unit BatchNorm)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class Classifier(nn.Module):
    """Base of the family models: ``features`` → global average pool → head → ``fc``.

    Subclasses build, in this order, ``stem``, ``blocks``, ``head`` (a 1×1 ConvBNAct; the
    identity for ResNet, which has none), ``pool``, ``dropout`` and ``fc`` (the last layer, the
    one a pruner must leave alone), then call :func:`init_weights`. MobileNetV3 adds a hidden
    linear layer in :meth:`forward_head`.
    """

    cfg: ArchConfig
    stem: nn.Module
    blocks: nn.Sequential
    head: nn.Module
    pool: nn.Module
    dropout: nn.Module
    fc: nn.Linear

    @property
    def default_input_size(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` the variant was designed for, e.g. ``(3, 224, 224)``."""
        return self.cfg.default_input_size

    @property
    def num_features(self) -> int:
        """Width of the vector the final ``fc`` layer reads."""
        return self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the last 1×1 conv, ``(N, C, H/32, W/32)``."""
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the feature map and classify it."""
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
