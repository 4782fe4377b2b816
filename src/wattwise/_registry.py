"""One generic, typed registry: passes, architectures, backends and meters register by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from wattwise.errors import InputError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object table with a decorator to fill it.

    Example:
        >>> METERS: Registry[type] = Registry("meter")
        >>> @METERS.register("rapl")
        ... class Rapl: ...
        >>> METERS.get("rapl").__name__
        'Rapl'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not name or name != name.strip():
            raise ValueError(f"bad {self.kind} name {name!r}")

        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        return lookup(self._items, name, self.kind)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """``table[name]``, or :class:`UnknownNameError` naming the ``kind`` and listing the choices
    (``unknown meter 'x'; choose from: estimate, nvml, rapl``): a registry's, or a table's."""
    try:
        return table[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown {kind} {name!r}; choose from: {', '.join(sorted(table))}"
        ) from None


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InputError(f"{kind} must be a non-empty string, got {name!r}")
    return name
