"""What a search publishes, as typed values: ``results.json`` (:class:`Results`) and the rows of
``trials.csv`` (:class:`TrialRow`).

The search is the one producer of these classes; the report, ``wattwise check``, the CLI
summary, the progress lines and the benchmarks read them. So a field the report shows is a
field the search writes: a misspelt key is a type error, not a "—" cell nobody notices (the
report once read ``cost_per_kwh``, which no search ever wrote).

A :class:`Figures` is the measured figures of one candidate (energy per item with its source
and uncertainty, latency, throughput, accuracy, disturbed windows, size). The document's
entries hold one each: :class:`BaselineEntry`, :class:`SameBatchEntry`, :class:`BestEntry`
and the front's :class:`FrontEntry`; :class:`Confirmation` holds the side-by-side rounds.
In JSON the figures sit flat in their entry (``best.energy_j_per_item``), as schema 1 has
always written them.

Reading (``from_dict``) takes its input as hostile:

* a value of the wrong type, NaN or an infinity is refused with one :class:`InputError` line
  naming the field (``results: best.energy_j_per_item must be a number, got a string``);
* a missing key reads as ``None`` (schema 1's readers treat fields added since as optional),
  except a trial row's ``number`` and ``state``, without which it is no trial row;
* a key this version does not know (a newer writer's) is kept, in ``extra``, and ``to_dict``
  writes it back after the known keys, sorted: ``wattwise check`` reads a newer file, and
  ``Results.from_dict(doc).to_dict()`` loses nothing;
* a schema other than :data:`RESULTS_SCHEMA` is refused: schema 1 is the only one ever
  written (fields were added to it since, which older files lack: they read as ``None``).

``to_dict`` writes every field, in one fixed order (the reading order of ``docs/search.md``),
with deployments and recipe passes in a stable key order: the same content gives the same
bytes, and ``Results.from_dict(json.load(f)).to_dict()`` is exactly what optimize wrote.

Example:
    >>> import json
    >>> from wattwise.results import Results
    >>> doc = Results.from_dict(json.load(open("wattwise-out/results.json")))  # doctest: +SKIP
    >>> doc.best.figures.energy_j_per_item, doc.best.figures.energy_source  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from wattwise.errors import InputError

__all__ = [
    "DEPLOYMENT_KEYS",
    "FIGURE_KEYS",
    "GENERATION_KEYS",
    "MEASURED_KEYS",
    "RESULTS_SCHEMA",
    "ROUND_KEYS",
    "BaselineEntry",
    "BestEntry",
    "Confirmation",
    "ConfirmedCandidate",
    "Figures",
    "FrontEntry",
    "Meter",
    "PairedRatio",
    "Results",
    "SameBatchEntry",
    "TrialRow",
    "check_schema",
    "deployment_dict",
    "json_type",
    "recipe_list",
]

RESULTS_SCHEMA = 1
"""The results.json schema this version writes and reads."""

# Source labels are short ASCII ("measured:rapl", "estimated:cpu-ccf"); anything else printed
# into a CI log could forge lines or drive the terminal (escape sequences).
MAX_SOURCE_CHARS = 120

DEPLOYMENT_KEYS: tuple[str, ...] = ("backend", "precision", "batch_size", "threads", "device")
"""A deployment's keys, in the order results write them (and a candidate lists them)."""
_PASS_ORDER = ("type", "version")

_T = TypeVar("_T")


# ----------------------------------------------------------------------------- reading


def json_type(value: Any) -> str:
    """What a JSON value is, in words, for an error line (``"a string"``, ``"null"``)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def check_schema(data: Mapping[str, Any], *, what: str = "the results") -> None:
    """Refuse a document of another schema than :data:`RESULTS_SCHEMA` (``true`` too, which
    Python would take for 1). A dict without ``schema`` (built by hand, in Python) is read as
    this schema; :func:`wattwise.search.load_results` refuses a *file* without one."""
    if "schema" not in data:
        return  # a document built by hand, without the key: read as this schema
    schema = data["schema"]
    if isinstance(schema, bool) or schema != RESULTS_SCHEMA:
        shown = schema if isinstance(schema, int | float | None) else json_type(schema)
        raise InputError(
            f"{what} has results schema {shown!r}; this wattwise reads schema {RESULTS_SCHEMA}"
        )


class _Reader:
    """Reads the fields of one JSON object, each checked and named in its error, and keeps
    track of which keys it read (the rest is ``extra``)."""

    def __init__(self, data: Any, name: str, prefix: str = "results: ") -> None:
        if not isinstance(data, Mapping):
            raise InputError(
                f"{prefix}{name or 'results'} must be an object, got {json_type(data)}"
            )
        self._data = data
        self._name = name
        self._prefix = prefix
        self._read: set[str] = set()

    def names(self) -> list[str]:
        """The object's keys."""
        return [str(k) for k in self._data]

    def path(self, key: str) -> str:
        return f"{self._name}.{key}" if self._name else key

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self._prefix}{self.path(key)} {problem}")

    def raw(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        return None if value is None else self._checked(key, value)

    def amount(self, key: str) -> float:
        """A number that must be there (not null)."""
        return self._checked(key, self.raw(key))

    def _checked(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {json_type(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"is {value!r}, not a finite number")
        return value  # an int stays an int: 55 is written back as 55, not 55.0

    def integer(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, float) else json_type(value)
            raise self.fail(key, f"must be a whole number, got {shown}")
        return value

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {json_type(value)}")
        return value

    def source(self, key: str) -> str | None:
        """An energy source label: short printable ASCII, so it can go into a CI log line."""
        value = self.raw(key)
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= MAX_SOURCE_CHARS
            or not all(" " <= ch <= "~" for ch in value)
        ):
            shown = repr(value[:40]) if isinstance(value, str) else json_type(value)
            raise self.fail(
                key, f"must be a short source label such as 'measured:rapl', got {shown}"
            )
        return value

    def flag(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {json_type(value)}")
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        """A free-form JSON object (a deployment, the hardware), copied."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be an object, got {json_type(value)}")
        return {str(k): v for k, v in value.items()}

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(key, f"must be a list, got {json_type(value)}")
        return list(value)

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", f"must be a string, got {json_type(item)}")
        return tuple(items)

    def numbers(self, key: str, *, null: bool = False) -> tuple[Any, ...]:
        items = self.items(key)
        for i, item in enumerate(items):
            if item is not None or not null:
                self._checked(f"{key}[{i}]", item)
        return tuple(items)

    def recipe(self, key: str) -> tuple[dict[str, Any], ...] | None:
        """A list of compression passes, each a JSON object (copied)."""
        if self.raw(key) is None:
            return None
        items = self.items(key)
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise self.fail(f"{key}[{i}]", f"must be an object, got {json_type(item)}")
        return tuple({str(k): v for k, v in item.items()} for item in items)

    def child(self, key: str) -> _Reader | None:
        """A reader of the object at ``key``; ``None`` when it is null or missing."""
        value = self.raw(key)
        return None if value is None else _Reader(value, self.path(key), self._prefix)

    def children(self, key: str) -> list[_Reader]:
        """Readers of the objects in the list at ``key``."""
        return [
            _Reader(item, f"{self.path(key)}[{i}]", self._prefix)
            for i, item in enumerate(self.items(key))
        ]

    def extra(self) -> dict[str, Any]:
        """The keys nobody read: a newer writer's, kept as they are."""
        return {str(k): v for k, v in self._data.items() if k not in self._read}


class _Readable:
    """``from_dict`` for the classes below: each reads itself from a :class:`_Reader`."""

    _NAME: ClassVar[str] = ""
    _PREFIX: ClassVar[str] = "results: "

    @classmethod
    def from_dict(cls, data: Any, *, name: str | None = None) -> Self:
        """Read one from JSON data; ``name`` is what errors call it (``best``, ``trials[3]``).

        Raises:
            InputError: a field of the wrong type, NaN or infinite (one line naming it).
        """
        return cls._read(_Reader(data, cls._NAME if name is None else name, cls._PREFIX))

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        raise NotImplementedError


# ----------------------------------------------------------------------------- writing


def _ordered(mapping: Mapping[str, Any], order: Iterable[str]) -> dict[str, Any]:
    """Keys in ``order`` first, then the rest sorted: the same bytes for the same content."""
    out = {k: mapping[k] for k in order if k in mapping}
    out.update({k: mapping[k] for k in sorted(mapping) if k not in out})
    return out


def _deep_sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_deep_sorted(v) for v in value]
    return value


def deployment_dict(deployment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A deployment with its keys in reading order (backend, precision, batch, threads, device)."""
    return None if deployment is None else _ordered(deployment, DEPLOYMENT_KEYS)


def recipe_list(recipe: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A recipe's passes, each with ``type`` and ``version`` first."""
    return None if recipe is None else [_ordered(p, _PASS_ORDER) for p in recipe]


def _extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    return {k: extra[k] for k in sorted(extra)}


def _optional(value: Any, write: Callable[[Any], _T]) -> _T | None:
    return None if value is None else write(value)


def _as_is(value: _T) -> _T:
    return value


# ----------------------------------------------------------------------------- figures


@dataclasses.dataclass(frozen=True)
class Figures(_Readable):
    """The measured figures of one candidate (each ``None`` when not recorded).

    Attributes:
        accuracy: the task metric of the deployed model.
        energy_j_per_item: energy per item, J; ``energy_source`` says what measured it
            (``measured:rapl``, ``estimated:cpu-ccf``) and ``energy_uncertainty`` how well
            (relative, 0.4 = ±40%).
        latency_ms_p50, latency_ms_p90: latency of one call (one batch), ms.
        throughput_items_per_s: items per second.
        co2e_g_per_million_items: grams CO2e per million items at the results' grid intensity.
        macs_per_item, params, size_bytes: the model's work per item and its size.
        disturbed_windows: measuring windows other processes' CPU load disturbed, whose
            figures may be inflated (see ``docs/measurement.md``).
        prefill_energy_j_per_token, decode_energy_j_per_token, ttft_ms_p50, ttft_ms_p90,
        tbt_ms_p50, tbt_ms_p90, tokens_per_s: a generative task's figures
            (:class:`~wattwise.measure.Generation`; an item is then one response, and a call
            one decode step of the batch). Only these are written when ``None`` is left out:
            a classifier's figures have none of them.
    """

    _NAME: ClassVar[str] = "figures"

    accuracy: float | None = None
    energy_j_per_item: float | None = None
    energy_source: str | None = None
    energy_uncertainty: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    throughput_items_per_s: float | None = None
    co2e_g_per_million_items: float | None = None
    macs_per_item: float | None = None
    params: int | None = None
    size_bytes: int | None = None
    disturbed_windows: int | None = None
    prefill_energy_j_per_token: float | None = None
    decode_energy_j_per_token: float | None = None
    ttft_ms_p50: float | None = None
    ttft_ms_p90: float | None = None
    tbt_ms_p50: float | None = None
    tbt_ms_p90: float | None = None
    tokens_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.items(FIGURE_KEYS)

    def items(self, keys: Iterable[str]) -> dict[str, Any]:
        """``keys`` of these figures as a dict, less the generation figures not measured."""
        return {
            k: v for k in keys if (v := getattr(self, k)) is not None or k not in GENERATION_KEYS
        }

    @property
    def latency_bound_ms(self) -> float | None:
        """The p90 latency a latency bound applies to: the time between tokens for a
        generative task (one decode step), else one call's."""
        return self.tbt_ms_p90 if self.tbt_ms_p90 is not None else self.latency_ms_p90

    @classmethod
    def _read(cls, r: _Reader, keys: Iterable[str] | None = None) -> Figures:
        """The figures among the keys of ``r``'s object (a flat entry or row: its other keys
        are the caller's), or only ``keys`` of them."""
        values: dict[str, Any] = {}
        for key in FIGURE_KEYS if keys is None else keys:
            if key == "energy_source":
                values[key] = r.source(key)
            elif key in _WHOLE_FIGURES:
                values[key] = r.integer(key)
            else:
                values[key] = r.number(key)
        return cls(**values)

    @classmethod
    def measured(cls, measurement: Any, **others: Any) -> Figures:
        """The figures a :class:`~wattwise.measure.Measurement` gives (:data:`MEASURED_KEYS`,
        the generation ones from its ``generation``), with ``others`` (accuracy, MACs, params,
        size) beside them."""
        values = {k: getattr(measurement, k) for k in MEASURED_KEYS if k not in GENERATION_KEYS}
        generation = getattr(measurement, "generation", None)
        if generation is not None:
            values.update({k: getattr(generation, k) for k in GENERATION_KEYS})
        return cls(**values, **others)

    def remeasured(self, other: Figures) -> Figures:
        """These figures with ``other``'s measured ones (:data:`MEASURED_KEYS`) in their place:
        what depends on when a candidate was measured; accuracy and size do not."""
        return dataclasses.replace(self, **{k: getattr(other, k) for k in MEASURED_KEYS})


FIGURE_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Figures))
"""Every figure a trial records, in the order results and reports list them."""

_WHOLE_FIGURES = frozenset({"params", "size_bytes", "disturbed_windows"})

GENERATION_KEYS: tuple[str, ...] = (
    "prefill_energy_j_per_token",
    "decode_energy_j_per_token",
    "ttft_ms_p50",
    "ttft_ms_p90",
    "tbt_ms_p50",
    "tbt_ms_p90",
    "tokens_per_s",
)
"""A generative task's figures (:class:`~wattwise.measure.Generation`'s), written only when
measured."""

MEASURED_KEYS: tuple[str, ...] = (
    "energy_j_per_item",
    "energy_source",
    "energy_uncertainty",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "co2e_g_per_million_items",
    # Windows another process's CPU load disturbed and that could not be measured again:
    # their figures may be inflated (see docs/measurement.md, "Disturbed windows").
    "disturbed_windows",
    *GENERATION_KEYS,
)
"""The figures a measurement gives and a confirmation round measures again; the rest
(accuracy, MACs, params, size) do not depend on when a candidate was measured."""

ROUND_KEYS: tuple[str, ...] = (
    "energy_j_per_item",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "co2e_g_per_million_items",
    "prefill_energy_j_per_token",
    "decode_energy_j_per_token",
    "tbt_ms_p90",
)
"""The figures each confirmation round records per candidate; their medians are published."""


# ----------------------------------------------------------------------------- entries


@dataclasses.dataclass(frozen=True)
class BaselineEntry(_Readable):
    """``results["baseline"]``: the model as trained, fp32 eager at batch 1, default threads."""

    _NAME: ClassVar[str] = "baseline"

    figures: Figures = Figures()
    recipe: tuple[dict[str, Any], ...] | None = None
    deployment: dict[str, Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.figures.to_dict(),
            "recipe": recipe_list(self.recipe),
            "deployment": deployment_dict(self.deployment),
            **_extra(self.extra),
        }

    @classmethod
    def _read(cls, r: _Reader) -> BaselineEntry:
        return cls(Figures._read(r), r.recipe("recipe"), r.mapping("deployment"), r.extra())


@dataclasses.dataclass(frozen=True)
class SameBatchEntry(_Readable):
    """``results["baseline_same_batch"]``: fp32 eager at the winner's batch size and threads
    (``threads=None``: every allowed core), measured in the confirmation rounds."""

    _NAME: ClassVar[str] = "baseline_same_batch"

    figures: Figures = Figures()
    batch_size: int | None = None
    threads: int | None = None
    deployment: dict[str, Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.figures.to_dict(),
            "batch_size": self.batch_size,
            "threads": self.threads,
            "deployment": deployment_dict(self.deployment),
            **_extra(self.extra),
        }

    @classmethod
    def _read(cls, r: _Reader) -> SameBatchEntry:
        figures, batch, threads = Figures._read(r), r.integer("batch_size"), r.integer("threads")
        return cls(figures, batch, threads, r.mapping("deployment"), r.extra())


@dataclasses.dataclass(frozen=True)
class FrontEntry(_Readable):
    """A candidate of ``results["pareto"]``: one trial's figures and what it was.

    Attributes:
        number: its trial.
        label: the candidate in words (``prune50 onnxruntime/int8 b256 t1``).
        figures: its figures.
        accuracy_drop: baseline accuracy − its accuracy.
        recipe, student, deployment: the compression passes, the distilled student's
            architecture (``None``: the task's own model) and how it runs.
    """

    _NAME: ClassVar[str] = "pareto"

    number: int | None = None
    label: str | None = None
    figures: Figures = Figures()
    accuracy_drop: float | None = None
    recipe: tuple[dict[str, Any], ...] | None = None
    student: str | None = None
    deployment: dict[str, Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self._known(), **_extra(self.extra)}

    def _known(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            **self.figures.to_dict(),
            "accuracy_drop": self.accuracy_drop,
            "recipe": recipe_list(self.recipe),
            "student": self.student,
            "deployment": deployment_dict(self.deployment),
        }

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(**cls._fields(r), extra=r.extra())

    @classmethod
    def _fields(cls, r: _Reader) -> dict[str, Any]:
        return {
            "number": r.integer("number"),
            "label": r.text("label"),
            "figures": Figures._read(r),
            "accuracy_drop": r.number("accuracy_drop"),
            "recipe": r.recipe("recipe"),
            "student": r.text("student"),
            "deployment": r.mapping("deployment"),
        }

    @classmethod
    def of_row(cls, row: TrialRow, figures: Figures | None = None, **more: Any) -> Self:
        """The entry of trial ``row``, with ``figures`` in place of its own when given."""
        return cls(
            number=row.number,
            label=row.label,
            figures=row.figures if figures is None else figures,
            accuracy_drop=row.accuracy_drop,
            recipe=row.recipe,
            student=row.student,
            deployment=row.deployment,
            **more,
        )


@dataclasses.dataclass(frozen=True)
class BestEntry(FrontEntry):
    """``results["best"]``: the winner, with its figures from the confirmation rounds.

    Attributes:
        artifact: where the winner was exported (``OUT/artifact``), or ``None``.
        trial_energy_j_per_item: the search's own single measurement of it, for comparison.
    """

    _NAME: ClassVar[str] = "best"

    artifact: str | None = None
    trial_energy_j_per_item: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._known(),
            "artifact": self.artifact,
            "trial_energy_j_per_item": self.trial_energy_j_per_item,
            **_extra(self.extra),
        }

    @classmethod
    def _fields(cls, r: _Reader) -> dict[str, Any]:
        return {
            **super()._fields(r),
            "artifact": r.text("artifact"),
            "trial_energy_j_per_item": r.number("trial_energy_j_per_item"),
        }


@dataclasses.dataclass(frozen=True)
class Meter(_Readable):
    """``results["meter"]``: the source and uncertainty of the meter the baseline was
    measured with."""

    _NAME: ClassVar[str] = "meter"

    source: str | None = None
    uncertainty: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "uncertainty": self.uncertainty, **_extra(self.extra)}

    @classmethod
    def _read(cls, r: _Reader) -> Meter:
        return cls(r.source("source"), r.number("uncertainty"), r.extra())


# ----------------------------------------------------------------------------- confirmation


@dataclasses.dataclass(frozen=True)
class PairedRatio(_Readable):
    """One ratio of the confirmation, taken within each round both candidates were measured
    in, and the median of those (the published figure)."""

    _NAME: ClassVar[str] = "ratio"

    rounds: tuple[float, ...] = ()
    median: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": list(self.rounds), "median": self.median, **_extra(self.extra)}

    @classmethod
    def _read(cls, r: _Reader) -> PairedRatio:
        return cls(r.numbers("rounds"), r.number("median"), r.extra())


@dataclasses.dataclass(frozen=True)
class ConfirmedCandidate(_Readable):
    """One candidate of the confirmation (``confirmation.candidates[role]``).

    Attributes:
        label, trial, deployment: what it is, and the trial it came from (``None`` for the
            two fp32 eager baselines).
        rounds_measured: rounds in which its measurement succeeded.
        failures: why the others failed, one line each (``round 2: ...``).
        round_figures: each round's figures (:data:`ROUND_KEYS`; ``None`` for a failed round).
        figures: their medians, the source, the uncertainty and the disturbed windows summed
            over rounds (only :data:`MEASURED_KEYS` are set).
        spread_rel: (max − min) / median of its rounds' J/item.
    """

    _NAME: ClassVar[str] = "candidate"

    label: str | None = None
    trial: int | None = None
    deployment: dict[str, Any] | None = None
    rounds_measured: int | None = None
    failures: tuple[str, ...] = ()
    round_figures: dict[str, tuple[float | None, ...]] = dataclasses.field(default_factory=dict)
    figures: Figures = Figures()
    spread_rel: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "trial": self.trial,
            "deployment": deployment_dict(self.deployment),
            "rounds_measured": self.rounds_measured,
            "failures": list(self.failures),
            "round_figures": {k: list(v) for k, v in self.round_figures.items()},
            **self.figures.items(MEASURED_KEYS),
            "spread_rel": self.spread_rel,
            **_extra(self.extra),
        }

    @classmethod
    def _read(cls, r: _Reader) -> ConfirmedCandidate:
        label, trial, dep = r.text("label"), r.integer("trial"), r.mapping("deployment")
        measured, failures = r.integer("rounds_measured"), r.texts("failures")
        per_round = r.child("round_figures")
        rounds = (
            {k: per_round.numbers(k, null=True) for k in per_round.names()} if per_round else {}
        )
        figures = Figures._read(r, MEASURED_KEYS)
        return cls(
            label,
            trial,
            dep,
            measured,
            failures,
            rounds,
            figures,
            r.number("spread_rel"),
            r.extra(),
        )


@dataclasses.dataclass(frozen=True)
class Confirmation(_Readable):
    """``results["confirmation"]``: the headline measured again side by side (see
    ``docs/search.md``, "The confirmation").

    Attributes:
        rounds: how many rounds; ``order``: the roles in each round's order.
        candidates: by role (``baseline``, ``baseline_same_batch``, ``best``, ``runner_up``).
        ratios: ``energy_ratio`` (fp32 eager b1 ÷ winner) and ``energy_ratio_same_batch``
            (fp32 eager at the winner's batch ÷ winner), per round and their median.
        chosen: ``best`` or ``runner_up``, whichever used less energy by the paired rounds
            (``None``: both failed).
        spread: the largest candidate ``spread_rel``.
    """

    _NAME: ClassVar[str] = "confirmation"

    rounds: int | None = None
    order: tuple[tuple[str, ...], ...] = ()
    candidates: dict[str, ConfirmedCandidate] = dataclasses.field(default_factory=dict)
    ratios: dict[str, PairedRatio] = dataclasses.field(default_factory=dict)
    chosen: str | None = None
    spread: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def ratio(self, name: str) -> float | None:
        """The published (median) ratio ``name``, or ``None``."""
        found = self.ratios.get(name)
        return found.median if found is not None else None

    @property
    def winner(self) -> ConfirmedCandidate | None:
        """The candidate the rounds chose."""
        return self.candidates.get(self.chosen) if self.chosen else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "order": [list(o) for o in self.order],
            "candidates": {k: c.to_dict() for k, c in self.candidates.items()},
            "ratios": {k: v.to_dict() for k, v in self.ratios.items()},
            "chosen": self.chosen,
            "spread": self.spread,
            **_extra(self.extra),
        }

    @classmethod
    def _read(cls, r: _Reader) -> Confirmation:
        rounds = r.integer("rounds")
        order = []
        for i, item in enumerate(r.items("order")):
            if not isinstance(item, list | tuple) or not all(isinstance(x, str) for x in item):
                raise r.fail(f"order[{i}]", "must be a list of role names")
            order.append(tuple(item))
        cands, ratios = r.child("candidates"), r.child("ratios")
        return cls(
            rounds,
            tuple(order),
            {k: ConfirmedCandidate._read(c) for k, c in _named(cands)},
            {k: PairedRatio._read(c) for k, c in _named(ratios)},
            r.text("chosen"),
            r.number("spread"),
            r.extra(),
        )


def _named(r: _Reader | None) -> list[tuple[str, _Reader]]:
    """An object's members, each an object with its own reader (candidates by role)."""
    if r is None:
        return []
    out = []
    for key in r.names():
        child = r.child(key)
        if child is None:
            raise r.fail(key, "must be an object, got null")
        out.append((key, child))
    return out


# ----------------------------------------------------------------------------- trial rows


@dataclasses.dataclass(frozen=True)
class TrialRow(_Readable):
    """One trial of the study, as ``trials.csv``, the report and the progress lines show it.

    Attributes:
        number: the trial's number; ``state``: ``complete``, ``failed``, ``pruned`` or
            ``running``; ``fail_reason``: why it did not complete.
        label, model, recipe, student, deployment: the candidate.
        figures: what it measured (empty unless complete).
        accuracy_drop: baseline accuracy − its accuracy.
        build_energy_j, measure_energy_j: what building and measuring it spent, J, metered by
            ``search_energy_source``; ``duration_s``: its wall time.
        worker: the host that ran it; ``log``: its output's file; ``output_tail``: the end of
            that output when it failed.
        feasible: within the search's constraints (``None``: not recorded); ``pareto``: on
            the front of the feasible trials.
        fidelity: how its figures were measured: ``"full"`` (the search's protocol) or
            ``"screen"`` (a short measurement that showed it could not be the best:
            ``docs/search.md``, "Spending the budget"); ``None`` in files written before.
    """

    _NAME: ClassVar[str] = "row"
    _PREFIX: ClassVar[str] = ""

    number: int
    state: str
    fail_reason: str | None = None
    label: str | None = None
    model: str | None = None
    recipe: tuple[dict[str, Any], ...] | None = None
    student: str | None = None
    deployment: dict[str, Any] | None = None
    figures: Figures = Figures()
    accuracy_drop: float | None = None
    build_energy_j: float | None = None
    measure_energy_j: float | None = None
    search_energy_source: str | None = None
    duration_s: float | None = None
    worker: str | None = None
    log: str | None = None
    output_tail: str | None = None
    feasible: bool | None = False
    pareto: bool = False
    fidelity: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def to_dict(self) -> dict[str, Any]:
        figures = self.figures.to_dict()
        return {
            "number": self.number,
            "state": self.state,
            "fail_reason": self.fail_reason,
            "label": self.label,
            "model": self.model,
            "recipe": recipe_list(self.recipe),
            "student": self.student,
            "deployment": deployment_dict(self.deployment),
            "accuracy": figures.pop("accuracy"),
            "accuracy_drop": self.accuracy_drop,
            **figures,
            "build_energy_j": self.build_energy_j,
            "measure_energy_j": self.measure_energy_j,
            "search_energy_source": self.search_energy_source,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "log": self.log,
            "output_tail": self.output_tail,
            "feasible": self.feasible,
            "pareto": self.pareto,
            **({"fidelity": self.fidelity} if self.fidelity is not None else {}),
            **_extra(self.extra),
        }

    @classmethod
    def _read(cls, r: _Reader) -> TrialRow:
        number, state = r.integer("number"), r.text("state")
        if number is None:
            raise r.fail("number", "is missing: every trial row has its trial's number")
        if state is None:
            raise r.fail("state", "is missing: every trial row has a state")
        return cls(
            number=number,
            state=state,
            fail_reason=r.text("fail_reason"),
            label=r.text("label"),
            model=r.text("model"),
            recipe=r.recipe("recipe"),
            student=r.text("student"),
            deployment=r.mapping("deployment"),
            figures=Figures._read(r),
            accuracy_drop=r.number("accuracy_drop"),
            build_energy_j=r.number("build_energy_j"),
            measure_energy_j=r.number("measure_energy_j"),
            search_energy_source=r.text("search_energy_source"),
            duration_s=r.number("duration_s"),
            worker=r.text("worker"),
            log=r.text("log"),
            output_tail=r.text("output_tail"),
            feasible=r.flag("feasible"),
            pareto=bool(r.flag("pareto")),
            fidelity=r.text("fidelity"),
            extra=r.extra(),
        )


# ----------------------------------------------------------------------------- the document


@dataclasses.dataclass(frozen=True)
class Results(_Readable):
    """``results.json``: what a search found, and how it was measured (``docs/search.md``).

    Attributes:
        schema: :data:`RESULTS_SCHEMA`.
        task, task_spec, study, storage, scenario: what was searched, where it is stored
            (the URL's password redacted) and for which scenario (``offline``/``online``).
        max_accuracy_drop, latency_p90_ms: the constraints.
        hardware: the machine (``wattwise.measure`` ``hardware_info``); ``meter``: its meter.
        baseline: fp32 eager at batch 1; ``baseline_same_batch``: fp32 eager at the
            winner's batch and threads (``None`` unless confirmed); ``best``: the winner
            (``None``: nothing met the constraints).
        energy_ratio, energy_ratio_same_batch: baseline J/item ÷ best J/item, medians of
            within-round ratios of ``confirmation``; ``None`` when not confirmed.
        pareto: the feasible front, lowest J/item first.
        trials, failed_trials, interrupted_trials, trials_budget: the search's trial counts.
        search_energy_j, search_energy_source, search_energy_uncertainty,
            search_energy_by_phase_j: what the whole search spent, J.
        payback_items, payback_basis, payback_items_batch1: after how many items the search
            pays for itself (against ``payback_basis``, and against batch 1).
        grid_intensity_g_per_kwh, grid_intensity_source, price_per_kwh, price_source,
            currency: the CO2e and cost factors.
        elapsed_s, interrupted, notes: how the run went.
        extra: keys this version does not know (a newer writer's), written back as read.
    """

    schema: int = RESULTS_SCHEMA
    task: str | None = None
    task_spec: str | None = None
    study: str | None = None
    storage: str | None = None
    scenario: str | None = None
    max_accuracy_drop: float | None = None
    latency_p90_ms: float | None = None
    hardware: dict[str, Any] | None = None
    meter: Meter | None = None
    baseline: BaselineEntry = BaselineEntry()
    baseline_same_batch: SameBatchEntry | None = None
    best: BestEntry | None = None
    energy_ratio: float | None = None
    energy_ratio_same_batch: float | None = None
    confirmation: Confirmation | None = None
    pareto: tuple[FrontEntry, ...] = ()
    trials: int | None = None
    failed_trials: int | None = None
    interrupted_trials: int | None = None
    trials_budget: int | None = None
    search_energy_j: float | None = None
    search_energy_source: str | None = None
    search_energy_uncertainty: float | None = None
    search_energy_by_phase_j: dict[str, float] | None = None
    payback_items: float | None = None
    payback_basis: str | None = None
    payback_items_batch1: float | None = None
    grid_intensity_g_per_kwh: float | None = None
    grid_intensity_source: str | None = None
    price_per_kwh: float | None = None
    price_source: str | None = None
    currency: str | None = None
    elapsed_s: float | None = None
    interrupted: bool | None = None
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    # How to_dict writes the fields that are not plain JSON values (None stays null).
    _WRITE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "hardware": _deep_sorted,
        "meter": Meter.to_dict,
        "baseline": BaselineEntry.to_dict,
        "baseline_same_batch": SameBatchEntry.to_dict,
        "best": BestEntry.to_dict,
        "confirmation": Confirmation.to_dict,
        "pareto": lambda front: [p.to_dict() for p in front],
        "search_energy_by_phase_j": dict,
        "notes": list,
    }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: every field in reading order (the order they are declared in,
        each written by its entry in ``_WRITE`` or as it is), then the unknown keys sorted."""
        known = {
            f.name: _optional(getattr(self, f.name), self._WRITE.get(f.name, _as_is))
            for f in dataclasses.fields(self)
            if f.name != "extra"
        }
        return {**known, **_extra(self.extra)}

    @classmethod
    def from_dict(cls, data: Any, *, name: str | None = None) -> Results:
        """Read a results document (``json.load`` of a results.json, or its dict).

        Raises:
            InputError: not an object, another schema, or a field of the wrong type, NaN
                or infinite (one line naming the field).
        """
        if not isinstance(data, Mapping):
            raise InputError(f"results must be an object (results.json), got {json_type(data)}")
        check_schema(data)
        return cls._read(_Reader(data, ""))

    @classmethod
    def _read(cls, r: _Reader) -> Results:
        r.raw("schema")  # checked by from_dict
        meter, base, same, best, conf, phases = (
            r.child(k)
            for k in (
                "meter",
                "baseline",
                "baseline_same_batch",
                "best",
                "confirmation",
                "search_energy_by_phase_j",
            )
        )
        return cls(
            task=r.text("task"),
            task_spec=r.text("task_spec"),
            study=r.text("study"),
            storage=r.text("storage"),
            scenario=r.text("scenario"),
            max_accuracy_drop=r.number("max_accuracy_drop"),
            latency_p90_ms=r.number("latency_p90_ms"),
            hardware=r.mapping("hardware"),
            meter=Meter._read(meter) if meter is not None else None,
            baseline=BaselineEntry._read(base) if base is not None else BaselineEntry(),
            baseline_same_batch=SameBatchEntry._read(same) if same is not None else None,
            best=BestEntry._read(best) if best is not None else None,
            energy_ratio=r.number("energy_ratio"),
            energy_ratio_same_batch=r.number("energy_ratio_same_batch"),
            confirmation=Confirmation._read(conf) if conf is not None else None,
            pareto=tuple(FrontEntry._read(c) for c in r.children("pareto")),
            trials=r.integer("trials"),
            failed_trials=r.integer("failed_trials"),
            interrupted_trials=r.integer("interrupted_trials"),
            trials_budget=r.integer("trials_budget"),
            search_energy_j=r.number("search_energy_j"),
            search_energy_source=r.text("search_energy_source"),
            search_energy_uncertainty=r.number("search_energy_uncertainty"),
            search_energy_by_phase_j=(
                {k: phases.amount(k) for k in phases.names()} if phases is not None else None
            ),
            payback_items=r.number("payback_items"),
            payback_basis=r.text("payback_basis"),
            payback_items_batch1=r.number("payback_items_batch1"),
            grid_intensity_g_per_kwh=r.number("grid_intensity_g_per_kwh"),
            grid_intensity_source=r.text("grid_intensity_source"),
            price_per_kwh=r.number("price_per_kwh"),
            price_source=r.text("price_source"),
            currency=r.text("currency"),
            elapsed_s=r.number("elapsed_s"),
            interrupted=r.flag("interrupted"),
            notes=r.texts("notes"),
            extra=r.extra(),
        )
