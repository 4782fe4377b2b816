"""``training.json``, the file ``wattwise train`` writes: made and read by one typed module.

``TrainingReport.from_dict(d).to_dict() == d`` for every file it writes. Reading a file is
bounded (64 MiB, JSON depth 64) and checks the fields it uses, so a hostile or truncated file
is one error line.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wattwise._fs import decode_utf8, parse_json, read_bounded
from wattwise.errors import InputError
from wattwise.tasks import TrainConfig

__all__ = ["SCHEMA", "TrainingFigures", "TrainingReport", "load_training"]

SCHEMA = 1
MAX_BYTES = 64 << 20


def _number(value: Any, what: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class TrainingFigures:
    """One training configuration's run to the target.

    Attributes:
        config: the :class:`~wattwise.tasks.TrainConfig`, as a dict.
        label: its short name.
        reached: whether the metric reached the target.
        epochs: epochs run (to the target, when reached).
        energy_to_target_j, time_to_target_s: to the evaluation that reached the target
            (``None`` when not reached); medians over the rounds when ``rounds`` is set.
        energy_source, energy_uncertainty: the meter's label and relative uncertainty.
        accuracy: the metric when the run stopped.
        rounds_energy_j, rounds_time_s: each side-by-side round's figures (confirmed runs).
    """

    config: dict[str, Any]
    label: str
    reached: bool
    epochs: int
    energy_to_target_j: float | None
    time_to_target_s: float | None
    energy_source: str
    energy_uncertainty: float
    accuracy: float | None = None
    rounds_energy_j: list[float | None] = dataclasses.field(default_factory=list)
    rounds_time_s: list[float | None] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "training figures") -> TrainingFigures:
        if not isinstance(data, Mapping):
            raise InputError(f"{what} must be a JSON object")
        try:
            TrainConfig.from_dict(data["config"])
            return cls(
                config=dict(data["config"]),
                label=str(data["label"]),
                reached=bool(data["reached"]),
                epochs=int(data["epochs"]),
                energy_to_target_j=_number(data.get("energy_to_target_j"), f"{what}: energy"),
                time_to_target_s=_number(data.get("time_to_target_s"), f"{what}: time"),
                energy_source=str(data["energy_source"]),
                energy_uncertainty=float(data["energy_uncertainty"]),
                accuracy=_number(data.get("accuracy"), f"{what}: accuracy"),
                rounds_energy_j=[
                    _number(v, f"{what}: a round") for v in data.get("rounds_energy_j") or []
                ],
                rounds_time_s=[
                    _number(v, f"{what}: a round") for v in data.get("rounds_time_s") or []
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{what}: missing or bad field {exc}") from None

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)


@dataclasses.dataclass(frozen=True)
class TrainingReport:
    """What ``wattwise train`` found (the contract of ``training.json``).

    Attributes:
        task, target_accuracy: what was trained, to what.
        meter: the meter's ``source`` and ``uncertainty``.
        hardware: the machine.
        default, best: the task's own recipe and the least energy to the target, both
            measured again side by side (``rounds`` rounds, alternating order); figures are
            medians.
        energy_ratio, time_ratio: default / best, the median of the ratios within rounds
            (``None`` when the default never reached the target or nothing was confirmed).
        rounds: side-by-side rounds run.
        front: the trials that reached the target and are not beaten on both energy and
            time, cheapest first.
        prediction: the default run's prediction after its first epoch, and its error.
        trials: every finished trial (its config, figures and why it stopped short).
        search_energy_j, search_time_s: what the search's runs spent.
        study, storage: where the trials are (the URL's password redacted).
        artifact: the trained model of ``best`` (a directory beside the file), or ``None``.
        notes: what a reader must know to trust the figures.
    """

    task: str
    target_accuracy: float
    meter: dict[str, Any]
    hardware: dict[str, Any]
    default: TrainingFigures | None
    best: TrainingFigures | None
    energy_ratio: float | None
    time_ratio: float | None
    rounds: int
    front: list[dict[str, Any]]
    prediction: dict[str, Any] | None
    trials: list[dict[str, Any]]
    search_energy_j: float
    search_time_s: float
    study: str
    storage: str
    artifact: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["default"] = self.default.to_dict() if self.default else None
        out["best"] = self.best.to_dict() if self.best else None
        return {"schema": out.pop("schema"), **out}

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "training.json") -> TrainingReport:
        if not isinstance(data, Mapping):
            raise InputError(f"{what} is not a wattwise training file (not a JSON object)")
        if data.get("schema") != SCHEMA:
            raise InputError(
                f"{what}: unsupported schema {data.get('schema')!r} (expected {SCHEMA})"
            )
        try:
            return cls(
                task=str(data["task"]),
                target_accuracy=float(data["target_accuracy"]),
                meter=dict(data["meter"]),
                hardware=dict(data["hardware"]),
                default=None
                if data["default"] is None
                else TrainingFigures.from_dict(data["default"], what=f"{what}: default"),
                best=None
                if data["best"] is None
                else TrainingFigures.from_dict(data["best"], what=f"{what}: best"),
                energy_ratio=_number(data.get("energy_ratio"), f"{what}: energy_ratio"),
                time_ratio=_number(data.get("time_ratio"), f"{what}: time_ratio"),
                rounds=int(data["rounds"]),
                front=[dict(p) for p in data["front"]],
                prediction=None if data.get("prediction") is None else dict(data["prediction"]),
                trials=[dict(t) for t in data["trials"]],
                search_energy_j=float(data["search_energy_j"]),
                search_time_s=float(data["search_time_s"]),
                study=str(data["study"]),
                storage=str(data["storage"]),
                artifact=None if data.get("artifact") is None else str(data["artifact"]),
                notes=[str(n) for n in data.get("notes") or []],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{what}: missing or bad field {exc}") from None


def load_training(path: str | os.PathLike[str]) -> TrainingReport:
    """Read a ``training.json`` (bounded) or raise :class:`InputError` saying why not."""
    src = Path(path)
    data = parse_json(decode_utf8(read_bounded(src, MAX_BYTES), what=str(src)), what=str(src))
    return TrainingReport.from_dict(data, what=str(src))
