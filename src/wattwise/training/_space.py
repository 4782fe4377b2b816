"""The training configurations ``wattwise train`` chooses among, and the order it tries them.

Every knob's first value is the task's own recipe, so the default configuration is one
candidate like the others. The search is a greedy walk from it (coordinate descent): the next
candidate is the best run so far with one knob changed, knobs in the order of how much they
usually move the energy to a target (batch size first). Where the walk has nothing left to
try, Optuna's sampler proposes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError
from wattwise.tasks import TrainConfig, scaled_lr

if TYPE_CHECKING:
    from wattwise.tasks import Task

__all__ = ["KNOBS", "TrainingSpace", "training_space"]

# Walk order: first the knobs that lower the cost of every step whatever the run learns
# (precision, threads, memory format), then those that change how fast it learns (the schedule,
# the learning rate, the batch size), then compiling (it pays only on long runs) and the power
# limit. On digits (2-vCPU EPYC), bf16, one thread, channels-last, a 3-epoch schedule and twice
# the learning rate together took 1.93x less energy to 0.97 than the recipe, median of five
# seeds side by side, each knob adding a little; a smaller batch "won" single runs by reaching
# the target one epoch early with a lucky seed, and lost on the others.
KNOBS = (
    "precision",
    "threads",
    "channels_last",
    "epochs",
    "lr_scale",
    "batch_size",
    "compile",
    "power_limit",
)
MIN_STEPS_PER_EPOCH = 4  # a batch size leaving fewer steps per epoch is not offered
BATCH_FACTORS = (1, 2, 4, 8, 0.5, 0.25)  # of the task's batch size


def _allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class TrainingSpace:
    """The knobs and their values (each knob's first value is the task's recipe).

    Attributes:
        choices: per knob of :data:`KNOBS`, the values tried. ``threads`` 0 means all the
            process may use; ``power_limit`` is ``"default"`` or ``"profile"``. A knob left
            out keeps the task's recipe.
        base_batch_size, base_lr: the task's recipe, which :func:`scaled_lr` scales from.
    """

    choices: dict[str, tuple[Any, ...]]
    base_batch_size: int
    base_lr: float

    def __post_init__(self) -> None:
        unknown = sorted(set(self.choices) - set(KNOBS))
        if unknown:
            raise InputError(f"unknown training knob(s): {', '.join(unknown)}")
        for knob, values in self.choices.items():
            if not values:
                raise InputError(f"training knob {knob!r} has no values")

    def default_params(self) -> dict[str, Any]:
        return {knob: values[0] for knob, values in self.choices.items()}

    def config(self, params: Mapping[str, Any]) -> TrainConfig:
        """The configuration of a candidate's params (a knob the space leaves out keeps the
        task's recipe)."""
        p = {**self.default_params(), **params}
        batch = int(p.get("batch_size", self.base_batch_size))
        epochs = p.get("epochs")
        return TrainConfig(
            batch_size=batch,
            lr=scaled_lr(self.base_lr, batch, self.base_batch_size) * float(p.get("lr_scale", 1.0)),
            epochs=int(epochs) if epochs is not None else None,
            precision=str(p.get("precision", "fp32")),
            compile=bool(p.get("compile", False)),
            threads=int(p.get("threads", 0)) or None,
            channels_last=bool(p.get("channels_last", False)),
            profile_power_limit=p.get("power_limit", "default") == "profile",
        )

    def neighbours(
        self, params: Mapping[str, Any], after: str | None = None
    ) -> list[dict[str, Any]]:
        """``params`` with one knob changed, in walk order: the knobs of :data:`KNOBS` from the
        one after ``after`` (the knob whose change made ``params``) round to ``after`` itself,
        as coordinate descent goes on to the next coordinate instead of starting over."""
        start = KNOBS.index(after) + 1 if after in KNOBS else 0
        out: list[dict[str, Any]] = []
        for knob in KNOBS[start:] + KNOBS[:start]:
            if knob == "lr_scale" and "epochs" in self.choices:
                continue  # moved with the schedule's length, below
            if knob == "epochs" and "lr_scale" in self.choices:
                # The schedule's length and the learning rate together: a short schedule
                # reaches the target sooner only with a faster start (digits: 3 epochs at the
                # recipe's rate took as many epochs as 15; at twice the rate, 2 instead of 3).
                for scale in self.choices["lr_scale"][::-1]:
                    for value in self.choices["epochs"]:
                        move = {"epochs": value, "lr_scale": scale}
                        if any(params.get(k) != v for k, v in move.items()):
                            out.append({**params, **move})
                continue
            for value in self.choices.get(knob, ()):
                if value != params.get(knob):
                    out.append({**params, knob: value})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "choices": {k: list(v) for k, v in self.choices.items()},
            "base_batch_size": self.base_batch_size,
            "base_lr": self.base_lr,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpace:
        try:
            return cls(
                {str(k): tuple(v) for k, v in dict(data["choices"]).items()},
                int(data["base_batch_size"]),
                float(data["base_lr"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a training space: {exc}") from None


def _bf16_here(device: str) -> bool:
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_bf16_supported())
    from wattwise.deploy._base import native_bf16

    return native_bf16()


def training_space(task: Task, device: str = "cpu") -> TrainingSpace:
    """The configurations ``wattwise train`` tries for ``task`` on ``device``.

    * batch size: the task's, 2, 4 and 8 times it, a half and a quarter of it, each with its learning
      rate scaled (:func:`scaled_lr`), leaving at least 4 steps per epoch;
    * the learning rate: the scaled one, or twice it (every run stops at the target: a faster
      start can matter more than the last point of accuracy); the walk moves it together with
      the schedule's length;
    * threads (CPU): all the process may use, or one;
    * precision: fp32, and bf16 autocast where the CPU computes in bf16 (AVX512-BF16 or AMX)
      or the GPU has it;
    * ``torch.compile`` of the training step, or not;
    * the schedule's length: the task's epochs, a quarter of them, or twice as many.
      Every run stops at the target, so a recipe's long cosine schedule is cut off with its
      learning rate still high; a schedule as short as the run annealing within it reaches the
      target in fewer epochs (budgeted training, Li et al., ICLR 2020). A large batch, with
      fewer steps per epoch, can need the longer one;
    * channels-last memory format, for image models (4-D inputs);
    * on a GPU whose limit this process may set: the power limit profiled in the first
      epoch (Zeus's method), or left alone.
    """
    import torch

    from wattwise.measure._power_limit import power_limit_availability

    base = int(task.batch_size)
    n_train = len(task.train_data)  # type: ignore[arg-type]
    batches: list[int] = []
    for factor in BATCH_FACTORS:
        b = max(1, int(base * factor))
        if b not in batches and (b == base or n_train // b >= MIN_STEPS_PER_EPOCH):
            batches.append(b)
    epochs = max(1, int(task.epochs))
    schedules = [epochs]
    for length in (max(1, epochs // 4), 2 * epochs):
        if length not in schedules:
            schedules.append(length)
    choices: dict[str, tuple[Any, ...]] = {
        "batch_size": tuple(batches),
        "lr_scale": (1.0, 2.0),
        "threads": (0, 1) if not device.startswith("cuda") and _allowed_cpus() > 1 else (0,),
        "precision": ("fp32", "bf16") if _bf16_here(device) else ("fp32",),
        "compile": (False, True),
        "epochs": tuple(schedules),
        "channels_last": (False, True)
        if isinstance(task.example_input, torch.Tensor) and task.example_input.dim() == 4
        else (False,),
        "power_limit": ("default", "profile")
        if device.startswith("cuda") and power_limit_availability(device)
        else ("default",),
    }
    return TrainingSpace(choices, base, float(task.lr))
