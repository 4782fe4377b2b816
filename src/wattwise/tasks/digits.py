"""The built-in ``digits`` task: scikit-learn's bundled 8×8 handwritten digits and a small CNN.

It needs no download (the 1797 images ship inside scikit-learn, read here without importing it), trains to ≥97% validation
accuracy in seconds on a laptop CPU, and its network is made of plain prunable modules, so the
whole compress → deploy → measure loop can run end to end anywhere, including CI.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
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
VAL_FRACTION = 0.2  # 1437 training and 360 validation images


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


def _digits_csv() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn.

    Importing ``sklearn.datasets`` costs about 1.2 s, paid again by every trial, baseline and
    confirmation child that builds this task, for a 200 KB file we can read ourselves.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 images as (N, 8, 8) pixel counts 0..16, and their labels, as ``load_digits``
    gives them (it reads the same file)."""
    path = _digits_csv()
    if path is None:  # a layout we do not know: let scikit-learn find its own file
        from sklearn.datasets import load_digits

        data = load_digits()
        return np.asarray(data.images, dtype=np.float32), np.asarray(data.target)
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    return pixels.reshape(-1, NATIVE_SIZE, NATIVE_SIZE), labels


def _load_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as (N, 1, size, size) floats in [0, 1], and their labels."""
    pixels, target = _load_arrays()
    # Pixel values are counts 0..16 (of a 4×4 block of the original 32×32 bitmap).
    images = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != NATIVE_SIZE:
        images = nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
    labels = torch.as_tensor(target, dtype=torch.long)
    return images, labels


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices, each class split in proportion (a seeded shuffle).

    The validation set holds ``ceil(val_fraction * N)`` items, shared out between the classes
    by largest remainder, so every class keeps its share to within one item.

    Example:
        >>> train, val = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5, seed=0)
        >>> len(train), len(val), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[val])
        (5, 5, [0, 0, 1, 1, 1])
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n_val = math.ceil(val_fraction * len(labels))
    exact = counts * (n_val / len(labels))
    take = np.floor(exact).astype(np.int64)
    # Largest remainders first; ties go to the class listed first, so the split is stable.
    by_remainder = np.argsort(-(exact - take), kind="stable")
    take[by_remainder[: n_val - int(take.sum())]] += 1
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls, n in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        val.append(members[:n])
        train.append(members[n:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


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
    from torch.utils.data import TensorDataset

    if isinstance(size, bool) or not isinstance(size, int) or not NATIVE_SIZE <= size <= _MAX_SIZE:
        raise InputError(
            f"digits: size must be an int in [{NATIVE_SIZE}, {_MAX_SIZE}], got {size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"digits: seed must be an int >= 0, got {seed!r}")
    images, labels = _load_images(size)
    train_idx, val_idx = stratified_split(labels.numpy(), VAL_FRACTION, seed)
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
