r"""Names a package loads on first use (its PEP 562 module ``__getattr__``), so that importing
the package stays instant: ``wattwise`` loads its subpackages and their classes so, and
``wattwise.deploy`` its ``OrtModule`` and ``OvModule`` (``nn.Module``\ s: importing them
imports torch)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

Lazy = Mapping[str, tuple[str, str | None]]
"""Public name → (module, attribute); attribute ``None`` means the module itself."""


def load_lazy(package: str, names: Lazy, name: str) -> Any:
    """What ``package``'s ``__getattr__`` gives for ``name``: imported now, and bound in the
    package so that later lookups skip ``__getattr__``.

    Raises:
        AttributeError: ``name`` is not one of ``names``, as for any missing module attribute.
    """
    try:
        module_name, attr = names[name]
    except KeyError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    setattr(sys.modules[package], name, value)
    return value
