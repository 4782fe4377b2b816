"""The built-in ``tinylm`` task: a byte-level language model on CPython's help text, no download.

The text is ``pydoc_data.topics`` (what ``help("for")`` prints; every CPython ships it, see
:mod:`wattwise.tasks._topics_corpus`), read whole here rather than cut into clean sentences: a
language model learns from the code, the tables and the indentation too. Tokens are its UTF-8
bytes (vocabulary 256: no tokenizer to install or version).

* **Split**: by topic, so the held-out text is about things the model never read. The help
  repeats itself (``compound`` prints the paragraphs of ``if``, ``try`` and ``function``;
  ``specialnames`` those of ``customization``: 80 KB in all), so every paragraph is kept once,
  under the first topic by name that prints it, and no held-out paragraph is seen in training.
  Then the topics are shuffled with the seed and taken into the held-out set while they fit
  in :data:`HELD_OUT_SHARE` of the bytes.
* **Items**: non-overlapping windows of :data:`WINDOW` bytes, ``(input_ids[T], next_ids[T])``
  with ``next_ids`` the input shifted by one byte, both int64.
* **Model**: :func:`wattwise.archs.tinylm.tinylm` (a Llama-style decoder, 0.85 M parameters);
  the factory takes ``width`` and ``depth`` so the search can build smaller students.
* **Metric**: :func:`next_token_accuracy` over every position of the held-out windows (higher
  is better); :func:`perplexity` is the other figure a language model is judged by, and
  :func:`unigram_baseline` what a model that knows only byte frequencies scores.

The text changes between Python releases, so the corpus does too: deterministic for one
interpreter, not across them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from wattwise._inputs import call, primary_tensor
from wattwise.archs.tinylm import TinyLM, tinylm
from wattwise.errors import InputError
from wattwise.measure._generate import GenerateSpec
from wattwise.tasks._task import Task

__all__ = [
    "HELD_OUT_SHARE",
    "WINDOW",
    "ByteCorpus",
    "ByteWindows",
    "UnigramBaseline",
    "byte_corpus",
    "next_token_accuracy",
    "next_token_loss",
    "perplexity",
    "tinylm_task",
    "unigram_baseline",
]

WINDOW = 128
HELD_OUT_SHARE = 0.1
# The recipe, through Task.fit (Adam, cosine over epochs): measured in tinylm_task's docstring.
# Batches of 16 beat 32 for the same bytes read (0.339 against 0.309 after one epoch): in a
# run this short, updates are what is scarce. 6e-3 did worse than 3e-3 (0.301 after one epoch).
EPOCHS = 3
LR = 3e-3
BATCH_SIZE = 16
# What the search measures one response as: half a training window of prompt, then as many
# new bytes, so every position stays inside the 128 the model was trained on.
GENERATE = GenerateSpec(prompt_tokens=64, new_tokens=64)


@dataclasses.dataclass(frozen=True)
class ByteCorpus:
    """The help text as bytes, split by topic.

    Attributes:
        train, held_out: each split's topics' text, every paragraph once, as UTF-8 bytes.
        train_topics, held_out_topics: the topic names in each split, in the order joined.
        seed: the seed of the split.
    """

    train: bytes
    held_out: bytes
    train_topics: tuple[str, ...]
    held_out_topics: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        for field in ("train", "held_out"):
            if len(getattr(self, field)) <= WINDOW:
                raise InputError(f"ByteCorpus.{field} must hold more than {WINDOW} bytes")
        if set(self.train_topics) & set(self.held_out_topics):
            raise InputError("ByteCorpus: a topic is in both splits")


def _check_seed(where: str, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{where}: seed must be an int >= 0, got {seed!r}")


def _help_topics() -> dict[str, str]:
    from pydoc_data.topics import topics  # ~0.5 MB of text: read on first use only

    return dict(topics)


def _unique_paragraphs(text: str, seen: set[str]) -> str:
    """``text`` less every paragraph already in ``seen`` (which this adds to).

    Paragraphs compare without their surrounding whitespace: the same one recurs after one
    blank line in a topic and two in another.
    """
    kept: list[str] = []
    for paragraph in text.split("\n\n"):
        key = paragraph.strip()
        if key and key not in seen:
            seen.add(key)
            kept.append(paragraph)
    return "\n\n".join(kept)


@functools.cache
def byte_corpus(seed: int = 0) -> ByteCorpus:
    """The help text split by topic into training and held-out bytes.

    Args:
        seed: seeds which topics are held out.

    Returns:
        A :class:`ByteCorpus`; at seed 0 on CPython 3.11, 336,740 bytes of training and 37,411 of
        held-out text.

    Example:
        >>> corpus = byte_corpus(0)
        >>> len(corpus.held_out) < len(corpus.train) // 5
        True
    """
    _check_seed("byte_corpus", seed)
    # Each paragraph once, credited to the first topic (by name) that prints it; then no
    # paragraph can be on both sides of the split, whichever topics the seed holds out.
    seen: set[str] = set()
    texts = {name: _unique_paragraphs(text, seen) for name, text in sorted(_help_topics().items())}
    sizes = {name: len(text.encode()) for name, text in texts.items() if text}
    names = sorted(sizes)
    # random.Random, not torch: the same stream on every platform.
    random.Random(seed).shuffle(names)
    budget = HELD_OUT_SHARE * sum(sizes.values())
    held: list[str] = []
    used = 0
    for name in names:
        if used + sizes[name] <= budget:
            held.append(name)
            used += sizes[name]
    train = sorted(set(names) - set(held))
    held.sort()
    train_text = "\n\n".join(texts[n] for n in train)
    held_text = "\n\n".join(texts[n] for n in held)
    return ByteCorpus(
        train=train_text.encode(),
        held_out=held_text.encode(),
        train_topics=tuple(train),
        held_out_topics=tuple(held),
        seed=seed,
    )


class ByteWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Non-overlapping windows of a byte string: item ``i`` is ``(input_ids, next_ids)``.

    ``input_ids`` is ``data[i*window : (i+1)*window]`` and ``next_ids`` the same window one
    byte later, both int64 of length ``window``; the tail that fills no window is left out.

    Raises:
        InputError: ``data`` is shorter than one window plus one byte.
    """

    def __init__(self, data: bytes, window: int = WINDOW) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InputError(f"ByteWindows: window must be an int >= 1, got {window!r}")
        if len(data) < window + 1:
            raise InputError(f"ByteWindows: {len(data)} bytes fill no window of {window}")
        self.window = window
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def __len__(self) -> int:
        return (len(self.data) - 1) // self.window

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        start = (index % len(self)) * self.window
        chunk = self.data[start : start + self.window + 1].long()
        return chunk[:-1], chunk[1:]

    def targets(self) -> torch.Tensor:
        """Every ``next_ids`` of every window, in order (1-D int64)."""
        return self.data[1 : len(self) * self.window + 1].long()


def next_token_loss(logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: ``logits`` ``[B, T, V]``, ``next_ids`` ``[B, T]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), next_ids.reshape(-1))


@torch.no_grad()
def _sum_over(model: nn.Module, loader: DataLoader) -> tuple[int, float, int]:
    """Correct argmax predictions, summed cross-entropy (nats) and positions, over ``loader``."""
    was_training = model.training
    model.eval()
    correct, nats, total = 0, 0.0, 0
    try:
        for x, y in loader:
            logits = primary_tensor(call(model, x)).float()
            if logits.shape[:-1] != y.shape:
                raise InputError(
                    f"the model's logits are {list(logits.shape)}, expected "
                    f"{[*y.shape, 'vocab']} for next-token prediction"
                )
            correct += int((logits.argmax(dim=-1) == y).sum())
            flat = logits.reshape(-1, logits.shape[-1])
            # Summed in float64: 40 000 positions of ~5 nats lose digits in a float32 sum.
            nats += float(F.cross_entropy(flat, y.reshape(-1), reduction="none").double().sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise InputError("the validation data is empty")
    return correct, nats, total


def next_token_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Share, in [0, 1], of positions whose most likely next byte is the true one.

    Args:
        model: ``model(input_ids [B, T]) -> logits [B, T, vocab]``.
        loader: batches of ``(input_ids, next_ids)``, both ``[B, T]``.
    """
    correct, _, total = _sum_over(model, loader)
    return correct / total


def perplexity(model: nn.Module, loader: DataLoader) -> float:
    """``exp`` of the mean cross-entropy per byte (nats) over ``loader``; lower is better, 256
    is a uniform guess. Same arguments as :func:`next_token_accuracy`."""
    _, nats, total = _sum_over(model, loader)
    return math.exp(nats / total)


class UnigramBaseline(NamedTuple):
    """What byte frequencies alone score on the held-out windows."""

    accuracy: float  # always guessing the training text's most common byte
    perplexity: float  # the training byte frequencies (add-one smoothed) as the prediction


def unigram_baseline(train: ByteWindows, held_out: ByteWindows) -> UnigramBaseline:
    """The bar a language model must clear: the held-out scores of byte frequencies."""
    counts = torch.bincount(train.targets(), minlength=256).double() + 1.0
    log_p = (counts / counts.sum()).log()
    targets = held_out.targets()
    top = int(counts.argmax())
    return UnigramBaseline(
        accuracy=float((targets == top).double().mean()),
        perplexity=math.exp(-float(log_p[targets].mean())),
    )


def _seeded_model(width: float = 1.0, depth: float = 1.0, *, seed: int = 0) -> TinyLM:
    # The initialisation is the one random part of building; seed it so a baseline repeats.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tinylm(width=width, depth=depth)


def tinylm_task(seed: int = 0) -> Task:
    """A byte-level TinyLM trained to predict the next byte of CPython's help text.

    The recipe (:data:`EPOCHS`, :data:`LR`, :data:`BATCH_SIZE`): ``Task.fit``'s Adam at 3e-3
    with its per-epoch cosine, 3 epochs of batches of 16 windows (494 steps). Measured on the
    2-core development VM (load ~3, one torch thread), seed 0, CPython 3.11: 122 s of training
    to a held-out next-byte accuracy of 0.494 and perplexity 6.48, against 0.179 and 25.7 for
    byte frequencies alone (:func:`unigram_baseline`). ``docs/architectures.md`` has more.

    Args:
        seed: seeds the split, the initialisation and the training order.

    Returns:
        A :class:`Task` named ``"tinylm"``: items ``(input_ids[128], next_ids[128])``, the
        metric :func:`next_token_accuracy`, the loss :func:`next_token_loss`, and a
        ``model_factory(width=1.0, depth=1.0)``; ``generate`` is :data:`GENERATE`, so the
        search measures generation (prefill and decode J/token) and keeps the KV cache.
    """
    _check_seed("tinylm_task", seed)
    corpus = byte_corpus(seed)
    train = ByteWindows(corpus.train)
    held_out = ByteWindows(corpus.held_out)
    return Task(
        name="tinylm",
        model_factory=functools.partial(_seeded_model, seed=seed),
        train_data=train,
        val_data=held_out,
        example_input=train[0][0].unsqueeze(0),
        metric=next_token_accuracy,
        loss_fn=next_token_loss,
        epochs=EPOCHS,
        lr=LR,
        batch_size=BATCH_SIZE,
        seed=seed,
        generate=GENERATE,
    )
