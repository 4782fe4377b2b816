"""Training energy: the configuration that reaches a target metric with the least energy
(:func:`tune_training`, ``wattwise train``), and a run's energy and time predicted after its
first epoch (:func:`~wattwise.training.predict`).

Example:
    >>> import wattwise as ww
    >>> result = ww.tune_training("digits", target_accuracy=0.97)   # doctest: +SKIP
    >>> result.report.energy_ratio, result.best_config               # doctest: +SKIP
"""

from wattwise.training._file import TrainingFigures, TrainingReport, load_training
from wattwise.training._predict import Block, Prediction, block_ends, predict
from wattwise.training._run import PowerProfiler, RunSpec, train_run
from wattwise.training._space import TrainingSpace, training_space
from wattwise.training._tune import (
    TrainingResult,
    TrainingSettings,
    find_training_study,
    predict_run,
    run_training_worker,
    training_settings,
    tune_training,
)

__all__ = [
    "Block",
    "PowerProfiler",
    "Prediction",
    "RunSpec",
    "TrainingFigures",
    "TrainingReport",
    "TrainingResult",
    "TrainingSettings",
    "TrainingSpace",
    "block_ends",
    "find_training_study",
    "load_training",
    "predict",
    "predict_run",
    "run_training_worker",
    "train_run",
    "training_settings",
    "training_space",
    "tune_training",
]
