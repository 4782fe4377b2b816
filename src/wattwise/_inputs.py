"""Model inputs as data: a tensor, a tuple of tensors, or a dict of named tensors.

Every layer that feeds a model goes through here, so that a transformer's int64 token ids and
attention mask travel as they are (dtype and values kept) wherever an image batch does. The
three forms, and how a model is called with each (:func:`call`):

* a tensor ``x``: ``model(x)``;
* a tuple (or list) of tensors: positional arguments, ``model(*x)``;
* a dict of ``str`` to tensor: keyword arguments, ``model(**x)`` (Hugging Face style
  ``{"input_ids": ..., "attention_mask": ...}``).

Dimension 0 of every tensor is the batch, and all of an input's tensors agree on it.

This is a core module: it imports nothing of wattwise but :mod:`wattwise.errors`, and torch
only inside its functions, so any layer may import it and ``import wattwise`` stays light.

Example:
    >>> x = {"input_ids": torch.tensor([[5, 7, 9]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    >>> describe(x)
    'input_ids (1, 3) int64, attention_mask (1, 3) int64'
    >>> tokens_per_item(take_rows(x, 4))
    3.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from wattwise.errors import InputError

__all__ = [
    "batch_size_of",
    "call",
    "check_input",
    "describe",
    "detach_cpu",
    "is_token_input",
    "map_tensors",
    "primary_tensor",
    "take_rows",
    "tensors",
    "to_device",
    "tokens_per_item",
]

# Where a Hugging Face output (a ModelOutput is a Mapping) or a user's dict keeps the tensor to
# score: a classifier's logits, else an encoder's hidden states.
_PRIMARY_KEYS = ("logits", "last_hidden_state")
# The mask whose ones are a text item's real tokens (the rest is padding).
_MASK_KEY = "attention_mask"
# Preferred for a sequence length when there is no mask: the ids themselves.
_IDS_KEY = "input_ids"


def call(model: Callable[..., Any], x: Any) -> Any:
    """Call ``model`` with input ``x``: ``model(x)``, ``model(*x)`` or ``model(**x)``.

    The one calling convention of wattwise: a tuple is positional arguments and a dict keyword
    arguments, so a model never receives the container itself.
    """
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple | list):
        return model(*x)
    return model(x)


def tensors(x: Any) -> Iterator[tuple[str, Any]]:
    """``(label, item)`` for each part of ``x``: ``""`` for a lone tensor, ``"[i]"`` for a
    tuple's items, ``"['key']"`` for a dict's. Items are yielded as they are, tensor or not
    (:func:`check_input` judges them)."""
    if isinstance(x, Mapping):
        for key, value in x.items():
            yield f"[{key!r}]", value
    elif isinstance(x, tuple | list):
        for i, value in enumerate(x):
            yield f"[{i}]", value
    else:
        yield "", x


def check_input(x: Any, name: str) -> None:
    """Check that ``x`` is a model input, each tensor with a batch dimension, all one size.

    Raises:
        InputError: on one line, naming the bad part: ``example_input['attention_mask'] must
            be a tensor``, ``example_input[1] needs a batch dimension, got shape ()``.
    """
    import torch

    if isinstance(x, Mapping):
        if not x:
            raise InputError(f"{name} is an empty dict; it needs at least one named tensor")
        for key in x:
            if not isinstance(key, str) or not key.isidentifier():
                # model(**x) takes keyword names only, and an exported input needs a name.
                raise InputError(f"{name} has key {key!r}; keys must be argument names")
    elif isinstance(x, tuple | list) and not x:
        raise InputError(f"{name} is an empty tuple; it needs at least one tensor")
    elif not isinstance(x, torch.Tensor | tuple | list):
        raise InputError(
            f"{name} must be a tensor, a tuple of tensors or a dict of named tensors, "
            f"got {type(x).__name__}"
        )
    sizes: dict[str, int] = {}
    for label, t in tensors(x):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name}{label} must be a tensor, got {type(t).__name__}")
        if t.dim() < 1 or t.shape[0] < 1:
            raise InputError(f"{name}{label} needs a batch dimension, got shape {tuple(t.shape)}")
        sizes[label] = int(t.shape[0])
    if len(set(sizes.values())) > 1:
        each = ", ".join(f"{name}{label}: {n}" for label, n in sizes.items())
        raise InputError(f"{name}: its tensors disagree on the batch size ({each})")


def map_tensors(fn: Callable[[Any], Any], x: Any) -> Any:
    """``x`` with ``fn`` applied to each tensor, in the same form (a list comes back a tuple)."""
    if isinstance(x, Mapping):
        return {key: fn(value) for key, value in x.items()}
    if isinstance(x, tuple | list):
        return tuple(fn(value) for value in x)
    return fn(x)


def take_rows(x: Any, n: int) -> Any:
    """A batch of ``n`` rows of ``x``, cycling through the rows it has.

    Real rows are kept, dtypes and values alike (token ids stay int64, masks keep their
    zeros): a batch of 32 built from 8 sentences holds each of them four times.
    """
    import torch

    if n < 1:
        raise InputError(f"a batch needs at least one row, got {n}")
    index = torch.arange(n) % batch_size_of(x)
    return map_tensors(lambda t: t[index.to(t.device)].contiguous(), x)


def to_device(x: Any, device: Any) -> Any:
    """``x`` with every tensor moved to ``device``."""
    return map_tensors(lambda t: t.to(device), x)


def detach_cpu(x: Any) -> Any:
    """``x`` with every tensor detached and on the CPU (what a child process is sent)."""
    return map_tensors(lambda t: t.detach().cpu(), x)


def batch_size_of(x: Any) -> int:
    """The batch size of ``x`` (dimension 0 of its first tensor; :func:`check_input` checks
    they agree)."""
    for _, t in tensors(x):
        return int(t.shape[0])
    raise InputError("an input needs at least one tensor")


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe(x: Any) -> str:
    """Shapes and dtypes on one line, as error messages and tables show an input.

    >>> describe(torch.zeros(1, 3, 8, 8))
    '(1, 3, 8, 8) float32'
    >>> describe({"input_ids": torch.zeros(1, 20, dtype=torch.long)})
    'input_ids (1, 20) int64'
    """

    def one(t: Any) -> str:
        if not hasattr(t, "shape"):
            return type(t).__name__
        return f"{tuple(int(d) for d in t.shape)} {_dtype_name(t)}"

    if isinstance(x, Mapping):
        return ", ".join(f"{key} {one(t)}" for key, t in x.items())
    if isinstance(x, tuple | list):
        return ", ".join(one(t) for t in x)
    return one(x)


def primary_tensor(out: Any) -> Any:
    """The tensor to score or compare in a model's output.

    A tensor is itself; a tuple's (or list's) first item, looked into again; a Hugging Face
    ``ModelOutput`` or a dict gives its ``logits``, else its ``last_hidden_state``.

    Raises:
        InputError: the output holds none of these; the message lists what it holds.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out:
        return primary_tensor(out[0])
    if isinstance(out, Mapping):
        for key in _PRIMARY_KEYS:
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        raise InputError(
            "the model's output is a dict without 'logits' or 'last_hidden_state' "
            f"(it has {', '.join(map(str, out)) or 'nothing'}); return a tensor, or one of those"
        )
    for key in _PRIMARY_KEYS:  # output objects that are not mappings, with the same names
        if isinstance(getattr(out, key, None), torch.Tensor):
            return getattr(out, key)
    raise InputError(
        f"the model's output is a {type(out).__name__}; wattwise needs a tensor, a tuple "
        "starting with one, or a dict with 'logits' or 'last_hidden_state'"
    )


def _is_integer(t: Any) -> bool:
    import torch

    return (
        isinstance(t, torch.Tensor)
        and not t.is_floating_point()
        and not t.is_complex()
        and t.dtype != torch.bool
    )


def is_token_input(x: Any) -> bool:
    """Whether ``x`` holds token ids: any integer tensor (a bool mask alone is not ids)."""
    return any(_is_integer(t) for _, t in tensors(x))


def tokens_per_item(x: Any) -> float | None:
    """Tokens per item of a token input, ``None`` for any other.

    With an ``attention_mask`` the real tokens are its nonzero entries (padding does not
    count); without one, every position of the ids is a token: the sequence length of
    ``input_ids``, else of the first integer tensor (1 for a tensor of one id per item).
    """
    if not is_token_input(x):
        return None
    rows = batch_size_of(x)
    if isinstance(x, Mapping):
        mask = x.get(_MASK_KEY)
        if mask is not None and hasattr(mask, "count_nonzero"):
            return int(mask.count_nonzero()) / rows
        if _is_integer(x.get(_IDS_KEY)):
            return _sequence_length(x[_IDS_KEY])
    return next(_sequence_length(t) for _, t in tensors(x) if _is_integer(t))


def _sequence_length(t: Any) -> float:
    return float(t.shape[1]) if t.dim() >= 2 else 1.0
