"""Generation as a workload: prefill and decode energy per token, TTFT and TBT.

A generative model spends its energy in two phases that scale differently: the *prefill*
runs the whole prompt through the model at once (compute-bound, like a classifier's batch),
then each *decode* step runs one new token per sequence against the cached keys and values
(memory-bound at small batch). One J/item figure hides which phase a knob helps, so each is
measured in windows of its own:

* **prefill windows** repeat ``prefill`` (a fresh cache, the prompt's ``prompt_tokens``
  through the model) until the window is long enough for the meter; J per prompt token is
  the window's energy over the prompt tokens it ran;
* **decode windows** start from one prefilled cache and repeat decode steps, cutting the
  cache back to the prompt every ``new_tokens`` steps, so every response decodes over the
  same lengths ``prompt_tokens .. prompt_tokens + new_tokens - 1``; J per generated token is
  the window's energy over the tokens it made;
* a separate **timed pass** runs whole responses, timing each to the device's end of work:
  the time to first token (prefill plus picking the first token) and the time between
  tokens. Windows synchronise a GPU once, at their end; timing each token inside them would
  throttle the very throughput they measure.

Three kinds of model are driven (:func:`generator_for`): our own models with a static cache
(``new_cache(batch_size, max_tokens)`` and ``forward(ids, cache=cache)``, e.g. ``tinylm``),
Hugging Face causal LMs (``past_key_values``, cut back with ``crop``), and any plain
``forward(ids) -> logits``, which has no cache: each step recomputes the whole sequence,
and the result says so. Decoding is greedy: the figures are about cost, not text.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wattwise._core import first_line
from wattwise.errors import InputError, WorkloadError
from wattwise.measure import _stats

if TYPE_CHECKING:
    import torch

# Responses timed for TTFT/TBT: at least this many, and at least TIMED_PASS_S of them.
TIMED_RESPONSES = 5
TIMED_PASS_S = 1.0
KV_CACHES = ("static", "dynamic", "none")


@dataclasses.dataclass(frozen=True)
class GenerateSpec:
    """What one response is: a prompt of ``prompt_tokens`` and ``new_tokens`` generated.

    The prompt is the example input's token ids, repeated to ``prompt_tokens``; the batch size
    of the measurement is the number of sequences generated together.

    Example:
        >>> m = wattwise.measure(lm, ids, generate=GenerateSpec(prompt_tokens=128, new_tokens=64))
        >>> m.generation.decode_energy_j_per_token
    """

    prompt_tokens: int = 128
    new_tokens: int = 64

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"GenerateSpec.{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Generation:
    """The generation figures of a :class:`~wattwise.measure.Measurement`.

    Energies carry the measurement's ``energy_source`` and ``energy_uncertainty``. Per token
    means per sequence's token: a batch of 8 prefilling 128 tokens runs 1024 prompt tokens.

    Attributes:
        prefill_energy_j_per_token: prefill windows' energy per prompt token.
        decode_energy_j_per_token: decode windows' energy per generated token.
        energy_j_per_response: one sequence's prompt and new tokens:
            ``prompt_tokens * prefill + new_tokens * decode``.
        ttft_ms_p50, ttft_ms_p90: time to first token of a response (its prefill and the
            first token's choice), from the timed pass.
        tbt_ms_p50, tbt_ms_p90: time between tokens (one decode step), from the timed pass.
        tokens_per_s: generated tokens per second over whole responses, all sequences of the
            batch together, from the windows' medians.
        idle_share: the fraction of the windows' energy that the idle power accounts for.
        kv_cache: ``"static"`` (the model's own pre-allocated cache), ``"dynamic"`` (Hugging
            Face's), or ``"none"`` (each step recomputes the whole sequence).
        prefill_windows, decode_windows: windows kept in each phase.
    """

    prompt_tokens: int
    new_tokens: int
    prefill_energy_j_per_token: float
    decode_energy_j_per_token: float
    energy_j_per_response: float
    ttft_ms_p50: float
    ttft_ms_p90: float
    tbt_ms_p50: float
    tbt_ms_p90: float
    tokens_per_s: float
    idle_share: float
    kv_cache: str
    prefill_windows: int
    decode_windows: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Generation:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# --- driving a model ---------------------------------------------------------------------


class Generator:
    """Greedy generation of one batch of sequences with one kind of cache.

    ``prefill()`` starts the responses afresh from the prompt and returns the first new
    tokens; ``step(tokens)`` feeds the latest tokens and returns the next; ``rewind()`` cuts
    the cache back to the prompt, so decoding can restart without another prefill.
    """

    kv_cache = "none"

    def __init__(self, model: Any, prompt: torch.Tensor, spec: GenerateSpec) -> None:
        self.model = model
        self.prompt = prompt
        self.spec = spec

    def prefill(self) -> torch.Tensor:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rewind(self) -> None:
        raise NotImplementedError


def _next_tokens(logits: Any) -> torch.Tensor:
    """The greedy choice at the last position of ``(batch, seq, vocab)`` logits."""
    import torch

    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise WorkloadError(f"a language model must return (batch, seq, vocab) logits, got {got}")
    return logits[:, -1].argmax(-1, keepdim=True)


class _StaticCache(Generator):
    """Our models' protocol: ``new_cache(batch, max_tokens)`` and ``forward(ids, cache=)``."""

    kv_cache = "static"

    def __init__(self, model: Any, prompt: torch.Tensor, spec: GenerateSpec) -> None:
        super().__init__(model, prompt, spec)
        total = spec.prompt_tokens + spec.new_tokens
        self.cache = model.new_cache(prompt.shape[0], total, device=prompt.device)

    def prefill(self) -> torch.Tensor:
        self.cache.length = 0
        return _next_tokens(self.model(self.prompt, cache=self.cache))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return _next_tokens(self.model(tokens, cache=self.cache))

    def rewind(self) -> None:
        self.cache.length = self.spec.prompt_tokens


class _HfCache(Generator):
    """Hugging Face causal LMs: the cache in and out (``cache`` from transformers 5.2x,
    ``past_key_values`` before), cut back with ``crop``."""

    kv_cache = "dynamic"

    def __init__(self, model: Any, prompt: torch.Tensor, spec: GenerateSpec) -> None:
        super().__init__(model, prompt, spec)
        self.past: Any = None
        self.name = "cache" if _names(model, "cache") else "past_key_values"

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, use_cache=True, **{self.name: self.past})
        self.past = getattr(out, self.name)
        return _next_tokens(out.logits)

    def prefill(self) -> torch.Tensor:
        self.past = None
        return self._forward(self.prompt)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._forward(tokens)

    def rewind(self) -> None:
        # A negative count removes that many tokens (transformers 4.x and 5.x alike).
        extra = int(self.past.get_seq_length()) - self.spec.prompt_tokens
        if extra > 0:
            self.past.crop(-extra)


class _NoCache(Generator):
    """A plain ``forward(ids) -> logits``: every step runs the whole sequence so far."""

    def __init__(self, model: Any, prompt: torch.Tensor, spec: GenerateSpec) -> None:
        super().__init__(model, prompt, spec)
        self.sequence = prompt

    def prefill(self) -> torch.Tensor:
        self.sequence = self.prompt
        return _next_tokens(_logits(self.model(self.prompt)))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch

        self.sequence = torch.cat([self.sequence, tokens], dim=1)
        return _next_tokens(_logits(self.model(self.sequence)))

    def rewind(self) -> None:
        self.sequence = self.prompt


def _logits(out: Any) -> Any:
    """Logits from what a forward returns: the tensor, a ``.logits`` field, or a tuple's first."""
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, tuple | list) and out:
        return out[0]
    return out


def _names(model: Any, name: str) -> bool:
    """Whether ``model.forward`` has a parameter called ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def generator_for(model: Any, prompt: torch.Tensor, spec: GenerateSpec) -> Generator:
    """The :class:`Generator` for ``model``: its own static cache, Hugging Face's, or none."""
    if callable(getattr(model, "new_cache", None)) and _names(model, "cache"):
        return _StaticCache(model, prompt, spec)
    if hasattr(model, "config") and (_names(model, "cache") or _names(model, "past_key_values")):
        return _HfCache(model, prompt, spec)
    return _NoCache(model, prompt, spec)


def prompt_ids(example_input: Any, batch_size: int, prompt_tokens: int) -> torch.Tensor:
    """``batch_size`` prompts of ``prompt_tokens`` ids: the example's ids (a tensor, or a
    dict's ``input_ids``), each row repeated to the length, rows cycled to the batch.

    Raises:
        InputError: the example holds no integer token ids.
    """
    import torch

    ids = example_input.get("input_ids") if isinstance(example_input, dict) else example_input
    if isinstance(ids, tuple | list) and ids:
        ids = ids[0]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        raise InputError(
            "generate= needs token ids: a (batch, seq) integer tensor, or a dict with input_ids"
        )
    reps = math.ceil(prompt_tokens / ids.shape[1])
    rows = ids.repeat(1, reps)[:, :prompt_tokens]
    index = torch.arange(batch_size) % rows.shape[0]
    return rows[index].contiguous()


# --- the measurement -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase's kept windows: J per call and per sequence (a prefill, or one decode step of
    every sequence), and the seconds and joules they ran."""

    j_per_sequence: list[float]
    above_idle_j_per_sequence: list[float]
    ci95_rel: float
    call_s: float  # seconds per call over the windows
    energy_j: float
    time_s: float


@dataclasses.dataclass(frozen=True)
class Timed:
    """The timed pass: seconds to each response's first token, between tokens, and whole."""

    ttft_s: list[float]
    tbt_s: list[float]
    response_s: list[float]


def timed_pass(gen: Generator, sync: Callable[[], None]) -> Timed:
    """Whole responses, each token timed to the device's end of work (at least
    :data:`TIMED_RESPONSES`, and :data:`TIMED_PASS_S` seconds of them)."""
    clock = time.perf_counter
    timed = Timed([], [], [])
    start = clock()
    while len(timed.ttft_s) < TIMED_RESPONSES or clock() - start < TIMED_PASS_S:
        t0 = clock()
        tokens = gen.prefill()
        sync()
        t1 = clock()
        timed.ttft_s.append(t1 - t0)
        for _ in range(gen.spec.new_tokens - 1):
            tokens = gen.step(tokens)
            sync()
            t2 = clock()
            timed.tbt_s.append(t2 - t1)
            t1 = t2
        timed.response_s.append(t1 - t0)
        if len(timed.ttft_s) >= 10 * TIMED_RESPONSES:
            break
    return timed


def summarise(
    spec: GenerateSpec,
    batch_size: int,
    prefill: Phase,
    decode: Phase,
    timed: Timed,
    idle_power_w: float,
    kv_cache: str,
) -> Generation:
    """The :class:`Generation` figures from the two phases' windows and the timed pass."""
    prefill_j = statistics.median(prefill.j_per_sequence) / spec.prompt_tokens
    decode_j = statistics.median(decode.j_per_sequence)
    response_s = prefill.call_s + spec.new_tokens * decode.call_s
    energy_j = prefill.energy_j + decode.energy_j
    idle_j = idle_power_w * (prefill.time_s + decode.time_s)
    tbt = timed.tbt_s or [decode.call_s]  # one new token: no step between tokens
    ttft_s = timed.ttft_s
    return Generation(
        prompt_tokens=spec.prompt_tokens,
        new_tokens=spec.new_tokens,
        prefill_energy_j_per_token=prefill_j,
        decode_energy_j_per_token=decode_j,
        energy_j_per_response=spec.prompt_tokens * prefill_j + spec.new_tokens * decode_j,
        ttft_ms_p50=_stats.percentile(ttft_s, 50) * 1e3,
        ttft_ms_p90=_stats.percentile(ttft_s, 90) * 1e3,
        tbt_ms_p50=_stats.percentile(tbt, 50) * 1e3,
        tbt_ms_p90=_stats.percentile(tbt, 90) * 1e3,
        tokens_per_s=batch_size * spec.new_tokens / response_s,
        idle_share=min(1.0, idle_j / energy_j) if energy_j > 0 else 0.0,
        kv_cache=kv_cache,
        prefill_windows=len(prefill.j_per_sequence),
        decode_windows=len(decode.j_per_sequence),
    )


def check_runs(gen: Generator, describe_input: str) -> None:
    """One whole response, before any window: a model that cannot generate fails in one line."""
    try:
        tokens = gen.prefill()
        for _ in range(gen.spec.new_tokens - 1):
            tokens = gen.step(tokens)
        gen.rewind()
        gen.step(tokens)
    except (InputError, WorkloadError):
        raise
    except Exception as exc:
        raise WorkloadError(
            f"generation failed ({gen.kv_cache} KV cache) on prompt [{describe_input}]: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
