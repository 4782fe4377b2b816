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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wattwise import archs, errors, passes, results, search, tasks
    from wattwise._callable import make_callable
    from wattwise.deploy import deploy as _deploy
    from wattwise.measure import Measurement
    from wattwise.measure import measure as _measure
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
    from wattwise.results import Figures, Results, TrialRow
    from wattwise.search import OptimizeResult, optimize
    from wattwise.tasks import Task

    # At run time ww.measure and ww.deploy are the subpackages, made callable by this same
    # call (see _callable.py); to a type checker they are that callable module, so
    # ww.measure(net, x) is checked against measure()'s signature and is a Measurement.
    measure = make_callable("wattwise.measure", _measure)
    deploy = make_callable("wattwise.deploy", _deploy)

# Public name → (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "Measurement": ("wattwise.measure", "Measurement"),
    "Results": ("wattwise.results", "Results"),
    "TrialRow": ("wattwise.results", "TrialRow"),
    "Figures": ("wattwise.results", "Figures"),
    "results": ("wattwise.results", None),
    "Task": ("wattwise.tasks", "Task"),
    "archs": ("wattwise.archs", None),
    "errors": ("wattwise.errors", None),
    "tasks": ("wattwise.tasks", None),
    "measure": ("wattwise.measure", None),  # callable: ww.measure(model, x)
    "deploy": ("wattwise.deploy", None),  # callable: ww.deploy(model, backend=...)
    "passes": ("wattwise.passes", None),
    "compress": ("wattwise.passes", "compress"),
    "CompressionLog": ("wattwise.passes", "CompressionLog"),
    "Prune": ("wattwise.passes", "Prune"),
    "Sparsify": ("wattwise.passes", "Sparsify"),
    "Quantize": ("wattwise.passes", "Quantize"),
    "Distill": ("wattwise.passes", "Distill"),
    "save_recipe": ("wattwise.passes", "save_recipe"),
    "search": ("wattwise.search", None),
    "optimize": ("wattwise.search", "optimize"),
    "OptimizeResult": ("wattwise.search", "OptimizeResult"),
    "load_recipe": ("wattwise.passes", "load_recipe"),
}

__all__ = [
    "CompressionLog",
    "Distill",
    "Figures",
    "Measurement",
    "OptimizeResult",
    "Prune",
    "Quantize",
    "Results",
    "Sparsify",
    "Task",
    "TrialRow",
    "__version__",
    "archs",
    "compress",
    "deploy",
    "errors",
    "load_recipe",
    "measure",
    "optimize",
    "passes",
    "results",
    "save_recipe",
    "search",
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
