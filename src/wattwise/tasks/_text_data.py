"""Tokenised sentences as a dataset, and the collate function that pads a batch.

An item is ``({"input_ids": ids, "attention_mask": ones}, target)`` with 1-D int64 tensors of
the sentence's own length: no padding is stored. :func:`collate` pads a batch to its longest
item only, so a batch of short sentences costs short sequences; the held-out set is sorted by
length (:meth:`TokenizedTexts.sorted_by_length`) so that its unshuffled batches hold sentences
of near-equal length and waste little compute on padding. The target is a class index (a 0-d
int64 tensor) or a vector (a reference embedding); :func:`collate` stacks either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from wattwise.errors import InputError

__all__ = ["TextBatch", "TextItem", "TokenizedTexts", "collate", "median_example"]

TextItem = tuple[dict[str, torch.Tensor], torch.Tensor]
TextBatch = tuple[dict[str, torch.Tensor], torch.Tensor]


class TokenizedTexts(Dataset[TextItem]):
    """A map-style dataset of tokenised sentences and their targets.

    Args:
        token_ids: each sentence's token ids (with its special tokens), any length >= 1, as
            lists or 1-D tensors.
        targets: one target per sentence: a class index, or a float vector (stacked as a
            ``(n, dim)`` tensor).
        pad_id: the tokenizer's padding id, which :func:`collate` pads with.

    Raises:
        InputError: lengths differ, a sentence is empty, or there are no sentences.
    """

    def __init__(
        self,
        token_ids: Sequence[Sequence[int] | torch.Tensor],
        targets: torch.Tensor,
        *,
        pad_id: int,
    ) -> None:
        if len(token_ids) == 0:
            raise InputError("TokenizedTexts: token_ids is empty")
        if len(token_ids) != len(targets):
            raise InputError(
                f"TokenizedTexts: {len(token_ids)} sentences but {len(targets)} targets"
            )
        if any(len(ids) == 0 for ids in token_ids):
            raise InputError("TokenizedTexts: token_ids holds an empty sentence")
        self.ids = [torch.as_tensor(ids, dtype=torch.int64) for ids in token_ids]
        self.targets = targets
        self.pad_id = int(pad_id)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> TextItem:
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, self.targets[index]

    def lengths(self) -> list[int]:
        """Each sentence's length in tokens."""
        return [len(ids) for ids in self.ids]

    def with_targets(self, targets: torch.Tensor) -> TokenizedTexts:
        """The same sentences with other targets (one per sentence, in this order)."""
        return TokenizedTexts(self.ids, targets, pad_id=self.pad_id)

    def length_order(self) -> list[int]:
        """The item indices from shortest to longest sentence (ties keep their order)."""
        return sorted(range(len(self)), key=lambda i: len(self.ids[i]))

    def sorted_by_length(self) -> TokenizedTexts:
        """A copy with the sentences in order of length (ties keep their order)."""
        order = self.length_order()
        return TokenizedTexts([self.ids[i] for i in order], self.targets[order], pad_id=self.pad_id)


def collate(items: Sequence[TextItem], *, pad_id: int = 0) -> TextBatch:
    """Pad a list of items to the longest and stack them.

    Args:
        items: ``(inputs, target)`` pairs as :class:`TokenizedTexts` gives them.
        pad_id: the id padding positions get in ``input_ids`` (BERT's ``[PAD]`` is 0); their
            ``attention_mask`` is 0 whatever the id, so the model ignores them.

    Returns:
        ``({"input_ids": (b, t), "attention_mask": (b, t)}, targets)``, both int64, where ``t``
        is the longest item's length; targets are stacked along a new first dimension.

    Raises:
        InputError: ``items`` is empty.
    """
    if not items:
        raise InputError("collate: no items to batch")
    longest = max(len(x["input_ids"]) for x, _ in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(items), longest), dtype=torch.int64)
    for row, (x, _) in enumerate(items):
        n = len(x["input_ids"])
        ids[row, :n] = x["input_ids"]
        mask[row, :n] = x["attention_mask"]
    targets = torch.stack([torch.as_tensor(y) for _, y in items])
    return {"input_ids": ids, "attention_mask": mask}, targets


def median_example(data: TokenizedTexts) -> dict[str, torch.Tensor]:
    """A real input of batch size 1: the sentence of median length (the lower median).

    The example input is what a deployment is exported and measured with; a median sentence
    makes its per-item cost typical of the task, where the first or the longest would not be.
    """
    order = data.length_order()
    x, _ = data[order[(len(order) - 1) // 2]]
    return {name: tensor.unsqueeze(0).clone() for name, tensor in x.items()}
