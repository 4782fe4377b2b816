"""Versioned, serialisable config dataclasses.

A config is a frozen dataclass that validates itself in ``__post_init__`` (raising
``InputError`` that names the field) and round-trips through plain dicts (and so YAML/JSON)
with a type tag and a version::

    {"type": "prune", "version": 1, "ratio": 0.5, ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from wattwise._registry import Registry
from wattwise.errors import InputError

C = TypeVar("C", bound="Config")

CONFIGS: Registry[type[Config]] = Registry("config type")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for every serialisable config. Subclasses set ``TYPE`` and register with
    :func:`register_config`."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE, "version": self.VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise InputError(f"config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        tag = data.pop("type", cls.TYPE or None)
        if tag is None:
            raise InputError("config has no 'type' field")
        target = CONFIGS.get(str(tag)) if cls is Config or tag != cls.TYPE else cls
        version = data.pop("version", target.VERSION)
        if version != target.VERSION:
            raise InputError(
                f"{tag}: version {version!r} is not supported (this wattwise reads version {target.VERSION})"
            )
        names = {f.name for f in dataclasses.fields(target) if f.init}
        unknown = sorted(key_name(k) for k in set(data) - names)
        if unknown:
            raise InputError(
                f"{tag}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        try:
            obj = target(**data)
        except TypeError as exc:
            raise InputError(f"{tag}: {exc}") from None
        return obj  # type: ignore[return-value]


def register_config(cls: type[C]) -> type[C]:
    """Class decorator: make ``Config.from_dict`` able to rebuild ``cls`` from its type tag."""
    if not cls.TYPE:
        raise ValueError(f"{cls.__name__} needs a TYPE")
    CONFIGS.register(cls.TYPE)(cls)
    return cls


def key_name(key: object) -> str:
    """A mapping key as an error message can show it: on one line, quoted when odd."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key else repr(key)


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
