"""Generation as a workload: prefill and decode windows, TTFT/TBT, and the three kinds of model
the harness drives (a static cache of the model's own, Hugging Face's cache, none)."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import wattwise as ww
from wattwise.errors import InputError, WorkloadError
from wattwise.measure import GenerateSpec, Measurement
from wattwise.measure._generate import generator_for, prompt_ids

VOCAB = 40


class _Fast(TypedDict):
    min_window_s: float
    max_time_s: float
    warmup_max_s: float


FAST: _Fast = {"min_window_s": 0.05, "max_time_s": 0.4, "warmup_max_s": 0.2}


class RunningMean:
    """The static cache of :class:`MeanLM`: the sum of the embeddings so far, per sequence."""

    def __init__(self, batch_size: int, max_tokens: int, dim: int) -> None:
        self.sums = torch.zeros(batch_size, max_tokens, dim)
        self.max_tokens = max_tokens
        self.length = 0


class MeanLM(nn.Module):
    """A language model a user might write to try the protocol: each position's logits come
    from the mean of the embeddings up to it, so the cached and the uncached forward agree
    exactly. ``new_cache`` and ``forward(ids, cache=)`` are the static-cache protocol."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, 16)
        self.out = nn.Linear(16, VOCAB)

    def new_cache(self, batch_size: int, max_tokens: int, *, device: Any = None) -> RunningMean:
        return RunningMean(batch_size, max_tokens, 16)

    def forward(self, ids: torch.Tensor, cache: RunningMean | None = None) -> torch.Tensor:
        h = self.emb(ids).cumsum(1)
        start = 0
        if cache is not None:
            start = cache.length
            if start + ids.shape[1] > cache.max_tokens:
                raise InputError("MeanLM: the cache is full")
            if start:
                h = h + cache.sums[:, start - 1 : start]
            cache.sums[:, start : start + ids.shape[1]] = h
            cache.length += ids.shape[1]
        counts = torch.arange(start + 1, start + ids.shape[1] + 1).view(1, -1, 1)
        return self.out(h / counts)


class Plain(nn.Module):
    """The same model seen without its cache: ``forward(ids) -> logits`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = MeanLM()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(ids)


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        eos_token_id=0,
        bos_token_id=0,
        initializer_range=0.5,  # random weights that do not decode one token forever
    )
    return GPT2LMHeadModel(config).eval()


IDS = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))


def greedy(model: Any, spec: GenerateSpec, responses: int = 2) -> list[list[int]]:
    """The first sequence's tokens in ``responses`` responses, each decoded from the same
    prefill: the cache is rewound to the prompt between them."""
    gen = generator_for(model, prompt_ids(IDS, 2, spec.prompt_tokens), spec)
    out = []
    with torch.inference_mode():
        first = gen.prefill()
        for _ in range(responses):
            tokens, made = first, [int(first[0])]
            for _ in range(spec.new_tokens):
                tokens = gen.step(tokens)
                made.append(int(tokens[0]))
            out.append(made)
            gen.rewind()
    return out


@pytest.mark.parametrize(
    ("cached", "uncached", "kind"),
    [(MeanLM, Plain, "static"), (gpt2, gpt2, "dynamic")],
    ids=["own-static-cache", "hugging-face"],
)
def test_cached_generation_makes_the_tokens_full_recompute_makes(
    cached: Any, uncached: Any, kind: str
) -> None:
    spec = GenerateSpec(prompt_tokens=7, new_tokens=6)
    model = cached()
    assert generator_for(model, prompt_ids(IDS, 2, 7), spec).kv_cache == kind
    plain = uncached() if kind == "static" else _NoCacheView(uncached())
    assert generator_for(plain, IDS, spec).kv_cache == "none"
    # Rewound to the prompt, a cache decodes the same response again...
    first, again = greedy(model, spec)
    assert first == again and len(set(first)) > 1
    # ...and the one that recomputing the whole sequence at every step decodes.
    assert greedy(plain, spec) == [first, first]


class _NoCacheView(nn.Module):
    """A Hugging Face model called as a plain ``forward(ids)``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> Any:
        return self.inner(input_ids=ids, use_cache=False)


def test_prompts_repeat_the_example_ids_to_length_and_cycle_its_rows() -> None:
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert prompt_ids(ids, 3, 7).tolist() == [
        [1, 2, 3, 1, 2, 3, 1],
        [4, 5, 6, 4, 5, 6, 4],
        [1, 2, 3, 1, 2, 3, 1],
    ]
    assert prompt_ids({"input_ids": ids, "attention_mask": ids}, 1, 2).tolist() == [[1, 2]]


def _check_figures(m: Measurement, spec: GenerateSpec, kind: str) -> None:
    g = m.generation
    assert g is not None and g.kv_cache == kind
    assert (g.prompt_tokens, g.new_tokens) == (spec.prompt_tokens, spec.new_tokens)
    for name in (
        "prefill_energy_j_per_token",
        "decode_energy_j_per_token",
        "ttft_ms_p50",
        "tbt_ms_p50",
        "tokens_per_s",
    ):
        value = getattr(g, name)
        assert math.isfinite(value) and value > 0, name
    assert g.ttft_ms_p90 >= g.ttft_ms_p50 and g.tbt_ms_p90 >= g.tbt_ms_p50
    assert 0 <= g.idle_share <= 1
    assert g.prefill_windows >= 3 and g.decode_windows >= 3
    per_response = spec.prompt_tokens * g.prefill_energy_j_per_token
    per_response += spec.new_tokens * g.decode_energy_j_per_token
    assert g.energy_j_per_response == pytest.approx(per_response)
    # An item is one response: its energy, and its prompt and new tokens.
    assert m.energy_j_per_item == pytest.approx(g.energy_j_per_response)
    assert m.tokens_per_item == spec.prompt_tokens + spec.new_tokens
    assert m.energy_source.startswith(("measured:", "estimated:"))
    assert Measurement.from_dict(m.to_dict()) == m


def test_own_static_cache_model_measures_prefill_and_decode_apart() -> None:
    spec = GenerateSpec(prompt_tokens=16, new_tokens=8)
    m = ww.measure(MeanLM(), IDS, batch_size=2, generate=spec, isolate=False, **FAST)
    _check_figures(m, spec, "static")
    assert m.macs_per_item > 0


def test_hugging_face_causal_lm_generates_in_a_child_with_its_cache() -> None:
    spec = GenerateSpec(prompt_tokens=8, new_tokens=4)
    m = ww.measure(gpt2, IDS, generate=spec, **FAST)
    _check_figures(m, spec, "dynamic")
    assert m.isolated


def test_a_plain_forward_generates_without_a_cache_and_says_so() -> None:
    spec = GenerateSpec(prompt_tokens=8, new_tokens=4)
    m = ww.measure(Plain(), IDS, generate=spec, isolate=False, **FAST)
    _check_figures(m, spec, "none")
    assert any(n.startswith("no KV cache") for n in m.notes)


class FlatLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).mean(1)  # (batch, vocab): a classifier, not a language model


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: GenerateSpec(prompt_tokens=0), InputError, "prompt_tokens must be an integer"),
        (
            lambda: ww.measure(Plain(), torch.randn(1, 5), generate=GenerateSpec(4, 2)),
            InputError,
            "needs token ids",
        ),
        (
            lambda: ww.measure(
                Plain(),
                IDS,
                mode="train",
                target=IDS,
                generate=GenerateSpec(4, 2),
            ),
            InputError,
            "generate= measures inference",
        ),
        (
            lambda: ww.measure(FlatLogits(), IDS, generate=GenerateSpec(4, 2), isolate=False),
            WorkloadError,
            r"must return \(batch, seq, vocab\) logits, got \(1, 40\)",
        ),
    ],
    ids=["bad-spec", "float-input", "train-mode", "not-a-language-model"],
)
def test_what_cannot_generate_fails_in_one_line(call: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_without_nvml_the_gpu_cool_down_says_it_could_not_read_the_temperature() -> None:
    from wattwise.measure._harness import _cool_down
    from wattwise.measure.meters.nvml import gpu_temperature_c

    if gpu_temperature_c("cuda") is not None:
        pytest.skip("an NVIDIA GPU is here: the gpu tests cover the cool-down")
    notes: list[str] = []
    _cool_down("cuda", notes)
    assert notes == ["GPU temperature unreadable: no cool-down before measuring"]
