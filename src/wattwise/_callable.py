"""Subpackages that are also the function everyone calls: ``ww.measure(...)``, ``ww.deploy(...)``.

``wattwise.measure`` is both a subpackage (``wattwise.measure.Measurement``) and, per the
public API, the harness function. Importing a subpackage binds the parent's attribute to the
module object, whatever was there, so a plain function attribute would be replaced by the
first ``import wattwise.measure.meters``. Making the module object itself callable keeps both
meanings in any import order.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def make_callable(module_name: str, function_name: str) -> None:
    """Let ``sys.modules[module_name](...)`` call its attribute ``function_name``."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, function_name)(*args, **kwargs)

    CallableModule.__name__ = CallableModule.__qualname__ = f"Callable_{function_name}_module"
    sys.modules[module_name].__class__ = CallableModule
