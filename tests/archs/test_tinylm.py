"""TinyLM: the KV cache agrees with full recompute, GQA caches kv_heads, sizes scale, MACs add up.

Small configs throughout (the default model where the figure is its own): 2 shared cores.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wattwise.archs.tinylm import Block, KVCache, TinyLM, TinyLMConfig, tinylm
from wattwise.config import Config
from wattwise.errors import InputError
from wattwise.measure._macs import count_macs

SMALL = {"dim": 64, "heads": 4, "kv_heads": 2, "ffn_dim": 96, "layers": 2, "max_seq_len": 64}


# Small inputs gain nothing from a second thread (tests/conftest.py: one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**fields: int) -> TinyLM:
    torch.manual_seed(0)
    return tinylm(**{**SMALL, **fields}).eval()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def test_greedy_generation_with_the_cache_matches_full_recompute() -> None:
    model = _model()
    prompt = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    new_tokens = 12
    cache = model.new_cache(2, max_tokens=prompt.shape[1] + new_tokens)
    steps = [model(prompt, cache)]  # prefill: the whole prompt in one call
    ids = prompt
    for _ in range(new_tokens - 1):
        next_id = steps[-1][:, -1:].argmax(dim=-1)
        ids = torch.cat([ids, next_id], dim=1)
        steps.append(model(next_id, cache))
    cached = torch.cat(steps, dim=1)
    assert cache.length == ids.shape[1] == cached.shape[1]
    full = model(ids)  # no cache: every position recomputed
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    # The two rows went their own ways: the batch is not one sequence twice.
    assert not torch.equal(ids[0, prompt.shape[1] :], ids[1, prompt.shape[1] :])


@torch.no_grad()
def test_a_chunked_prefill_sees_absolute_positions() -> None:
    """Two calls of several tokens each: the second's RoPE positions start where the first
    ended, and its queries see the first call's keys as well as their own, causally."""
    model = _model()
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache(2, max_tokens=32)
    chunked = torch.cat([model(ids[:, :7], cache), model(ids[:, 7:], cache)], dim=1)
    torch.testing.assert_close(chunked, model(ids), atol=1e-5, rtol=1e-5)


def test_the_cache_holds_kv_heads_not_heads() -> None:
    model = _model()
    cfg = model.cfg
    assert cfg.kv_heads < cfg.heads
    cache = model.new_cache(3, max_tokens=10)
    assert isinstance(cache, KVCache)
    assert len(cache.keys) == len(cache.values) == cfg.layers
    for tensor in (*cache.keys, *cache.values):
        assert tensor.shape == (3, cfg.kv_heads, 10, cfg.head_dim)
        assert tensor.dtype == torch.float32
    assert cache.length == 0 and cache.batch_size == 3 and cache.max_tokens == 10
    block = model.blocks[0]
    assert isinstance(block, Block)
    first = block.attn
    assert first.k.out_features == first.v.out_features == cfg.kv_heads * cfg.head_dim
    assert first.q.out_features == cfg.heads * cfg.head_dim
    with torch.no_grad():
        model(torch.zeros(3, 4, dtype=torch.long), cache)
    # Written in place: the same tensors, now holding the four tokens.
    assert cache.length == 4
    assert cache.keys[0].abs()[:, :, :4].sum() > 0 and cache.keys[0][:, :, 4:].abs().sum() == 0
    assert model.new_cache(1, 5, dtype=torch.bfloat16).keys[0].dtype == torch.bfloat16


@torch.no_grad()
def test_the_cache_refuses_overflow_and_other_misuse() -> None:
    model = _model()
    with pytest.raises(InputError, match="max_seq_len 64"):
        model.new_cache(1, max_tokens=65)
    with pytest.raises(InputError, match="max_tokens must be an int >= 1"):
        model.new_cache(1, max_tokens=0)
    cache = model.new_cache(2, max_tokens=8)
    model(torch.zeros(2, 6, dtype=torch.long), cache)
    with pytest.raises(InputError, match=r"3 more tokens overflow the cache \(6 of 8 used\)"):
        model(torch.zeros(2, 3, dtype=torch.long), cache)
    assert cache.length == 6  # a refused call leaves the cache as it was
    with pytest.raises(InputError, match="cache holds batch 2, input has 1"):
        model(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(InputError, match="past max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[batch, tokens\]"):
        model(torch.zeros(5, dtype=torch.long))
    cache.reset()
    assert model(torch.zeros(2, 8, dtype=torch.long), cache).shape == (2, 8, 256)


def test_overflow_errors_are_one_line() -> None:
    model = _model()
    with pytest.raises(InputError) as too_long:
        model.new_cache(1, 999)
    cache = model.new_cache(1, 2)
    with pytest.raises(InputError) as overflow:
        model(torch.zeros(1, 3, dtype=torch.long), cache)
    assert "\n" not in str(too_long.value) and "\n" not in str(overflow.value)


def test_width_scales_heads_at_a_fixed_head_dim_and_depth_scales_layers() -> None:
    base = TinyLMConfig()
    half = base.scaled(width=0.5)
    assert half.head_dim == base.head_dim
    assert (half.heads, half.kv_heads, half.dim) == (base.heads // 2, 1, base.dim // 2)
    assert half.ffn_dim == base.ffn_dim // 2
    assert base.scaled(depth=0.5).layers == base.layers // 2
    assert base.scaled(depth=0.3).layers == 2  # rounded up
    assert base.scaled(width=2.0).dim == 2 * base.dim
    assert base.scaled(width=0.01).heads == 1  # never below one head
    sizes = [_params(tinylm(width=w)) for w in (0.25, 0.5, 1.0)]
    assert sizes == sorted(sizes) and sizes[1] < 0.4 * sizes[2]
    assert _params(tinylm(depth=0.5)) < 0.6 * _params(tinylm())
    # Every width keeps a valid grouping: kv_heads divides heads.
    for width in (0.3, 0.6, 0.75, 1.25, 1.5):
        cfg = base.scaled(width=width)
        assert cfg.heads % cfg.kv_heads == 0


def test_the_default_model_has_the_documented_size() -> None:
    cfg = TinyLMConfig()
    per_layer = (
        2 * cfg.dim * cfg.dim  # q, o
        + 2 * cfg.dim * cfg.kv_heads * cfg.head_dim  # k, v
        + 3 * cfg.dim * cfg.ffn_dim  # SwiGLU
        + 2 * cfg.dim  # the two RMSNorm weights
    )
    analytic = cfg.layers * per_layer + 2 * cfg.vocab_size * cfg.dim + cfg.dim
    assert _params(tinylm()) == analytic == 853_120


def test_config_checks_name_the_field_and_round_trip() -> None:
    with pytest.raises(InputError, match=r"kv_heads \(3\) must divide heads \(4\)"):
        TinyLMConfig(heads=4, kv_heads=3)
    with pytest.raises(InputError, match=r"dim \(100\) must be a multiple of heads"):
        TinyLMConfig(dim=100, heads=3, kv_heads=1)
    with pytest.raises(InputError, match=r"TinyLMConfig\.layers must be an int >= 1"):
        TinyLMConfig(layers=0)
    with pytest.raises(InputError, match="width must be a number > 0"):
        tinylm(width=0)
    with pytest.raises(InputError, match="unknown argument"):
        tinylm(hidden=3)
    cfg = TinyLMConfig(dim=96, heads=3, kv_heads=1)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg) == cfg


def test_mac_count_matches_the_analytic_count() -> None:
    model = _model(max_seq_len=128)
    cfg, t = model.cfg, 50
    kv_dim = cfg.kv_heads * cfg.head_dim
    per_layer = (
        t * cfg.dim * cfg.dim  # q
        + 2 * t * cfg.dim * kv_dim  # k, v
        + t * cfg.dim * cfg.dim  # o
        + 2 * cfg.heads * t * t * cfg.head_dim  # scores q·k, then the weighted values
        + 3 * t * cfg.dim * cfg.ffn_dim  # SwiGLU's w1, w3, w2
    )
    analytic = cfg.layers * per_layer + t * cfg.dim * cfg.vocab_size  # the output head
    assert count_macs(model, torch.zeros(1, t, dtype=torch.long)) == analytic


def test_a_few_steps_lower_the_loss_and_gradients_reach_every_weight() -> None:
    model = _model().train()
    ids = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(3))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses: list[float] = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        loss.backward()
        if not losses:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert all(torch.isfinite(torch.tensor(losses)))
