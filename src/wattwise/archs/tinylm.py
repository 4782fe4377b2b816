"""TinyLM: a small decoder-only transformer in the Llama style, on bytes.

Our own readable code, one file, after Touvron et al. 2023 ("LLaMA", and Llama 2's grouped
keys and values). Each of the ``layers`` blocks is pre-norm::

    x = x + attention(rms_norm(x))      # grouped-query, rotary positions, causal
    x = x + swiglu(rms_norm(x))

then a final RMSNorm and a linear head to ``vocab_size`` logits.

* **RMSNorm** (Zhang & Sennrich 2019): scale by the root mean square, no mean, no bias.
* **Rotary position embeddings** (Su et al. 2021): queries and keys are rotated by their
  *absolute* position, so a token's key is the same whether it was computed in a full pass or
  one step at a time, which is what lets a cache hold it. The "rotate half" layout of the
  Llama reference code (pairs ``i`` and ``i + head_dim/2``), not interleaved pairs.
* **SwiGLU** feed-forward (Shazeer 2020): ``w2(silu(w1 x) * w3 x)``, three matmuls.
* **Grouped-query attention** (Ainslie et al. 2023): ``kv_heads < heads``; each key/value head
  serves ``heads // kv_heads`` query heads, so the cache holds ``kv_heads`` heads, not
  ``heads``. The keys and values are repeated to the query heads before
  ``scaled_dot_product_attention`` (as Llama's ``repeat_kv``) rather than passing
  ``enable_gqa``: the repeat is a view plus one copy, and the plain call is what torch's FLOP
  counter, ``torch.export`` and the ONNX exporter all know.
* **Untied embeddings**: the output head has its own weight. At a 256-byte vocabulary the
  embedding is 4% of the default model's parameters, so tying would save little, while a weight
  owned by one module keeps the passes that rewrite ``nn.Linear`` layers (pruning, int8
  quantization, export) free of shared-parameter special cases.

Sizes: :class:`TinyLMConfig` holds them; :func:`tinylm` scales one by ``width`` (more or fewer
heads of the same ``head_dim``, and ``ffn_dim`` in proportion) and ``depth`` (layers), so the
search can build smaller students of the same family.

Generation: :meth:`TinyLM.new_cache` allocates a static :class:`KVCache` (every layer's keys
and values, ``[batch, kv_heads, max_tokens, head_dim]``, written in place with ``index_copy_``)
and ``model(new_ids, cache)`` runs the new tokens only. With a cache, attention reads the whole
preallocated buffer under a mask (a key is visible when its position is at most the query's),
so a one-token decode step has the same shapes at every step: that is what ``torch.compile``
needs to compile it once. The price is attention over ``max_tokens`` keys, not the ones filled
so far; size the cache to the generation, not to ``max_seq_len``.

Example:
    >>> model = tinylm(width=0.5)
    >>> ids = torch.randint(0, 256, (2, 16))
    >>> model(ids).shape
    torch.Size([2, 16, 256])
    >>> cache = model.new_cache(2, max_tokens=32)
    >>> logits = model(ids, cache)         # prefill: 16 tokens written, cache.length == 16
    >>> step = model(ids[:, -1:], cache)   # one more token at position 16
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from wattwise.config import Config, register_config
from wattwise.errors import InputError

__all__ = ["KVCache", "TinyLM", "TinyLMConfig", "tinylm"]


def _check_int(owner: str, field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{owner}.{field} must be an int >= {low}, got {value!r}")


@register_config
@dataclasses.dataclass(frozen=True)
class TinyLMConfig(Config):
    """The sizes of a :class:`TinyLM`.

    The defaults are the ``tinylm`` task's model: 0.85 M parameters, 4 layers of 128 wide with
    4 query heads of 32 sharing 2 key/value heads, SwiGLU at 384 (Llama's 8/3 of the width,
    341, rounded up to a multiple of 64).

    Attributes:
        vocab_size: token ids lie in ``[0, vocab_size)``; 256 for raw bytes.
        dim: the residual stream's width; ``heads * head_dim``.
        layers: transformer blocks.
        heads: query heads.
        kv_heads: key/value heads; divides ``heads``.
        ffn_dim: the SwiGLU hidden width.
        max_seq_len: the longest sequence (and cache) the model takes; sizes the RoPE table.
        rope_theta: RoPE's base wavelength (Su et al.; Llama's 10000).
        norm_eps: RMSNorm's epsilon.
    """

    TYPE: ClassVar[str] = "arch.tinylm"

    vocab_size: int = 256
    dim: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn_dim: int = 384
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("vocab_size", "dim", "layers", "heads", "kv_heads", "ffn_dim"):
            _check_int(name, field, getattr(self, field), 1)
        _check_int(name, "max_seq_len", self.max_seq_len, 1)
        if self.dim % self.heads:
            raise InputError(f"{name}.dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise InputError(f"{name}.kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if self.head_dim % 2:
            raise InputError(f"{name}: head_dim (dim / heads = {self.head_dim}) must be even")
        for field in ("rope_theta", "norm_eps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InputError(f"{name}.{field} must be a number > 0, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def scaled(self, width: float = 1.0, depth: float = 1.0) -> TinyLMConfig:
        """This config ``width`` times as wide and ``depth`` times as deep.

        Width changes the number of heads and keeps ``head_dim`` (so attention stays shaped as
        trained, and a pruner removing whole heads lands on these same sizes): ``heads`` becomes
        ``round(heads * width)`` (at least 1), ``kv_heads`` the largest divisor of that not
        above ``round(kv_heads * width)``, ``dim`` ``heads * head_dim``, and ``ffn_dim``
        ``ffn_dim * width`` rounded to a multiple of 8. Depth scales ``layers``, rounded up.

        Raises:
            InputError: ``width`` or ``depth`` is not a number > 0.
        """
        for field, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"TinyLM {field} must be a number > 0, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"TinyLM {field} must be a number > 0, got {value!r}")
        heads = max(1, round(self.heads * width))
        kv_cap = max(1, min(heads, round(self.kv_heads * width)))
        kv_heads = max(d for d in range(1, kv_cap + 1) if heads % d == 0)
        return dataclasses.replace(
            self,
            dim=heads * self.head_dim,
            heads=heads,
            kv_heads=kv_heads,
            ffn_dim=max(8, 8 * round(self.ffn_dim * width / 8)),
            layers=max(1, math.ceil(self.layers * depth)),
        )


@dataclasses.dataclass(eq=False)
class KVCache:
    """Static key/value cache for generation, made by :meth:`TinyLM.new_cache`.

    Attributes:
        keys, values: one tensor per layer, ``[batch, kv_heads, max_tokens, head_dim]``,
            allocated once; positions ``0 .. length-1`` hold the tokens seen so far (keys
            already rotated by their position), the rest is unused.
        length: how many positions are filled; a call ``model(ids, cache)`` writes ``ids`` at
            ``length ..`` and advances it by ``ids.shape[1]``.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @property
    def batch_size(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def max_tokens(self) -> int:
        return int(self.keys[0].shape[2])

    def reset(self) -> None:
        """Forget the tokens (the buffers are kept; their stale entries are masked out)."""
        self.length = 0


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In fp32 even under autocast: the mean of squares is where half precision overflows.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def _rope_table(cfg: TinyLMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position × frequency, ``[max_seq_len, head_dim]`` each."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # "rotate half": pair i with i + half
    return angles.cos().float(), angles.sin().float()


# The cos and sin of the rotary angles of some positions, each ``[T, head_dim]``.
Rope = tuple[torch.Tensor, torch.Tensor]
# One layer's cache as attention uses it: its key and value buffers, the positions the new
# keys and values go to, and which keys each query sees.
LayerCache = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, T, head_dim]`` by the angles of its positions (``[T, head_dim]``)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary positions."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        kv_dim = cfg.kv_heads * cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.v = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, rope: Rope, cached: LayerCache | None = None
    ) -> torch.Tensor:
        """``x`` ``[B, T, dim]``; ``rope``: the cos and sin of the T tokens' absolute positions.

        ``cached``: ``(keys, values, positions, mask)``: this layer's cache buffers, where the
        T new keys and values go, and which keys each query sees (``[T, max_tokens]``).
        """
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        if cached is None:
            out = F.scaled_dot_product_attention(
                q, self._repeat(k), self._repeat(v), is_causal=True
            )
        else:
            keys, values, positions, mask = cached
            # In place into the preallocated buffers: shapes stay fixed from step to step.
            keys.index_copy_(2, positions, k.to(keys.dtype))
            values.index_copy_(2, positions, v.to(values.dtype))
            out = F.scaled_dot_product_attention(
                q, self._repeat(keys).to(q.dtype), self._repeat(values).to(q.dtype), mask
            )
        return self.o(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def _repeat(self, kv: torch.Tensor) -> torch.Tensor:
        """``[B, kv_heads, S, D]`` → ``[B, heads, S, D]``, each kv head serving its group."""
        group = self.heads // self.kv_heads
        if group == 1:
            return kv
        b, h, s, d = kv.shape
        return kv[:, :, None].expand(b, h, group, s, d).reshape(b, h * group, s, d)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)`` (Shazeer 2020, as in Llama)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """One pre-norm transformer block: attention, then SwiGLU, each with a residual."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.dim, cfg.ffn_dim)

    def forward(
        self, x: torch.Tensor, rope: Rope, cached: LayerCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cached)
        return x + self.ffn(self.ffn_norm(x))


class TinyLM(nn.Module):
    """A decoder-only byte transformer: embeddings, :class:`Block` × layers, RMSNorm, head.

    Args:
        cfg: the sizes (default :class:`TinyLMConfig`'s).

    Call ``model(input_ids)`` for logits ``[B, T, vocab_size]`` (causal over the T tokens), or
    ``model(input_ids, cache)`` to run only new tokens against a :class:`KVCache`.
    """

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: TinyLMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = TinyLMConfig() if cfg is None else cfg
        if not isinstance(cfg, TinyLMConfig):
            raise InputError(f"TinyLM takes a TinyLMConfig, got {type(cfg).__name__}")
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = _rope_table(cfg)
        # Not persistent: derived from the config, so state dicts hold weights only.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2's scheme: N(0, 0.02) everywhere, the projections that write into the residual
        # stream scaled down by sqrt(2 * layers) so the stream's variance stays put with depth.
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, Block):
                for proj in (module.attn.o, module.ffn.w2):
                    nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.cfg.layers))

    def new_cache(
        self,
        batch_size: int,
        max_tokens: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty static cache for ``batch_size`` sequences of up to ``max_tokens`` tokens.

        Args:
            batch_size: the rows every call with this cache must have.
            max_tokens: prompt plus generated tokens; at most ``cfg.max_seq_len``.
            device, dtype: of the buffers; default the model's parameters'.

        Raises:
            InputError: a size below 1, or ``max_tokens`` above the model's ``max_seq_len``.
        """
        _check_int("TinyLM.new_cache", "batch_size", batch_size, 1)
        _check_int("TinyLM.new_cache", "max_tokens", max_tokens, 1)
        if max_tokens > self.cfg.max_seq_len:
            raise InputError(
                f"TinyLM.new_cache: max_tokens {max_tokens} is past the model's "
                f"max_seq_len {self.cfg.max_seq_len}"
            )
        weight = self.head.weight
        shape = (batch_size, self.cfg.kv_heads, max_tokens, self.cfg.head_dim)
        kw: dict[str, Any] = {
            "device": weight.device if device is None else device,
            "dtype": weight.dtype if dtype is None else dtype,
        }
        n = len(self.blocks)
        return KVCache(
            keys=[torch.zeros(shape, **kw) for _ in range(n)],
            values=[torch.zeros(shape, **kw) for _ in range(n)],
        )

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab_size]`` for ``input_ids`` ``[B, T]`` (int64).

        Without ``cache``: causal attention over the T tokens, at positions ``0 .. T-1``.
        With ``cache``: the tokens sit at positions ``cache.length .. cache.length + T - 1``,
        attend to every cached token and to themselves causally, are written into the cache,
        and ``cache.length`` advances by T.

        Raises:
            InputError: ``input_ids`` is not ``[B, T]``; T is past ``max_seq_len``; or the
                cache's batch differs, or it has no room for T more tokens.
        """
        if input_ids.dim() != 2:
            raise InputError(f"TinyLM takes input_ids [batch, tokens], got {list(input_ids.shape)}")
        b, t = input_ids.shape
        start = 0 if cache is None else cache.length
        if cache is not None:
            self._check_cache(cache, b, t)
        elif t > self.cfg.max_seq_len:
            raise InputError(f"TinyLM: {t} tokens are past max_seq_len {self.cfg.max_seq_len}")
        positions = torch.arange(start, start + t, device=input_ids.device)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        x = self.embed(input_ids)
        if cache is None:
            for block in self.blocks:
                x = block(x, (cos, sin))
        else:
            keys = torch.arange(cache.max_tokens, device=input_ids.device)
            mask = keys[None, :] <= positions[:, None]  # [T, max_tokens]: True = visible
            for block, k, v in zip(self.blocks, cache.keys, cache.values, strict=True):
                x = block(x, (cos, sin), (k, v, positions, mask))
            cache.length = start + t
        return self.head(self.norm(x))

    def _check_cache(self, cache: KVCache, batch: int, tokens: int) -> None:
        if not isinstance(cache, KVCache) or len(cache.keys) != len(self.blocks):
            raise InputError("TinyLM: cache must be a KVCache from this model's new_cache")
        if cache.batch_size != batch:
            raise InputError(f"TinyLM: cache holds batch {cache.batch_size}, input has {batch}")
        if cache.length + tokens > cache.max_tokens:
            raise InputError(
                f"TinyLM: {tokens} more tokens overflow the cache "
                f"({cache.length} of {cache.max_tokens} used)"
            )


def tinylm(width: float = 1.0, depth: float = 1.0, **fields: Any) -> TinyLM:
    """Build a :class:`TinyLM` at ``width`` and ``depth`` times a config's size.

    Args:
        width: multiplies the heads (``head_dim`` kept), hence ``dim``, and ``ffn_dim``.
        depth: multiplies the layers (rounded up).
        **fields: :class:`TinyLMConfig` fields of the base config, before scaling
            (``max_seq_len=512``, ``layers=6``, ...).

    Raises:
        InputError: an unknown field or a bad value (the message names it).

    Example:
        >>> sum(p.numel() for p in tinylm(width=0.5).parameters()) < 400_000
        True
    """
    known = {f.name for f in dataclasses.fields(TinyLMConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(
            f"tinylm: unknown argument(s) {', '.join(unknown)}; known: width, depth, "
            f"{', '.join(sorted(known))}"
        )
    return TinyLM(TinyLMConfig(**fields).scaled(width, depth))
