"""The energy-aware search: ``optimize`` (an Optuna study over compression recipes, students and
deployments, each candidate measured for real), its workers, and the budget check.

Example:
    >>> import wattwise as ww
    >>> result = ww.optimize("digits", max_accuracy_drop=0.01)      # doctest: +SKIP
    >>> result.best.figures.energy_j_per_item, result.best.figures.energy_source  # doctest: +SKIP

Nothing heavy is imported here: Optuna and torch load when a search runs.
"""

from wattwise.search._check import Breach, check_results, load_results
from wattwise.search._optimize import (
    DEFAULT_TRIALS,
    OptimizeResult,
    optimize,
    report_study,
    run_worker,
)
from wattwise.search._progress import SearchProgress
from wattwise.search._space import (
    Candidate,
    ModelChoice,
    SearchSpace,
    default_space,
    load_space,
    seed_params,
)
from wattwise.search._storage import open_storage
from wattwise.search._study import SearchSettings

__all__ = [
    "DEFAULT_TRIALS",
    "Breach",
    "Candidate",
    "ModelChoice",
    "OptimizeResult",
    "SearchProgress",
    "SearchSettings",
    "SearchSpace",
    "check_results",
    "default_space",
    "load_results",
    "load_space",
    "open_storage",
    "optimize",
    "report_study",
    "run_worker",
    "seed_params",
]
