"""Tasks: a model factory with its data and metric, and the built-in ones.

>>> import wattwise as ww
>>> task = ww.tasks.get("digits")            # built-in, no download
>>> task = ww.tasks.load_task("pkg.mod:make_task")  # doctest: +SKIP

Note: ``wattwise.tasks.digits`` is the task function; the module of the same name is
``sys.modules["wattwise.tasks.digits"]`` (``from wattwise.tasks.digits import DigitsCNN`` works).
"""

from wattwise.tasks._builtin import get, load_task, names
from wattwise.tasks._task import Task, accuracy
from wattwise.tasks._train_config import TrainConfig, scaled_lr
from wattwise.tasks.digits import DigitsCNN, digits
from wattwise.tasks.photos import lite0_photos
from wattwise.tasks.tinylm import tinylm_task

__all__ = [
    "DigitsCNN",
    "Task",
    "TrainConfig",
    "accuracy",
    "digits",
    "get",
    "lite0_photos",
    "load_task",
    "names",
    "scaled_lr",
    "tinylm_task",
]
