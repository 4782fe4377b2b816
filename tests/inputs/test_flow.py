"""Dict and token inputs flow through the harness, the MAC counter, Task and the passes as
they are: int64 ids stay ids, masks keep their padding, and what cannot take them yet says so
in one line."""

from __future__ import annotations

from typing import TypedDict

import pytest
import stranger_models as sm
import torch
from torch import nn

import wattwise as ww
from wattwise.errors import InputError
from wattwise.measure._macs import count_macs


class _Fast(TypedDict):
    """``measure``'s keywords for a short measurement, typed so that ``**FAST`` type-checks."""

    min_window_s: float
    max_time_s: float
    warmup_max_s: float


FAST: _Fast = {"min_window_s": 0.05, "max_time_s": 0.3, "warmup_max_s": 0.2}


def text_macs(seq: int) -> int:
    """MACs of the stranger's text classifier on ``seq`` positions, by hand: per layer the
    packed q/k/v projection, scores and weighted values over every position (padding is masked,
    not skipped), the output projection and the two feed-forward layers; then the head."""
    d, ff = sm.D_MODEL, sm.FF
    per_layer = seq * d * 3 * d + 2 * seq * seq * d + seq * d * d + 2 * seq * d * ff
    return sm.LAYERS * per_layer + d * sm.CLASSES


def test_macs_of_a_dict_input_model_match_the_hand_count() -> None:
    model = sm.factory()
    assert count_macs(model, model.example_input) == text_macs(sm.SEQ) == 378_976


class SeesRows(nn.Module):
    """Fails unless the batch holds both example rows: the harness must not repeat row 0."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        assert input_ids.dtype == torch.int64
        assert {tuple(r) for r in input_ids.tolist()} == {(1, 2, 3), (4, 5, 0)}
        return self.embed(input_ids).sum(1) * attention_mask.sum(1, keepdim=True)


def test_the_harness_measures_real_rows_of_a_dict_input() -> None:
    x = {
        "input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }
    m = ww.measure(SeesRows(), x, batch_size=4, isolate=False, **FAST)
    assert m.tokens_per_item == 2.5  # 3 and 2 real tokens, each twice
    assert m.energy_j_per_token == pytest.approx(m.energy_j_per_item / 2.5)
    assert m.throughput_tokens_per_s == pytest.approx(m.throughput_items_per_s * 2.5)


def test_a_transformer_with_a_dict_input_measures_in_a_child_with_its_macs() -> None:
    model = sm.factory()
    m = ww.measure(sm.factory, model.example_input, batch_size=2, **FAST)
    assert m.macs_per_item == text_macs(sm.SEQ)
    assert m.tokens_per_item == sm.REAL_TOKENS
    assert m.energy_source.startswith(("measured:", "estimated:"))
    d = m.to_dict()
    assert d["tokens_per_item"] == sm.REAL_TOKENS and d["energy_j_per_token"] > 0
    assert ww.measure.__module__  # the callable module still imports


def test_image_inputs_have_no_tokens() -> None:
    m = ww.measure(nn.Linear(4, 2), torch.randn(1, 4), isolate=False, **FAST)
    assert m.tokens_per_item is None and m.energy_j_per_token is None
    assert m.to_dict()["throughput_tokens_per_s"] is None


def test_train_mode_scores_the_logits_of_a_dict_input_model() -> None:
    model = sm.factory()
    m = ww.measure(
        model, model.example_input, mode="train", target=torch.tensor([2]), isolate=False, **FAST
    )
    assert m.mode == "train" and m.macs_per_item > text_macs(sm.SEQ)  # backward counts too


def test_a_bad_part_of_a_dict_input_is_named_before_any_child_starts() -> None:
    ids = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(InputError, match=r"example_input\['attention_mask'\] must be a tensor"):
        ww.measure(sm.factory, {"input_ids": ids, "attention_mask": [1, 1, 1, 1, 1]})


@pytest.fixture(scope="module")
def text_task():
    return sm.text_task()


def test_a_text_task_pads_batches_trains_and_scores_through_dicts(text_task) -> None:
    x, _ = next(iter(text_task.val_loader(batch_size=8)))
    assert set(x) == {"input_ids", "attention_mask"} and x["input_ids"].dtype == torch.int64
    assert x["input_ids"].shape[1] == int(x["attention_mask"].sum(1).max())  # padded to longest
    calib = text_task.calibration_batches(n_items=40, batch_size=16)
    assert len(calib) == 3 and all(isinstance(b, dict) for b in calib)
    model = text_task.fit(text_task.model_factory())
    assert text_task.evaluate(model) > 0.5  # three classes: chance is a third


def test_task_example_inputs_are_checked_and_cut_to_one_row(text_task) -> None:
    import dataclasses

    two = sm.pad_batch([text_task.train_data[0], text_task.train_data[1]])[0]
    task = dataclasses.replace(text_task, example_input=two)
    assert task.example_input["input_ids"].shape[0] == 1
    with pytest.raises(InputError, match=r"Task.example_input\['input_ids'\] must be a tensor"):
        dataclasses.replace(text_task, example_input={"input_ids": [1, 2]})


def test_compress_passes_take_dict_inputs_or_say_why_not(text_task) -> None:
    model = sm.factory()
    _, log = ww.compress(model, [ww.Quantize("dynamic-int8")], task=text_task)
    # The task's example sentence, not the model's own 20 positions: 7 tokens, no padding.
    length = text_task.example_input["input_ids"].shape[1]
    assert length == 7 and log.initial.macs == text_macs(length) == 121_056
    assert 0 <= log.final.accuracy <= 1
    with pytest.raises(
        InputError, match="one tensor input for now; this task's input is input_ids"
    ):
        ww.compress(model, [ww.Quantize("pt2e-int8")], task=text_task)
    with pytest.raises(InputError, match=r"Distill\.feature_layers takes models with one tensor"):
        ww.compress(
            model,
            [ww.Distill(teacher=model, feature_layers=("encoder",), epochs=1)],
            task=text_task,
        )


def test_distilling_logits_of_a_dict_input_model_trains(text_task) -> None:
    model = sm.factory()
    student, log = ww.compress(model, [ww.Distill(teacher=model, epochs=1)], task=text_task)
    method = log.records[0].method
    assert method is not None and method.endswith("teacher=module")
    assert isinstance(student(**text_task.example_input), torch.Tensor)
