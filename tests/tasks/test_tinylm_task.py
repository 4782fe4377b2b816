"""The ``tinylm`` task: its byte windows, the split, the metrics, the recipe's plumbing.

No test trains to convergence: the one-epoch recipe takes minutes (its measured result is in
``docs/architectures.md``); here a few ``Task.fit`` steps on a handful of windows show the
task's own loss falls.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import wattwise as ww
from wattwise.archs.tinylm import TinyLM
from wattwise.errors import InputError
from wattwise.tasks import get, names
from wattwise.tasks.tinylm import (
    HELD_OUT_SHARE,
    WINDOW,
    ByteWindows,
    byte_corpus,
    next_token_accuracy,
    next_token_loss,
    perplexity,
    tinylm_task,
    unigram_baseline,
)

# Small inputs gain nothing from a second thread (tests/conftest.py: one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task() -> ww.tasks.Task:
    return tinylm_task(seed=0)


def _paragraphs(text: bytes) -> set[bytes]:
    return {p.strip() for p in text.split(b"\n\n") if p.strip()}


def test_registered_and_built_by_name() -> None:
    assert "tinylm" in names()
    built = get("tinylm")
    assert built.name == "tinylm"
    assert built.metric is next_token_accuracy and built.loss_fn is next_token_loss


def test_items_are_int64_windows_and_their_next_bytes(task: ww.tasks.Task) -> None:
    for data in (task.train_data, task.val_data):
        x, y = data[3]
        assert x.shape == y.shape == (WINDOW,)
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[1:], y[:-1])  # next_ids is the input one byte on
        assert int(x.min()) >= 0 and int(x.max()) < 256
        assert torch.equal(data[4][0][0], y[-1])  # windows tile the text without gaps
    xb, yb = next(iter(task.train_loader(batch_size=5)))
    assert xb.shape == yb.shape == (5, WINDOW)
    example = task.example_input
    assert example.shape == (1, WINDOW) and example.dtype == torch.int64
    assert torch.equal(example[0], task.train_data[0][0])  # a real window, not zeros


def test_windows_leave_out_the_tail_and_refuse_short_text() -> None:
    data = ByteWindows(bytes(range(20)), window=6)
    assert len(data) == 3  # 19 targets fill three windows of 6; the last byte is no input
    assert data[-1][1].tolist() == [13, 14, 15, 16, 17, 18]
    assert data.targets().tolist() == list(range(1, 19))
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(InputError, match="fill no window"):
        ByteWindows(b"abc", window=3)


def test_split_is_by_topic_deterministic_and_shares_no_paragraph() -> None:
    a, b = byte_corpus.__wrapped__(0), byte_corpus.__wrapped__(0)  # uncached: built afresh
    assert a == b
    assert not set(a.train_topics) & set(a.held_out_topics)
    share = len(a.held_out) / (len(a.train) + len(a.held_out))
    assert 0.8 * HELD_OUT_SHARE < share <= HELD_OUT_SHARE + 0.01
    assert not _paragraphs(a.train) & _paragraphs(a.held_out)
    other = byte_corpus(1)
    assert other.held_out_topics != a.held_out_topics
    assert set(other.train_topics) | set(other.held_out_topics) == set(a.train_topics) | set(
        a.held_out_topics
    )
    with pytest.raises(InputError, match="seed must be an int >= 0"):
        tinylm_task(seed=-1)


class _Oracle(nn.Module):
    """Looks each window up in a table of the true next bytes: a model that is always right."""

    def __init__(self, data: ByteWindows) -> None:
        super().__init__()
        self.table = {tuple(x.tolist()): y for x, y in data}  # type: ignore[attr-defined]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        targets = torch.stack([self.table[tuple(row.tolist())] for row in input_ids])
        return nn.functional.one_hot(targets, 256).float() * 50.0


class _Constant(nn.Module):
    """Always the same distribution over the next byte, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*input_ids.shape, 256)


def test_metrics_on_models_whose_scores_are_known(task: ww.tasks.Task) -> None:
    val = task.val_data
    assert isinstance(val, ByteWindows)
    loader = task.val_loader()
    assert task.evaluate(_Oracle(val)) == 1.0
    assert perplexity(_Oracle(val), loader) == pytest.approx(1.0)
    assert perplexity(_Constant(torch.zeros(256)), loader) == pytest.approx(256.0)
    # Guessing the commonest training byte is the unigram baseline, to the last position.
    train = task.train_data
    assert isinstance(train, ByteWindows)
    baseline = unigram_baseline(train, val)
    common = torch.zeros(256)
    common[int(torch.bincount(train.targets()).argmax())] = 1.0
    assert next_token_accuracy(_Constant(common), loader) == pytest.approx(baseline.accuracy)
    assert 0.1 < baseline.accuracy < 0.3 and 10 < baseline.perplexity < 40


def test_the_metric_refuses_logits_of_the_wrong_shape(task: ww.tasks.Task) -> None:
    class Pooled(nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(input_ids.shape[0], 256)

    with pytest.raises(InputError, match="expected"):
        task.evaluate(Pooled())


def test_factory_takes_width_and_depth_and_is_seeded(task: ww.tasks.Task) -> None:
    params = inspect.signature(task.model_factory).parameters
    assert params["width"].default == 1.0 and params["depth"].default == 1.0
    full = task.model_factory()
    small = task.model_factory(width=0.5, depth=0.5)  # type: ignore[call-arg]
    assert isinstance(full, TinyLM) and isinstance(small, TinyLM)
    assert small.cfg.layers == full.cfg.layers // 2 and small.cfg.dim == full.cfg.dim // 2
    again = task.model_factory()
    for a, b in zip(full.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_fit_with_the_tasks_loss_lowers_it(task: ww.tasks.Task) -> None:
    few = Subset(task.train_data, range(16))
    short = dataclasses.replace(task, train_data=few, epochs=6, batch_size=8)
    model = short.model_factory(width=0.5, depth=0.25)  # type: ignore[call-arg]
    loader = DataLoader(few, batch_size=16)
    before = 1 / perplexity(model, loader)
    short.fit(model)  # 12 Adam steps at the task's learning rate
    assert not model.training
    assert 1 / perplexity(model, loader) > before * 1.5


def test_measure_runs_on_the_example_window(task: ww.tasks.Task) -> None:
    model = task.model_factory(width=0.5)  # type: ignore[call-arg]
    m = ww.measure(model, task.example_input, isolate=False, max_time_s=0.3, min_window_s=0.1)
    assert m.latency_ms_p90 > 0
    assert m.tokens_per_item == WINDOW
    assert m.macs_per_item > 0
