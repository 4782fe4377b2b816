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

from typing import TYPE_CHECKING, Any

from wattwise._lazy import Lazy, load_lazy

if TYPE_CHECKING:
    from wattwise import archs, errors, passes, results, search, tasks, training
    from wattwise._callable import make_callable
    from wattwise.deploy import deploy as _deploy
    from wattwise.measure import GenerateSpec, Measurement
    from wattwise.measure import measure as _measure
    from wattwise.passes import (
        Attention,
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
    from wattwise.tasks import Task, TrainConfig
    from wattwise.training import TrainingResult, tune_training

    # At run time ww.measure and ww.deploy are the subpackages, made callable by this same
    # call (see _callable.py); to a type checker they are that callable module, so
    # ww.measure(net, x) is checked against measure()'s signature and is a Measurement.
    measure = make_callable("wattwise.measure", _measure)
    deploy = make_callable("wattwise.deploy", _deploy)

# Names read from a module of the package, by module; the subpackages are names themselves
# (measure and deploy are callable too: see above).
_SUBPACKAGES = (
    "archs",
    "deploy",
    "errors",
    "measure",
    "passes",
    "results",
    "search",
    "tasks",
    "training",
)
_NAMES_IN = {
    "wattwise.measure": ("Measurement", "GenerateSpec"),
    "wattwise.results": ("Results", "TrialRow", "Figures"),
    "wattwise.tasks": ("Task", "TrainConfig"),
    "wattwise.training": ("tune_training", "TrainingResult"),
    "wattwise.passes": (
        "compress",
        "Attention",
        "CompressionLog",
        "Prune",
        "Sparsify",
        "Quantize",
        "Distill",
        "save_recipe",
        "load_recipe",
    ),
    "wattwise.search": ("optimize", "OptimizeResult"),
}
_LAZY: Lazy = {
    **{name: (f"wattwise.{name}", None) for name in _SUBPACKAGES},
    **{name: (module, name) for module, names in _NAMES_IN.items() for name in names},
}

__all__ = [
    "Attention",
    "CompressionLog",
    "Distill",
    "Figures",
    "GenerateSpec",
    "Measurement",
    "OptimizeResult",
    "Prune",
    "Quantize",
    "Results",
    "Sparsify",
    "Task",
    "TrainConfig",
    "TrainingResult",
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
    "training",
    "tune_training",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    return load_lazy(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wattwise")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
