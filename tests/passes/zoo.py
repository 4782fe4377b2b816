"""A small model zoo for the pass contract suite, all sized for the digits task.

Every model takes a ``(N, 1, 8, 8)`` batch and returns ``(N, 10)`` logits. Between them they
cover the structures a compression pass must handle: residual adds, channel concatenation,
grouped and depthwise convolutions, squeeze-excite gating, Linear stacks, multi-head
attention with a learned position embedding, and a recurrent layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NUM_CLASSES = 10


def _cbr(c_in: int, c_out: int, *, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class _Basic(nn.Module):
    """ResNet basic block; the second conv is grouped (ResNeXt-style) to exercise groups."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _cbr(c_in, c_out, stride=stride)
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(c_out)
        )
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.short(x))


class TinyResNet(nn.Module):
    """Two-branch stem joined by ``torch.cat``, then residual blocks with adds."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_a = _cbr(1, 8)
        self.stem_b = _cbr(1, 8, k=1)
        self.layer1 = _Basic(16, 16, 1)
        self.layer2 = _Basic(16, 32, 2)
        self.layer3 = _Basic(32, 32, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.stem_a(x), self.stem_b(x)], dim=1)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class _InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: expand 1×1, depthwise 3×3, squeeze-excite, project 1×1."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = _cbr(c_in, hidden, k=1)
        self.dw = _cbr(hidden, hidden, stride=stride, groups=hidden)
        self.se = _SqueezeExcite(hidden, max(4, hidden // 4))
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.residual else out


class TinyMobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(1, 16, stride=2)
        self.blocks = nn.Sequential(
            _InvertedResidual(16, 16, 2, 1),
            _InvertedResidual(16, 24, 2, 2),
        )
        self.head = _cbr(24, 64, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _EncoderBlock(nn.Module):
    """Pre-norm transformer block on ``nn.MultiheadAttention`` (batch first)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """The 8 pixel rows are 8 tokens of 8 features."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = nn.Parameter(torch.zeros(1, 8, dim))
        self.blocks = nn.Sequential(*(_EncoderBlock(dim, heads, 2 * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.flatten(1, 2)) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


class TinyGRU(nn.Module):
    """The 8 pixel rows are a sequence of 8 steps; the last hidden state feeds a Linear head."""

    def __init__(self, hidden: int = 48) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 32)
        self.rnn = nn.GRU(32, hidden, batch_first=True)
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(torch.relu(self.proj(x.flatten(1, 2))))
        return self.head(out[:, -1])


ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet": TinyResNet,
    "mobilenet": TinyMobileNet,
    "mlp": TinyMLP,
    "transformer": TinyTransformer,
    "gru": TinyGRU,
}


class Untraceable(nn.Module):
    """Picks its head by a tensor's value: a tracer follows one branch and never sees the other,
    so pruning the shared conv would break the head it did not see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head_pos = nn.Linear(8, NUM_CLASSES)
        self.head_neg = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3))
        if h.sum() > 0:
            return self.head_pos(h)
        return self.head_neg(h)
