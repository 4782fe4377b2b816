"""Built-in tasks by name, and :func:`load_task` for ``NAME`` or ``package.module:factory``."""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from wattwise._core import one_line
from wattwise._registry import Registry
from wattwise.errors import InputError, UnknownNameError, WorkloadError
from wattwise.tasks._task import Task
from wattwise.tasks.digits import digits
from wattwise.tasks.photos import lite0_photos
from wattwise.tasks.text import minilm_embed, minilm_topics
from wattwise.tasks.tinylm import tinylm_task

__all__ = ["TASKS", "get", "load_task", "names"]

TASKS: Registry[Callable[[], Task]] = Registry("task")
TASKS.register("digits")(functools.partial(digits, size=8))
TASKS.register("digits32")(functools.partial(digits, size=32))
TASKS.register("lite0-photos")(lite0_photos)
TASKS.register("minilm-topics")(minilm_topics)
TASKS.register("minilm-embed")(minilm_embed)
TASKS.register("tinylm")(tinylm_task)

_T = TypeVar("_T")

_SPEC = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def names() -> list[str]:
    """The built-in task names."""
    return TASKS.names()


def get(name: str) -> Task:
    """Build the built-in task ``name`` (``"digits"``, ``"digits32"``, ``"lite0-photos"``).

    Raises:
        UnknownNameError: ``name`` is not a built-in task.
    """
    return TASKS.get(name)()


def is_spec(text: str) -> bool:
    """Whether ``text`` looks like ``package.module:attribute``."""
    return bool(_SPEC.match(text))


def import_spec(spec: str, *, what: str) -> Any:
    """Import the object named by ``package.module:attr`` (``attr`` may be dotted).

    This imports the user's module, which runs its top-level code. The current directory is
    appended to ``sys.path`` (if absent) so ``wattwise ... mymodel:build`` finds ``mymodel.py``
    beside the user, as ``python -m`` would; appended, not prepended, so it never shadows an
    installed package.

    Args:
        spec: the ``package.module:attr`` string.
        what: how the error messages name the argument (``"TASK"``, ``"TARGET"``).

    Raises:
        InputError: a malformed spec, a module that cannot be imported or a missing attribute.
    """
    if not is_spec(spec):
        raise InputError(f"{what} {spec!r} is not of the form package.module:factory")
    module_name, attr_path = spec.split(":", 1)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise InputError(
                f"{what} {spec!r}: no module named {missing!r} "
                "(is it installed, on PYTHONPATH or in the current directory?)"
            ) from None
        raise InputError(
            f"{what} {spec!r}: importing {module_name!r} raised {one_line(exc)}"
        ) from None
    except Exception as exc:  # the user's module body raised; report it in one line
        raise InputError(
            f"{what} {spec!r}: importing {module_name!r} raised {one_line(exc)}"
        ) from None
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InputError(
                f"{what} {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def call_factory(factory: Any, spec: str, *, what: str, returns: type[_T], expected: str) -> _T:
    """Call ``factory``, what :func:`import_spec` found for ``spec``, and check what it built.

    Args:
        what: how the error messages name the argument (``"TASK"``, ``"TARGET"``).
        returns, expected: the class the factory must build, and it in words for the error
            (``"a wattwise Task"``).

    Raises:
        InputError: ``factory`` is not callable, or built something other than a ``returns``.
        WorkloadError: the factory raised (the message names the exception).
    """
    if not callable(factory):
        raise InputError(f"{what} {spec!r} is a {type(factory).__name__}, not a callable factory")
    try:
        built = factory()
    except Exception as exc:
        raise WorkloadError(f"{what} {spec!r}: the factory raised {one_line(exc)}") from None
    if not isinstance(built, returns):
        raise InputError(
            f"{what} {spec!r}: the factory returned a {type(built).__name__}, expected {expected}"
        )
    return built


def load_task(spec: str) -> Task:
    """A task by built-in name or from the user's factory.

    Args:
        spec: a built-in name (see :func:`names`) or ``package.module:factory``, where
            ``factory()`` takes no arguments and returns a :class:`Task`. A factory spec imports
            the module and calls the factory: it runs the user's code, with the user's rights.

    Raises:
        UnknownNameError: not a built-in name and not a ``module:factory`` spec.
        InputError: the module cannot be imported, the attribute is missing or not callable, or
            the factory returned something other than a ``Task``.
        WorkloadError: the factory raised (the message names the exception).

    Example:
        >>> load_task("digits").name
        'digits'
        >>> load_task("my_project.tasks:cifar_task")  # doctest: +SKIP
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"TASK must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec in TASKS:
        return get(spec)
    if ":" not in spec:
        import difflib

        close = difflib.get_close_matches(spec, names(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownNameError(
            f"unknown task {spec!r}; {hint}built-in tasks: {', '.join(names())}, "
            "or pass package.module:factory"
        )
    factory = import_spec(spec, what="TASK")
    return call_factory(factory, spec, what="TASK", returns=Task, expected="a wattwise Task")
