"""TrainConfig and Task.fit's knobs: each one does what it says, and the default is the recipe."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest
import torch

from wattwise.errors import InputError
from wattwise.tasks import DigitsCNN, TrainConfig, digits, scaled_lr


def _record(seen: list[Any], value: Any) -> bool:
    """Note ``value`` and let the run go on (``False``: don't stop)."""
    seen.append(value)
    return False


def _task():
    return dataclasses.replace(
        digits(), model_factory=functools.partial(DigitsCNN, width=0.25), epochs=2
    )


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"precision": "fp8"}, "precision"),
        ({"compile": "yes"}, "compile"),
        ({"threads": 1.5}, "threads"),
        ({"power_limit_w": 300.0, "profile_power_limit": True}, "not both"),
    ],
)
def test_a_bad_value_is_one_error_naming_it(kwargs: dict, word: str) -> None:
    with pytest.raises(InputError, match=word):
        TrainConfig(**kwargs)


def test_round_trip_and_unknown_keys() -> None:
    cfg = TrainConfig(batch_size=256, lr=6e-3, precision="bf16", threads=1, channels_last=True)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match=r"unknown training config key.*optimiser"):
        TrainConfig.from_dict({**cfg.to_dict(), "optimiser": "sgd"})
    assert cfg.label() == "b256 lr0.006 bf16 t1 channels_last"
    assert TrainConfig().label() == "b(task) fp32 t(all)"


def test_square_root_lr_scaling() -> None:
    assert scaled_lr(1e-3, 256, 64) == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 64, 64) == pytest.approx(1e-3)


def test_no_config_is_the_recipe_and_fit_is_reproducible() -> None:
    task = _task()
    torch.manual_seed(0)
    a = task.fit(task.model_factory(), seed=3)
    torch.manual_seed(0)
    b = task.fit(task.model_factory(), seed=3, config=TrainConfig())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_batch_size_sets_the_steps_and_threads_are_put_back() -> None:
    task = _task()
    steps: list[tuple[int, int]] = []
    before = torch.get_num_threads()
    task.fit(
        task.model_factory(),
        config=TrainConfig(batch_size=256, threads=1),
        on_step=lambda epoch, step: _record(steps, (epoch, step)),
    )
    per_epoch = -(-len(task.train_data) // 256)
    assert len(steps) == 2 * per_epoch and steps[-1] == (1, per_epoch - 1)
    assert torch.get_num_threads() == before


def test_on_step_and_on_epoch_stop_the_run() -> None:
    task = _task()
    steps: list[int] = []
    task.fit(task.model_factory(), on_step=lambda e, s: _record(steps, s) or s == 2)
    assert steps == [0, 1, 2]  # stopped mid-epoch, after its third step
    epochs: list[int] = []
    task.fit(
        task.model_factory(),
        config=TrainConfig(epochs=5),
        on_epoch=lambda e, m: _record(epochs, e) or e == 1,
    )
    assert epochs == [0, 1]  # stopped after the second of five epochs


def test_bf16_autocast_and_channels_last_train_to_a_usable_model() -> None:
    task = dataclasses.replace(_task(), epochs=4)
    model = task.fit(task.model_factory(), config=TrainConfig(precision="bf16", channels_last=True))
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32
    assert task.evaluate(model) > 0.5


def test_a_task_train_config_is_used_when_fit_gets_none() -> None:
    task = dataclasses.replace(_task(), train_config=TrainConfig(batch_size=512))
    steps: list[int] = []
    task.fit(task.model_factory(), epochs=1, on_step=lambda e, s: _record(steps, s))
    assert len(steps) == -(-len(task.train_data) // 512)
    with pytest.raises(InputError, match="train_config"):
        dataclasses.replace(_task(), train_config={"batch_size": 8})


def test_fine_tunes_take_how_a_step_runs_not_the_schedule() -> None:
    from wattwise.tasks import TrainConfig

    tuned = TrainConfig(
        batch_size=16,
        lr=1e-3,
        epochs=3,
        precision="bf16",
        compile=True,
        threads=1,
        channels_last=True,
        power_limit_w=200.0,
    )
    assert tuned.for_fine_tunes() == TrainConfig(
        precision="bf16", compile=True, threads=1, channels_last=True
    )
    assert TrainConfig().for_fine_tunes() == TrainConfig()
