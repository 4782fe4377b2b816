"""Predicting a whole training run's energy and time from its first epoch.

CarbonTracker (Anthony et al., 2020) multiplies the first epoch's energy by the number of
epochs. That overestimates whenever the first epoch carries one-off costs (``torch.compile``,
the allocator growing, lazy initialisation, a cold cache), which on a short run can be most of
it. The model here separates them (``docs/training.md`` writes it out):

* epoch 1's optimizer steps are timed and metered in blocks (about 8); the first block is the
  **warm-up** and is kept out of the rates;
* the **steady rate** per step, in seconds and joules, is the total over the later blocks
  divided by their steps; the evaluation after epoch 1 is a per-epoch cost of its own;
* a later epoch costs ``steps × rate + evaluation``; the run of ``N`` epochs costs epoch 1 as
  measured plus ``N − 1`` such epochs;
* the **interval** takes the cheapest and the dearest block rate seen in epoch 1 for all the
  remaining steps: the run would have to drift outside what its own first epoch showed to
  leave it.

Where a block is too short for the meter (a counter that updates every 100 ms), its joules are
the run's steady power times its time. A run that stops early (at its target) is checked
against the prediction for the epochs it ran: the model predicts a cost per epoch, not when
the target falls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from wattwise.errors import InputError

__all__ = ["Block", "Prediction", "block_ends", "predict"]

BLOCKS = 8  # blocks of epoch 1; the first is the warm-up


@dataclasses.dataclass(frozen=True)
class Block:
    """Some consecutive optimizer steps of epoch 1: how many, their seconds and joules
    (``None`` where the meter could not resolve the block)."""

    steps: int
    time_s: float
    energy_j: float | None


def block_ends(steps_per_epoch: int, blocks: int = BLOCKS) -> list[int]:
    """The step counts (1-based, increasing) after which epoch 1's blocks end."""
    if steps_per_epoch < 1:
        raise InputError(f"an epoch needs at least one step, got {steps_per_epoch}")
    n = min(blocks, steps_per_epoch)
    return sorted({round(steps_per_epoch * (i + 1) / n) for i in range(n)})


@dataclasses.dataclass
class Prediction:
    """A run's predicted energy and time, made after its first epoch, and later the actual.

    Attributes:
        after_epochs: epochs seen when the prediction was made (1).
        epochs: the run's planned epochs, the ones predicted.
        predicted_energy_j, interval_j: the whole run's joules and their interval.
        predicted_time_s, interval_s: the whole run's seconds and their interval.
        epoch_energy_j, epoch_time_s: the predicted cost of each later epoch.
        warmup_energy_j, warmup_time_s: what epoch 1 cost beyond a steady epoch.
        energy_source: the meter's label (the prediction is in its units).
        actual_epochs, actual_energy_j, actual_time_s: what the run did (after it ended).
        predicted_energy_at_actual_j, predicted_time_at_actual_s: the prediction for the
            epochs the run took (it may stop early at a target).
        energy_error, time_error: (predicted − actual) / actual at the epochs run.
        notes: what limits the prediction.
    """

    after_epochs: int
    epochs: int
    predicted_energy_j: float
    interval_j: tuple[float, float]
    predicted_time_s: float
    interval_s: tuple[float, float]
    epoch_energy_j: float
    epoch_time_s: float
    warmup_energy_j: float
    warmup_time_s: float
    energy_source: str
    actual_epochs: int | None = None
    actual_energy_j: float | None = None
    actual_time_s: float | None = None
    predicted_energy_at_actual_j: float | None = None
    predicted_time_at_actual_s: float | None = None
    energy_error: float | None = None
    time_error: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def energy_at(self, epochs: int) -> float:
        return self._first_energy + (epochs - 1) * self.epoch_energy_j

    def time_at(self, epochs: int) -> float:
        return self._first_time + (epochs - 1) * self.epoch_time_s

    @property
    def _first_energy(self) -> float:
        return self.predicted_energy_j - (self.epochs - 1) * self.epoch_energy_j

    @property
    def _first_time(self) -> float:
        return self.predicted_time_s - (self.epochs - 1) * self.epoch_time_s

    def settle(self, epochs: int, energy_j: float, time_s: float) -> None:
        """Record what the run did, and the error of the prediction for the epochs it ran."""
        self.actual_epochs = int(epochs)
        self.actual_energy_j = float(energy_j)
        self.actual_time_s = float(time_s)
        self.predicted_energy_at_actual_j = self.energy_at(epochs)
        self.predicted_time_at_actual_s = self.time_at(epochs)
        self.energy_error = self.time_error = None
        if epochs <= self.after_epochs:  # nothing was predicted: the run ended with epoch 1
            self.notes.append("the run stopped after the epoch the prediction was made from")
            return
        if energy_j > 0:
            self.energy_error = (self.predicted_energy_at_actual_j - energy_j) / energy_j
        if time_s > 0:
            self.time_error = (self.predicted_time_at_actual_s - time_s) / time_s

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["interval_j"] = list(self.interval_j)
        out["interval_s"] = list(self.interval_s)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in fields}
        for key in ("interval_j", "interval_s"):
            low, high = kept[key]
            kept[key] = (float(low), float(high))
        kept["notes"] = [str(n) for n in kept.get("notes") or []]
        return cls(**kept)


def predict(
    blocks: Sequence[Block],
    *,
    epoch_time_s: float,
    epoch_energy_j: float,
    eval_time_s: float,
    eval_energy_j: float,
    epochs: int,
    energy_source: str,
) -> Prediction:
    """The prediction for a run of ``epochs`` epochs from its first one.

    Args:
        blocks: epoch 1's optimizer steps, in order (see :func:`block_ends`).
        epoch_time_s, epoch_energy_j: all of epoch 1, its evaluation included.
        eval_time_s, eval_energy_j: the evaluation after epoch 1.
        epochs: the run's planned epochs.
        energy_source: the meter's label.
    """
    if not blocks:
        raise InputError("a prediction needs epoch 1's steps")
    notes: list[str] = []
    steps = sum(b.steps for b in blocks)
    steady = list(blocks[1:])
    if not steady:
        # One block: nothing to tell warm-up from work; every epoch is taken to cost epoch 1.
        steady = list(blocks)
        notes.append("epoch 1 had too few steps to separate its warm-up: it is taken as steady")
    steady_steps = sum(b.steps for b in steady)
    steady_time = sum(b.time_s for b in steady)
    measured = [b for b in steady if b.energy_j is not None]
    if measured and sum(b.time_s for b in measured) > 0:
        power_w = sum(b.energy_j for b in measured if b.energy_j is not None) / sum(
            b.time_s for b in measured
        )
    else:
        power_w = (epoch_energy_j - eval_energy_j) / max(epoch_time_s - eval_time_s, 1e-9)
        notes.append("the blocks were too short for the meter: joules from epoch 1's power")
    if len(measured) < len(steady):
        notes.append(f"{len(steady) - len(measured)} block(s) below the meter's resolution")

    def joules(b: Block) -> float:
        return b.energy_j if b.energy_j is not None else power_w * b.time_s

    rate_s = steady_time / steady_steps
    rate_j = sum(joules(b) for b in steady) / steady_steps
    rates_s = [b.time_s / b.steps for b in steady]
    rates_j = [joules(b) / b.steps for b in steady]
    per_epoch_s = steps * rate_s + eval_time_s
    per_epoch_j = steps * rate_j + eval_energy_j
    rest = max(0, int(epochs) - 1)

    def span(first: float, low_rate: float, high_rate: float, extra: float) -> tuple[float, float]:
        return (
            first + rest * (steps * low_rate + extra),
            first + rest * (steps * high_rate + extra),
        )

    return Prediction(
        after_epochs=1,
        epochs=int(epochs),
        predicted_energy_j=epoch_energy_j + rest * per_epoch_j,
        interval_j=span(epoch_energy_j, min(rates_j), max(rates_j), eval_energy_j),
        predicted_time_s=epoch_time_s + rest * per_epoch_s,
        interval_s=span(epoch_time_s, min(rates_s), max(rates_s), eval_time_s),
        epoch_energy_j=per_epoch_j,
        epoch_time_s=per_epoch_s,
        warmup_energy_j=max(0.0, epoch_energy_j - per_epoch_j),
        warmup_time_s=max(0.0, epoch_time_s - per_epoch_s),
        energy_source=energy_source,
        notes=notes,
    )
