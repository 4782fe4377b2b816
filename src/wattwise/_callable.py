"""Subpackages that are also the function everyone calls: ``ww.measure(...)``, ``ww.deploy(...)``.

``wattwise.measure`` is both a subpackage (``wattwise.measure.Measurement``) and, per the
public API, the harness function. Importing a subpackage binds the parent's attribute to the
module object, whatever was there, so a plain function attribute would be replaced by the
first ``import wattwise.measure.meters``; and ``import wattwise.deploy as wd`` reads that same
attribute, so it must stay the module. Making the module object itself callable keeps both
meanings in any import order.

Type checkers know no callable modules, so the module's class says what a call does:
:class:`CallableModule` is generic over the function's parameters and return type, and
:func:`make_callable` returns the module typed with its function's signature. ``wattwise``
declares ``measure`` and ``deploy`` with that type (under ``TYPE_CHECKING``), so
``ww.measure(net, x)`` checks its arguments and is a ``Measurement`` to mypy, as it is at run
time. Other names read through ``ww.measure.<name>`` are ``Any`` to a type checker (as on any
module object); ``from wattwise.measure import <name>`` keeps their types.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")


class CallableModule(types.ModuleType, Generic[P, R]):
    """A module whose call is its attribute ``_function_name``, looked up at each call (so a
    patched attribute is what runs)."""

    _function_name: str  # set on the per-module subclass by make_callable

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        function: Callable[P, R] = getattr(self, self._function_name)
        return function(*args, **kwargs)


def make_callable(module_name: str, function: Callable[P, R]) -> CallableModule[P, R]:
    """Let ``sys.modules[module_name](...)`` call ``function``, one of that module's attributes.

    Returns:
        The module itself, typed as callable with ``function``'s signature.

    Raises:
        ValueError: ``function`` is not the module's attribute of its own name (the call looks
            it up by that name).
    """
    module = sys.modules[module_name]
    name = function.__name__
    if getattr(module, name, None) is not function:
        raise ValueError(f"{module_name}.{name} is not {function!r}")
    # One subclass per module: the function's name lives on the class, not in the module's
    # namespace (dir(wattwise.measure) lists only its own names).
    module.__class__ = type(f"Callable_{name}_module", (CallableModule,), {"_function_name": name})
    return cast("CallableModule[P, R]", module)
