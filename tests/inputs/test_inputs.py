"""wattwise._inputs: one calling convention and one set of helpers for tensor, tuple and dict
inputs, with dtypes and values kept."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from wattwise._inputs import (
    batch_size_of,
    call,
    check_input,
    describe,
    detach_cpu,
    is_token_input,
    primary_tensor,
    take_rows,
    to_device,
    tokens_per_item,
)
from wattwise.errors import InputError


def _text(rows: int = 2) -> dict[str, torch.Tensor]:
    ids = torch.arange(1, 1 + rows * 5).reshape(rows, 5)
    mask = torch.ones(rows, 5, dtype=torch.long)
    mask[1:, 3:] = 0  # the second sentence has 3 real tokens, then padding
    return {"input_ids": ids, "attention_mask": mask}


class Keywords(nn.Module):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return input_ids * attention_mask


class Positional(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


def test_call_passes_a_tensor_whole_a_tuple_by_position_and_a_dict_by_name() -> None:
    x = _text()
    assert torch.equal(call(Keywords(), x), x["input_ids"] * x["attention_mask"])
    a, b = torch.ones(1, 2), torch.full((1, 2), 3.0)
    assert torch.equal(call(Positional(), (a, b)), a - b)
    assert torch.equal(call(Positional(), [b, a]), b - a)  # a list is positional too
    assert torch.equal(call(nn.Identity(), a), a)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"input_ids": torch.zeros(1, 3), "attention_mask": [1, 1, 1]},
            "example_input['attention_mask'] must be a tensor, got list",
        ),
        ((torch.zeros(1, 2), torch.tensor(3.0)), "example_input[1] needs a batch dimension"),
        ({"a": torch.zeros(1, 2), "b": torch.zeros(2, 2)}, "disagree on the batch size"),
        ({"not a name": torch.zeros(1)}, "keys must be argument names"),
        ({}, "empty dict"),
        ((), "empty tuple"),
        ("1,3,8,8", "must be a tensor, a tuple of tensors or a dict of named tensors"),
        (torch.zeros(0, 3), "example_input needs a batch dimension, got shape (0, 3)"),
    ],
)
def test_check_input_names_the_bad_part_on_one_line(bad: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        check_input(bad, "example_input")
    text = str(info.value)
    assert message in text and "\n" not in text


def test_take_rows_cycles_through_the_real_rows_and_keeps_dtypes() -> None:
    x = _text(rows=2)
    batch = take_rows(x, 5)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (5, 5)
    # Rows 0, 1, 0, 1, 0: both sentences, not the first one five times.
    assert torch.equal(batch["input_ids"][1], x["input_ids"][1])
    assert torch.equal(batch["input_ids"][4], x["input_ids"][0])
    assert torch.equal(batch["attention_mask"][3], x["attention_mask"][1])
    pair = take_rows((torch.zeros(3, 2), torch.arange(3)), 4)
    assert isinstance(pair, tuple) and pair[1].tolist() == [0, 1, 2, 0]
    with pytest.raises(InputError, match="at least one row"):
        take_rows(x, 0)


def test_device_and_detach_keep_the_form() -> None:
    grad = torch.ones(1, 3, requires_grad=True) * 2
    moved = detach_cpu([grad, torch.zeros(1, dtype=torch.long)])
    assert isinstance(moved, tuple) and not moved[0].requires_grad
    again = to_device(_text(), "cpu")
    assert isinstance(again, dict) and again["input_ids"].dtype == torch.int64
    assert batch_size_of(_text(rows=3)) == 3 and batch_size_of(torch.zeros(7, 1)) == 7


def test_describe_gives_names_shapes_and_dtypes() -> None:
    ids = torch.zeros(1, 20, dtype=torch.long)
    assert describe({"input_ids": ids, "attention_mask": ids}) == (
        "input_ids (1, 20) int64, attention_mask (1, 20) int64"
    )
    assert describe(torch.zeros(1, 3, 8, 8)) == "(1, 3, 8, 8) float32"
    assert describe((torch.zeros(1, 4), ids)) == "(1, 4) float32, (1, 20) int64"


def test_primary_tensor_finds_the_scored_output() -> None:
    logits, hidden = torch.randn(2, 3), torch.randn(2, 5, 8)
    assert primary_tensor(logits) is logits
    assert primary_tensor((logits, hidden)) is logits
    assert primary_tensor({"logits": logits, "hidden_states": hidden}) is logits
    # A Hugging Face ModelOutput is an OrderedDict with the tensors under these names.
    assert primary_tensor(OrderedDict(last_hidden_state=hidden)) is hidden

    class Output:
        logits = torch.ones(1)

    assert primary_tensor(Output()) is Output.logits
    with pytest.raises(InputError, match=r"without 'logits' or 'last_hidden_state'.*scores"):
        primary_tensor({"scores": logits})


def test_token_counts_come_from_the_mask_else_the_sequence_length() -> None:
    x = _text(rows=2)
    assert is_token_input(x)
    assert tokens_per_item(x) == (5 + 3) / 2  # padding is not a token
    assert tokens_per_item(take_rows(x, 4)) == 4.0
    assert tokens_per_item(torch.zeros(1, 24, dtype=torch.long)) == 24.0
    assert tokens_per_item({"input_ids": torch.zeros(2, 7, dtype=torch.int32)}) == 7.0
    assert tokens_per_item(torch.zeros(3, dtype=torch.long)) == 1.0  # one id per item
    image = torch.randn(1, 3, 8, 8)
    assert not is_token_input(image) and tokens_per_item(image) is None
    assert tokens_per_item((image, torch.ones(1, 4, dtype=torch.bool))) is None  # a bool mask
