"""Models that take a dict of named inputs (``model(input_ids=..., attention_mask=...)``),
deployed by backends that take positional inputs (``torch.export``, ONNX, compiled graphs).

:func:`wattwise.deploy.deploy` wraps such a model in :class:`ByPosition` (the names in a fixed
order) for the backend, and hands back the prepared module inside :class:`ByName`, which takes
the dict again by name. An exported artifact stores the names, and its loader checks they are
identifiers before wrapping the reloaded model the same way.

Imported only inside the functions that deploy (it imports torch).
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from wattwise.errors import InputError

__all__ = ["ByName", "ByPosition", "NamedFactory", "check_names"]


def check_names(names: Sequence[Any], what: str) -> tuple[str, ...]:
    """``names`` as a tuple, if each is a Python identifier (not a keyword) and none repeats.

    Raises:
        InputError: naming the bad name and ``what`` holds it.
    """
    out = tuple(names)
    for name in out:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise InputError(f"{what}: input name {str(name)[:60]!r} is not an identifier")
    if len(set(out)) != len(out):
        raise InputError(f"{what}: input names repeat ({', '.join(out)})")
    if not out:
        raise InputError(f"{what}: no input names")
    return out


class ByPosition(nn.Module):
    """A dict-input model behind positional arguments, in ``names`` order: what backends take."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = check_names(names, "ByPosition")

    def forward(self, *args: Any) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)))


class ByName(nn.Module):
    """A deployment of a dict-input model, called again by name: ``m(**x)`` or ``m(x)`` with
    ``x`` the dict. Positional arguments, in ``names`` order, pass through as they are (the
    deploy layer's checks and exports call it that way)."""

    def __init__(self, inner: Callable[..., Any], names: Sequence[str]) -> None:
        super().__init__()
        self.inner = inner
        self.names = check_names(names, "ByName")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == 1 and isinstance(args[0], Mapping):
            kwargs, args = dict(args[0]), ()
        if not kwargs:
            return self.inner(*args)
        if args:
            raise InputError("pass a deployed model's inputs either by name or by position")
        if set(kwargs) != set(self.names):
            raise InputError(
                f"the deployed model takes {', '.join(self.names)}; got {', '.join(kwargs)}"
            )
        return self.inner(*(kwargs[name] for name in self.names))


class NamedFactory:
    """Picklable zero-argument factory: ``factory()`` wrapped in :class:`ByName` (for the
    measuring child, which rebuilds a deployment from what the parent sends)."""

    def __init__(self, factory: Callable[[], Any], names: Sequence[str]) -> None:
        self.factory = factory
        self.names = check_names(names, "NamedFactory")

    def __call__(self) -> ByName:
        return ByName(self.factory(), self.names)
