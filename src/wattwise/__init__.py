"""wattwise: measure and reduce the energy of PyTorch models, with every joule labelled.

Every energy figure carries its source (``measured:nvml``, ``measured:rapl`` or
``estimated:<model>``) and its relative uncertainty.

Example:
    >>> import torch, wattwise as ww
    >>> net = ww.archs.create("mobilenetv3_small", num_classes=10)
    >>> m = ww.measure(net, torch.randn(1, 3, 224, 224), batch_size=32)   # -> ww.Measurement
    >>> m.energy_j_per_item, m.energy_source, m.energy_uncertainty

Names load on first use (module ``__getattr__``), so ``import wattwise`` and ``wattwise --help``
stay instant: nothing here imports torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wattwise import archs, errors, passes, tasks
    from wattwise.measure import Measurement
    from wattwise.passes import (
        CompressionLog,
        Distill,
        Prune,
        Quantize,
        Sparsify,
        compress,
        load_recipe,
        save_recipe,
    )
    from wattwise.tasks import Task

# Public name → (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "Measurement": ("wattwise.measure", "Measurement"),
    "Task": ("wattwise.tasks", "Task"),
    "archs": ("wattwise.archs", None),
    "errors": ("wattwise.errors", None),
    "tasks": ("wattwise.tasks", None),
    "passes": ("wattwise.passes", None),
    "compress": ("wattwise.passes", "compress"),
    "CompressionLog": ("wattwise.passes", "CompressionLog"),
    "Prune": ("wattwise.passes", "Prune"),
    "Sparsify": ("wattwise.passes", "Sparsify"),
    "Quantize": ("wattwise.passes", "Quantize"),
    "Distill": ("wattwise.passes", "Distill"),
    "save_recipe": ("wattwise.passes", "save_recipe"),
    "load_recipe": ("wattwise.passes", "load_recipe"),
}

__all__ = [
    "CompressionLog",
    "Distill",
    "Measurement",
    "Prune",
    "Quantize",
    "Sparsify",
    "Task",
    "__version__",
    "archs",
    "compress",
    "errors",
    "load_recipe",
    "measure",
    "passes",
    "save_recipe",
    "tasks",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'wattwise' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wattwise")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


class _CallableModule(types.ModuleType):
    """The ``wattwise.measure`` subpackage, callable as its harness: ``ww.measure(model, x)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.measure(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``wattwise`` module's class: it makes ``wattwise.measure`` callable.

    ``wattwise.measure`` is both a subpackage (``wattwise.measure.Measurement``) and the
    function everyone calls (``ww.measure(...)``). Importing a subpackage rebinds the parent's
    attribute to the module object whatever was there, so a plain function attribute would be
    overwritten by the first ``import wattwise.measure``; a property on the module's class wins
    over that binding, and serves the subpackage made callable.
    """

    @property
    def measure(self) -> Any:
        module = importlib.import_module("wattwise.measure")
        if not isinstance(module, _CallableModule):
            module.__class__ = _CallableModule
        return module

    @measure.setter
    def measure(self, value: Any) -> None:
        # The import system binds the subpackage here; the getter above already serves it.
        pass


sys.modules[__name__].__class__ = _Package
