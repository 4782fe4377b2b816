"""How a model is trained: the knobs :meth:`Task.fit` turns, as one plain, stored value.

A :class:`TrainConfig` says everything about a training run that changes its energy but not
what it learns from: batch size (with its learning rate), precision, ``torch.compile``,
threads, memory format, the schedule's length and, on a GPU, the power limit. ``None`` in a
field means "the task's own recipe"; :meth:`Task.fit` with no config is the task's default
recipe exactly as before.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from wattwise.errors import InputError

__all__ = ["PRECISIONS", "TrainConfig", "scaled_lr"]

PRECISIONS = ("fp32", "bf16")


def scaled_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """The learning rate for ``batch_size``, from one tuned at ``base_batch_size``.

    Square-root scaling (Krizhevsky 2014; Malladi et al., NeurIPS 2022, for Adam): with Adam,
    the update's size does not grow with the gradient's, so the linear rule's lr overshoots at
    large batches; the square root keeps the noise scale of the updates.
    """
    return float(lr) * math.sqrt(batch_size / base_batch_size)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training configuration.

    Attributes:
        batch_size: items per optimizer step (``None``: the task's).
        lr: Adam's learning rate (``None``: the task's; see :func:`scaled_lr`).
        epochs: the cosine schedule's length, and the most epochs the run may take
            (``None``: the task's).
        precision: ``fp32``, or ``bf16`` autocast (the weights and optimizer stay fp32).
        compile: train through ``torch.compile(model)``.
        threads: intra-op threads (``None``: all the process may use).
        channels_last: image models and inputs in channels-last memory format.
        power_limit_w: on a GPU, its power limit during the run (``None``: unchanged).
        profile_power_limit: on a GPU, try limits during the first epoch and keep the
            cheapest within the allowed slowdown (Zeus's just-in-time profiling).
    """

    batch_size: int | None = None
    lr: float | None = None
    epochs: int | None = None
    precision: str = "fp32"
    compile: bool = False
    threads: int | None = None
    channels_last: bool = False
    power_limit_w: float | None = None
    profile_power_limit: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "threads"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InputError(f"TrainConfig.{name} must be an int >= 1 or None, got {value!r}")
        for name in ("lr", "power_limit_w"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InputError(f"TrainConfig.{name} must be a number > 0 or None, got {value!r}")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        for name in ("compile", "channels_last", "profile_power_limit"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"TrainConfig.{name} must be true or false")
        if self.profile_power_limit and self.power_limit_w is not None:
            raise InputError("TrainConfig: give power_limit_w or profile_power_limit, not both")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config of a stored dict; an unknown key is an error, not silently dropped."""
        if not isinstance(data, Mapping):
            raise InputError(f"a training config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training config key(s): {', '.join(map(str, unknown))}")
        return cls(**dict(data))

    def for_fine_tunes(self) -> TrainConfig:
        """What compression's fine-tunes take from this configuration: how a step runs
        (precision, compile, threads, memory format), not the batch size, learning rate or
        schedule, nor a power limit. Those were tuned for a run from scratch to a target; a
        fine-tune trains another model (a student, a pruned copy) for its own length at its
        own rate. On digits, the tuned batch 16 reached 0.97 in fewer epochs from scratch and
        made the half-width student's distillation cost 2.1x the recipe's."""
        return dataclasses.replace(
            self,
            batch_size=None,
            lr=None,
            epochs=None,
            power_limit_w=None,
            profile_power_limit=False,
        )

    def label(self) -> str:
        """A short, readable name: ``b256 lr4.2e-3 bf16 compile t1 cl``."""
        parts = [
            f"b{self.batch_size}" if self.batch_size else "b(task)",
            f"lr{self.lr:.2g}" if self.lr else "",
            f"e{self.epochs}" if self.epochs else "",
            self.precision,
            "compile" if self.compile else "",
            f"t{self.threads}" if self.threads else "t(all)",
            "channels_last" if self.channels_last else "",
            f"{self.power_limit_w:g}W" if self.power_limit_w else "",
            "power-profiled" if self.profile_power_limit else "",
        ]
        return " ".join(p for p in parts if p)
