"""English sentences from CPython's own help topics, labelled by the topic they come from.

``pydoc_data.topics`` ships with every CPython (it is what ``help("for")`` prints): a dict of
~80 topic names to reStructuredText rendered as plain text. It is the one real, sizeable,
English, licence-clean text that every machine running wattwise already has, so the text tasks
(``minilm-topics``, ``minilm-embed``) need no download.

The text is cleaned into sentences: headings, tables, grammar rules (``::=``), interactive
sessions (``>>>``) and code comments are dropped line by line; the remaining paragraphs are
joined and split at sentence ends; a sentence is kept if it starts with a capital, ends with a
full stop, has 6–40 words and is mostly letters (code and tables are not). A sentence found in
two topics (the same paragraph is printed under ``specialnames`` and ``customization``) says
nothing about either and is dropped everywhere. The :data:`N_TOPICS` topics with the most
sentences left are the classes, each with at most :data:`MAX_PER_TOPIC` sentences spread evenly
over the topic's text, and each topic is split 80/20 into training and held-out sentences by a
seeded shuffle.

The help text changes between Python releases, so the corpus does too: it is deterministic for
one interpreter, not across them. Building it takes ~50 ms and imports no torch.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import random
import re

from wattwise.errors import InputError

__all__ = ["MAX_PER_TOPIC", "N_TOPICS", "TopicsCorpus", "topic_sentences", "topics_corpus"]

N_TOPICS = 8
MAX_PER_TOPIC = 60
HELD_OUT_SHARE = 0.2
# 6 words: shorter "sentences" are mostly fragments ("Changed in version 3.3."); 40 words keeps
# every sentence well under the model's 256-token limit and the batches short.
MIN_WORDS, MAX_WORDS = 6, 40
# Share of letters and spaces a kept sentence needs; prose is ~0.95, a code line ~0.6-0.8.
MIN_ALPHA_SHARE = 0.85

# A heading's underline (or overline): one punctuation character repeated.
_UNDERLINE = re.compile(r"^\s*([*=\-~^+#\"'`])\1{2,}\s*$")
# A sentence ends at . ! or ? followed by space and a capital (or an opening quote/bracket);
# "e.g., the" and "i.e. a" are not split because a lowercase word follows.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
# Line starts that mark code, a shell session, a comment or a table row, not prose.
_CODE_STARTS = (">>>", "...", "#", "$", "|", "+-", "+=")


@dataclasses.dataclass(frozen=True)
class TopicsCorpus:
    """Labelled sentences, split into training and held-out sets.

    Attributes:
        topics: the class names (help topics), label ``i`` is ``topics[i]``.
        train_texts, train_labels: the training sentences and their labels.
        held_out_texts, held_out_labels: the held-out sentences and their labels (every topic
            holds out the same share, so both sets keep the class balance).
        seed: the seed of the split.
    """

    topics: tuple[str, ...]
    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    held_out_texts: tuple[str, ...]
    held_out_labels: tuple[int, ...]
    seed: int

    def __post_init__(self) -> None:
        if not self.topics:
            raise InputError("TopicsCorpus.topics must not be empty")
        for texts, labels in (
            ("train_texts", "train_labels"),
            ("held_out_texts", "held_out_labels"),
        ):
            n_texts, n_labels = len(getattr(self, texts)), len(getattr(self, labels))
            if n_texts != n_labels or n_texts == 0:
                raise InputError(
                    f"TopicsCorpus.{texts} and {labels} must be non-empty and of one length, "
                    f"got {n_texts} and {n_labels}"
                )
            bad = [y for y in getattr(self, labels) if not 0 <= y < len(self.topics)]
            if bad:
                raise InputError(f"TopicsCorpus.{labels} holds {bad[0]!r}, not a topic index")


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(_CODE_STARTS) or "::=" in stripped or "|" in stripped


def _paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a topic, each joined into one line."""
    lines = text.splitlines()
    paragraphs: list[str] = []
    current: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        # A blank line, a heading or its underline, or code ends the paragraph being read.
        if (
            not line.strip()
            or _UNDERLINE.match(line)
            or _UNDERLINE.match(following)
            or _is_code(line)
        ):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _is_sentence(text: str) -> bool:
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return False
    if not (text[0].isupper() and text.endswith(".")):
        return False
    alpha = sum(c.isalpha() or c == " " for c in text)
    return alpha / len(text) >= MIN_ALPHA_SHARE


def sentences_of(text: str) -> list[str]:
    """The clean sentences of one help topic's text, in order, without repeats."""
    found = (
        sentence.strip()
        for paragraph in _paragraphs(text)
        for sentence in _SENTENCE_END.split(paragraph)
    )
    return list(dict.fromkeys(s for s in found if s and _is_sentence(s)))


@functools.cache
def topic_sentences() -> dict[str, tuple[str, ...]]:
    """Every help topic's clean sentences, less those found in two topics.

    Returns:
        topic name → its sentences in text order (topics left with none are omitted).
    """
    from pydoc_data.topics import topics  # ~0.5 MB of text: read on first use only

    per_topic = {name: sentences_of(text) for name, text in topics.items()}
    seen = collections.Counter(s for found in per_topic.values() for s in found)
    kept = {name: tuple(s for s in found if seen[s] == 1) for name, found in per_topic.items()}
    return {name: found for name, found in kept.items() if found}


def _spread(items: tuple[str, ...], n: int) -> list[str]:
    """At most ``n`` of ``items``, evenly spaced, so a capped topic still covers all its text."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def topics_corpus(
    seed: int = 0, *, n_topics: int = N_TOPICS, max_per_topic: int = MAX_PER_TOPIC
) -> TopicsCorpus:
    """The labelled help-topic sentences with a stratified train/held-out split.

    Args:
        seed: seeds the split (the sentences and topics do not depend on it).
        n_topics: how many topics (classes): those with the most sentences, ties by name.
        max_per_topic: the cap on sentences per topic, so the classes stay balanced.

    Returns:
        A :class:`TopicsCorpus`; with the defaults, 8 topics × 60 sentences, 48 training and
        12 held-out per topic (on CPython 3.11).

    Raises:
        InputError: a non-integer or out-of-range argument, or fewer than ``n_topics`` topics
            with enough sentences for a split.

    Example:
        >>> corpus = topics_corpus(seed=0)
        >>> len(corpus.topics), len(corpus.held_out_texts)
        (8, 96)
    """
    for name, value, low in (
        ("seed", seed, 0),
        ("n_topics", n_topics, 2),
        ("max_per_topic", max_per_topic, 5),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"topics_corpus: {name} must be an int >= {low}, got {value!r}")
    found = topic_sentences()
    ranked = sorted(found, key=lambda name: (-len(found[name]), name))
    # A topic needs 5 sentences for an 80/20 split to hold out at least one.
    chosen = [name for name in ranked if len(found[name]) >= 5][:n_topics]
    if len(chosen) < n_topics:
        raise InputError(f"topics_corpus: only {len(chosen)} topics have 5 sentences or more")
    train: list[tuple[str, int]] = []
    held_out: list[tuple[str, int]] = []
    # random.Random, not torch: the same stream on every platform, and no torch to import.
    rng = random.Random(seed)
    for label, name in enumerate(chosen):
        picked = _spread(found[name], max_per_topic)
        rng.shuffle(picked)
        n_held = max(1, round(HELD_OUT_SHARE * len(picked)))
        held_out += [(s, label) for s in picked[:n_held]]
        train += [(s, label) for s in picked[n_held:]]
    return TopicsCorpus(
        topics=tuple(chosen),
        train_texts=tuple(s for s, _ in train),
        train_labels=tuple(y for _, y in train),
        held_out_texts=tuple(s for s, _ in held_out),
        held_out_labels=tuple(y for _, y in held_out),
        seed=seed,
    )
