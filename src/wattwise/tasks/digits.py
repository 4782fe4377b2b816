"""The built-in ``digits`` task: scikit-learn's bundled 8×8 handwritten digits and a small CNN.

It needs no download (the 1797 images ship inside scikit-learn), trains to ≥97% validation
accuracy in seconds on a laptop CPU, and its network is made of plain prunable modules, so the
whole compress → deploy → measure loop can run end to end anywhere, including CI.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from wattwise.errors import InputError
from wattwise.tasks._task import Task

__all__ = ["DigitsCNN", "digits"]

NUM_CLASSES = 10
NATIVE_SIZE = 8  # load_digits images are 8×8
_MAX_SIZE = 512  # larger upsampling adds no information, only compute
# The baseline training recipe: 15 epochs reach 99-100% validation accuracy in 2-3 s on two
# CPU cores (size 8 or 32); fewer epochs leave the upsampled variant short of 97% on some seeds.
EPOCHS = 15
LR = 3e-3
BATCH_SIZE = 64


def _channels(base: int, width: float) -> int:
    # Keep at least 4 channels so even a very thin student still has a usable feature map.
    return max(4, round(base * width))


def _extra_pools(input_size: int) -> int:
    """How many 2× poolings bring ``input_size`` down to about 8 (0 for 8..15, 2 for 32)."""
    return max(0, (input_size // NATIVE_SIZE).bit_length() - 1)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own, and plain conv→BN pairs are what
    # pruners and quantizers (BN folding) recognise.
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class DigitsCNN(nn.Module):
    """A small CNN for the digits task: three conv→BN→ReLU blocks, global pooling, a linear head.

    Args:
        width: multiplier on the channel counts (32, 64, 128 at ``width=1.0``).
        num_classes: size of the output layer.
        input_size: side of the square input image; it sets :attr:`default_input_size` only,
            because global pooling makes the network accept any size.

    Example:
        >>> model = DigitsCNN(width=0.5)
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, width: float = 1.0, num_classes: int = NUM_CLASSES, input_size: int = NATIVE_SIZE
    ) -> None:
        super().__init__()
        if not (isinstance(width, int | float) and width > 0):
            raise InputError(f"DigitsCNN.width must be > 0, got {width!r}")
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise InputError(f"DigitsCNN.num_classes must be an int >= 1, got {num_classes!r}")
        if not (isinstance(input_size, int) and input_size >= 1):
            raise InputError(f"DigitsCNN.input_size must be an int >= 1, got {input_size!r}")
        c1, c2, c3 = (_channels(c, width) for c in (32, 64, 128))
        self.width = float(width)
        self.default_input_size = (1, input_size, input_size)
        # Larger (upsampled) inputs are pooled back towards 8×8 after the first block, so the
        # receptive field still covers a digit and the cost stays that of the 8×8 network.
        extra_pools = [nn.MaxPool2d(2) for _ in range(_extra_pools(input_size))]
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),
            *extra_pools,
            *_conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c2, c3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _load_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as (N, 1, size, size) floats in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    # Pixel values are counts 0..16 (of a 4×4 block of the original 32×32 bitmap).
    images = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != NATIVE_SIZE:
        images = nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
    labels = torch.as_tensor(data.target, dtype=torch.long)
    return images, labels


def digits(*, size: int = NATIVE_SIZE, seed: int = 0) -> Task:
    """The digits classification task (10 classes, 1437 training and 360 validation images).

    Args:
        size: side of the input images; 8 is the data's native size, larger sizes (e.g. 32 for
            networks that downsample 5 times) upsample with bilinear interpolation.
        seed: seeds the stratified 80/20 train/validation split and training.

    Returns:
        A :class:`Task` named ``"digits"`` (``"digits32"`` etc. for other sizes) whose model
        factory builds an untrained :class:`DigitsCNN`.

    Example:
        >>> task = digits()
        >>> model = task.fit(task.model_factory())   # a few seconds on a CPU
        >>> task.evaluate(model) >= 0.97
        True
    """
    from sklearn.model_selection import train_test_split
    from torch.utils.data import TensorDataset

    if isinstance(size, bool) or not isinstance(size, int) or not NATIVE_SIZE <= size <= _MAX_SIZE:
        raise InputError(
            f"digits: size must be an int in [{NATIVE_SIZE}, {_MAX_SIZE}], got {size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"digits: seed must be an int >= 0, got {seed!r}")
    images, labels = _load_images(size)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=0.2,
        stratify=labels.numpy(),
        random_state=seed,
    )
    train_t = torch.as_tensor(train_idx)
    val_t = torch.as_tensor(val_idx)
    return Task(
        name="digits" if size == NATIVE_SIZE else f"digits{size}",
        # functools.partial of a module-level class pickles, so the harness can send it to its
        # measuring child process.
        model_factory=functools.partial(DigitsCNN, width=1.0, input_size=size),
        train_data=TensorDataset(images[train_t], labels[train_t]),
        val_data=TensorDataset(images[val_t], labels[val_t]),
        example_input=images[train_t[:1]].clone(),
        num_classes=NUM_CLASSES,
        epochs=EPOCHS,
        lr=LR,
        batch_size=BATCH_SIZE,
        seed=seed,
    )
