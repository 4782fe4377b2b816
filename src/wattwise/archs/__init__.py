"""Architecture families: MobileNetV2, MobileNetV3 (Small/Large), EfficientNet-Lite0–4, and
ResNet-18/34/50 (the classic baseline and teacher).

Our own readable implementations (one file per family), each driven by a frozen config whose
block table reads like the paper's. Every model traces with ``torch.fx`` / ``torch.export`` and
prunes with Torch-Pruning.

Example:
    >>> import wattwise as ww
    >>> ww.archs.list()[:2]
    ['efficientnet_lite0', 'efficientnet_lite1']
    >>> net = ww.archs.create("mobilenetv3_small", width=0.75, num_classes=10)
    >>> ww.archs.info("efficientnet_lite0").pretrained
    True
"""

from wattwise.archs._common import (
    ArchConfig,
    BlockRow,
    Classifier,
    ConvBNAct,
    InvertedResidual,
    SqueezeExcite,
    make_divisible,
)
from wattwise.archs._pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    imagenet_classes,
    load_pretrained,
    preprocess,
)
from wattwise.archs._registry import ArchInfo, create, info

# ``list`` shadows the builtin inside this package only; it is the documented public name.
from wattwise.archs._registry import list_archs as list
from wattwise.archs._student import StudentCandidate, StudentChoice, student_for
from wattwise.archs.efficientnet_lite import EfficientNetLite, EfficientNetLiteConfig
from wattwise.archs.mobilenetv2 import MobileNetV2, MobileNetV2Config
from wattwise.archs.mobilenetv3 import MobileNetV3, MobileNetV3Config
from wattwise.archs.resnet import ResNet, ResNetConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "ArchConfig",
    "ArchInfo",
    "BlockRow",
    "Classifier",
    "ConvBNAct",
    "EfficientNetLite",
    "EfficientNetLiteConfig",
    "InvertedResidual",
    "MobileNetV2",
    "MobileNetV2Config",
    "MobileNetV3",
    "MobileNetV3Config",
    "ResNet",
    "ResNetConfig",
    "SqueezeExcite",
    "StudentCandidate",
    "StudentChoice",
    "create",
    "imagenet_classes",
    "info",
    "list",
    "load_pretrained",
    "make_divisible",
    "preprocess",
    "student_for",
]
