"""What a compression pass is: a frozen config bound to a registered handler, and the log.

A pass is a small frozen dataclass (a :class:`~wattwise.config.Config`, so it validates itself
and round-trips through YAML with a type tag and a version). The work is done by a *handler*
bound to the config class with :func:`register_handler`, torchao style::

    @register_pass
    @dataclasses.dataclass(frozen=True)
    class Halve(Pass):
        TYPE: ClassVar[str] = "halve"

    @register_handler(Halve)
    def _halve(model, config, ctx):
        return model.half()

Handlers receive the model to transform (a private copy: they may change it in place), the
config, and a :class:`PassContext` through which they reach the task and report the layers
they skipped and why. :func:`wattwise.compress` runs them and writes a :class:`PassRecord`
per pass into a :class:`CompressionLog`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from wattwise._registry import Registry
from wattwise.config import Config, register_config
from wattwise.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from wattwise.tasks import Task

P = TypeVar("P", bound="Pass")

Handler = Callable[["nn.Module", Any, "PassContext"], "nn.Module"]


@dataclasses.dataclass(frozen=True)
class Pass(Config):
    """Base of every compression pass config.

    Class attributes:
        PRESERVES_MACS: the pass changes how MACs are computed (their precision), not how many
            there are. FlopCounterMode cannot see inside quantized kernels, so for such passes
            the log carries the MAC count over from the model entering the pass.
    """

    PRESERVES_MACS: ClassVar[bool] = False

    def apply(self, model: nn.Module, ctx: PassContext) -> nn.Module:
        """Run the bound handler on ``model`` (which it may change in place) and return the result."""
        return handler_for(type(self))(model, self, ctx)

    def describe(self) -> dict[str, Any]:
        """The config as a plain dict for the log; unlike :meth:`to_dict` it never raises."""
        return self.to_dict()


PASSES: Registry[type[Pass]] = Registry("pass")
_HANDLERS: dict[type[Pass], Handler] = {}


def register_pass(cls: type[P]) -> type[P]:
    """Class decorator: register a pass config by its ``TYPE`` (for recipes and the registry)."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise TypeError(f"{cls!r} is not a Pass subclass")
    register_config(cls)
    PASSES.register(cls.TYPE)(cls)
    return cls


def register_handler(config_cls: type[P]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: bind ``handler(model, config, ctx) -> model`` to ``config_cls``."""

    def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
        if config_cls in _HANDLERS and _HANDLERS[config_cls] is not fn:
            raise ValueError(f"pass {config_cls.TYPE!r} has two handlers")
        _HANDLERS[config_cls] = fn
        return fn

    return bind


def handler_for(config_cls: type[Pass]) -> Handler:
    try:
        return _HANDLERS[config_cls]
    except KeyError:
        raise InputError(f"pass {config_cls.TYPE!r} has no handler bound") from None


@dataclasses.dataclass
class PassContext:
    """What a handler may use and report while it runs.

    Attributes:
        task: the task: data for fine-tuning and calibration, the metric, the example input.
        seed: the seed for this pass (``compress``'s seed plus the pass index).
        index: position of the pass in the recipe (0-based).
        source_model: the caller's model, never to be changed; :meth:`original_model` gives a
            copy (the default distillation teacher).
        skipped: ``"layer: why"`` lines for layers the pass left alone.
        notes: free-form findings (``"fp16 on CPU is emulated and slow"``).
        metrics: numbers worth keeping (measured latency ratios, channels removed).
        method: what the pass ended up doing when it has choices (``"ptq"``, ``"qat"``).
        accuracy_before: the task metric of the model entering the pass, when known.
    """

    task: Task
    seed: int
    index: int = 0
    source_model: nn.Module | None = None
    accuracy_before: float | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    method: str | None = None
    _original: nn.Module | None = dataclasses.field(default=None, repr=False)

    def skip(self, layer: str, why: str) -> None:
        line = f"{layer or '<model>'}: {why}"
        if line not in self.skipped:
            self.skipped.append(line)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def stop_when_recovered(
        self, evaluate: Callable[[], float], target: float | None
    ) -> Callable[[int, nn.Module], bool] | None:
        """The ``on_epoch`` hook for a fine-tune, when the task trains with a tuned configuration
        (``task.train_config``, from ``wattwise train``): stop after the epoch whose
        ``evaluate()`` is back at ``target`` (the accuracy the pass started from), as a tuned
        run stops at its target. ``None`` (the pass's whole length) under the task's own recipe
        or with no target. The epochs each fine-tune ran are kept in ``metrics``."""
        if self.task.train_config is None or target is None:
            return None
        ran: list[int] = self.metrics.setdefault("finetune_epochs_run", [])
        ran.append(0)

        def on_epoch(epoch: int, _model: nn.Module) -> bool:
            ran[-1] = epoch + 1
            reached = evaluate() >= target
            if reached:
                self.note(
                    f"fine-tune stopped at epoch {epoch + 1}: back at the {target:.4f} it started from"
                )
            return reached

        return on_epoch

    def original_model(self) -> nn.Module:
        """A frozen copy of the model before compression (made once, on first use)."""
        if self._original is None:
            if self.source_model is None:
                raise InputError("no model before compression is known to this pass")
            self._original = copy.deepcopy(self.source_model).eval()
            for p in self._original.parameters():
                p.requires_grad_(False)
        return self._original


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Size and quality of a model at one point of the recipe.

    Attributes:
        params: parameter elements, counting weights a quantizer stored as integer buffers.
        macs: multiply-accumulates for one ``task.example_input``
            (:func:`~wattwise.passes._model.count_macs`).
        size_bytes: bytes of the serialised state dict (``torch.save``).
        accuracy: the task's metric on its validation set.
    """

    params: int
    macs: float
    size_bytes: int
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """One pass in a :class:`CompressionLog`.

    Attributes:
        name: the pass's type tag (``"prune"``).
        config: the pass's config as a dict.
        params, macs, size_bytes: of the model after the pass (see :class:`ModelStats`).
        accuracy_before, accuracy_after: the task metric entering and leaving the pass.
        time_s: wall time of the pass's own work (not of the evaluation around it).
        energy_j: joules the pass spent (fine-tuning, calibration, analysis), from one meter
            window around it; ``None`` when the meter could not read the window.
        energy_source, energy_uncertainty: where ``energy_j`` comes from and how far to trust
            it (relative, 0.4 = ±40%).
        method: what the pass did when it had choices, else ``None``.
        skipped: ``"layer: why"`` for every layer the pass left alone.
        notes: findings, e.g. measured latency ratios.
        metrics: numbers behind the notes.
    """

    name: str
    config: dict[str, Any]
    params: int
    macs: float
    size_bytes: int
    accuracy_before: float
    accuracy_after: float
    time_s: float
    energy_j: float | None
    energy_source: str
    energy_uncertainty: float
    method: str | None = None
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_before - self.accuracy_after

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["skipped"] = list(self.skipped)
        out["notes"] = list(self.notes)
        return out


@dataclasses.dataclass(frozen=True)
class CompressionLog:
    """Everything :func:`wattwise.compress` did, pass by pass.

    Attributes:
        task: the task's name.
        seed: the seed the recipe ran with.
        initial: the model entering the recipe.
        records: one :class:`PassRecord` per pass, in order.
    """

    task: str
    seed: int
    initial: ModelStats
    records: tuple[PassRecord, ...]

    @property
    def final(self) -> ModelStats:
        if not self.records:
            return self.initial
        last = self.records[-1]
        return ModelStats(last.params, last.macs, last.size_bytes, last.accuracy_after)

    @property
    def energy_j(self) -> float | None:
        """Joules all passes spent together (``None`` if any window could not be read)."""
        values = [r.energy_j for r in self.records]
        if any(v is None for v in values):
            return None
        return float(sum(v for v in values if v is not None))

    @property
    def energy_sources(self) -> tuple[str, ...]:
        return tuple(sorted({r.energy_source for r in self.records}))

    @property
    def macs_ratio(self) -> float:
        """Initial MACs over final MACs (3.0 = three times fewer)."""
        return _ratio(self.initial.macs, self.final.macs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "seed": self.seed,
            "initial": self.initial.to_dict(),
            "final": self.final.to_dict(),
            "energy_j": self.energy_j,
            "energy_sources": list(self.energy_sources),
            "passes": [r.to_dict() for r in self.records],
        }

    def summary(self) -> str:
        """A plain-text table, one line per pass."""
        head = f"{'pass':<10} {'params':>9} {'MACs':>11} {'bytes':>9} {'acc':>7} {'time_s':>7} {'energy_j':>9}  source"
        s0 = self.initial
        lines = [
            head,
            f"{'(input)':<10} {s0.params:>9} {s0.macs:>11.0f} {s0.size_bytes:>9} {s0.accuracy:>7.4f}",
        ]
        for r in self.records:
            energy = "n/a" if r.energy_j is None else f"{r.energy_j:.3g}"
            lines.append(
                f"{r.name:<10} {r.params:>9} {r.macs:>11.0f} {r.size_bytes:>9} {r.accuracy_after:>7.4f}"
                f" {r.time_s:>7.2f} {energy:>9}  {r.energy_source} ±{r.energy_uncertainty:.0%}"
            )
        return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf
