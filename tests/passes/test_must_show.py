"""What the compression passes must show on digits, with the task's own DigitsCNN.

* pruning half the channels, then fine-tuning, cuts MACs at least 3× for at most one point;
* pt2e int8 costs at most one point;
* distilling into a student with at least 4× fewer MACs stays within 1.5 points;
* a YAML recipe re-applied with the same seed gives the identical model.

(Bad input — unknown pass, ratio 1.2, a protected layer that does not exist, an untraceable
model — is covered in ``test_compress.py``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from passes.helpers import state_equal
from wattwise.passes import Distill, Prune, Quantize, compress, load_recipe, save_recipe
from wattwise.tasks import Task

ONE_POINT = 0.01

pytestmark = pytest.mark.slow


def test_prune_half_the_channels(task: Task, digits_cnn: nn.Module) -> None:
    _, log = compress(digits_cnn, [Prune(ratio=0.5, scope="global", finetune_epochs=4)], task=task)
    assert log.macs_ratio >= 3.0, log.summary()
    assert log.initial.accuracy - log.final.accuracy <= ONE_POINT, log.summary()
    assert log.final.params < log.initial.params / 3


def test_pt2e_int8(task: Task, digits_cnn: nn.Module) -> None:
    _, log = compress(digits_cnn, [Quantize("pt2e-int8")], task=task)
    assert log.initial.accuracy - log.final.accuracy <= ONE_POINT, log.summary()
    assert log.final.size_bytes < log.initial.size_bytes / 3


def test_distill_into_a_student_four_times_cheaper(task: Task, digits_cnn: nn.Module) -> None:
    recipe = [Distill(student="task", student_kwargs={"width": 0.4}, epochs=15)]
    student, log = compress(digits_cnn, recipe, task=task)
    assert log.macs_ratio >= 4.0, log.summary()
    assert log.initial.accuracy - log.final.accuracy <= 1.5 * ONE_POINT, log.summary()
    assert getattr(student, "width", None) == 0.4
    assert log.records[0].energy_j is not None and log.records[0].energy_j > 0


def test_yaml_recipe_same_seed_identical_model(
    tmp_path: Path, task: Task, digits_cnn: nn.Module
) -> None:
    recipe = [
        Prune(ratio=0.5, finetune_epochs=2),
        Distill(epochs=2),
        Quantize("pt2e-int8", calibration_items=128),
    ]
    path = save_recipe(tmp_path / "recipe.yaml", recipe)
    first, log1 = compress(digits_cnn, recipe, task=task, seed=11)
    second, log2 = compress(digits_cnn, load_recipe(path), task=task, seed=11)
    assert state_equal(first, second)
    assert [r.accuracy_after for r in log1.records] == [r.accuracy_after for r in log2.records]
    third, _ = compress(digits_cnn, recipe, task=task, seed=12)
    assert not state_equal(first, third)  # the seed does matter
