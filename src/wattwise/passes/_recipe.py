"""Recipes: a list of passes saved as YAML, read back exactly.

The file format::

    wattwise_recipe: 1
    passes:
    - type: prune
      version: 1
      ratio: 0.5
      ...
    - type: quantize
      version: 1
      method: pt2e-int8
      ...

A bare YAML list of pass mappings is read too. Every error is one line that names the file,
the pass (by position and type) and the field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattwise.config import key_name
from wattwise.errors import InputError
from wattwise.passes._base import PASSES, Pass

FORMAT_VERSION = 1


def recipe_to_dicts(passes: Sequence[Pass]) -> list[dict[str, Any]]:
    """The recipe as plain dicts (each with its ``type`` and ``version``)."""
    if isinstance(passes, Pass) or not isinstance(passes, Sequence):
        raise InputError(f"a recipe must be a list of passes, got {type(passes).__name__}")
    out = []
    for i, p in enumerate(passes):
        if not isinstance(p, Pass):
            raise InputError(f"recipe pass {i} is a {type(p).__name__}, not a pass")
        out.append(p.to_dict())
    return out


def passes_from_dicts(items: Sequence[Any], *, where: str = "recipe", first: int = 0) -> list[Pass]:
    """Rebuild passes from their dicts; errors name ``where`` and the pass position."""
    out: list[Pass] = []
    for i, item in enumerate(items, start=first):
        at = f"{where}, pass {i}"
        if not isinstance(item, dict):
            raise InputError(f"{at}: expected a mapping with a 'type', got {type(item).__name__}")
        tag = item.get("type")
        if tag is None:
            raise InputError(f"{at}: no 'type' field; choose from: {', '.join(PASSES.names())}")
        if not isinstance(tag, str) or tag not in PASSES:
            raise InputError(
                f"{at}: unknown pass {tag!r}; choose from: {', '.join(PASSES.names())}"
            )
        cls = PASSES.get(tag)
        try:
            out.append(cls.from_dict(item))
        except InputError as exc:
            raise InputError(f"{at} ({tag}): {exc}") from None
    return out


def dump_recipe(passes: Sequence[Pass]) -> str:
    """The recipe as YAML text."""
    import yaml

    doc = {"wattwise_recipe": FORMAT_VERSION, "passes": recipe_to_dicts(passes)}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def parse_recipe(text: str, *, where: str = "recipe") -> list[Pass]:
    """Passes from YAML text (see the module docstring for the format)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"{where}: malformed YAML{at}: {problem}") from None
    if isinstance(doc, dict):
        version = doc.get("wattwise_recipe", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise InputError(
                f"{where}: recipe format {version!r} is not supported (this wattwise reads {FORMAT_VERSION})"
            )
        unknown = sorted(key_name(k) for k in set(doc) - {"wattwise_recipe", "passes"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; expected 'passes'")
        items = doc.get("passes")
    else:
        items = doc
    if not isinstance(items, list):
        raise InputError(
            f"{where}: expected a list of passes under 'passes', got {type(items).__name__}"
        )
    return passes_from_dicts(items, where=where)


def save_recipe(path: str | os.PathLike[str], passes: Sequence[Pass]) -> Path:
    """Write ``passes`` to ``path`` as YAML; :func:`load_recipe` reads back equal passes.

    Example:
        >>> save_recipe("recipe.yaml", [Prune(ratio=0.5), Quantize("pt2e-int8")])
        >>> load_recipe("recipe.yaml") == [Prune(ratio=0.5), Quantize("pt2e-int8")]
        True
    """
    text = dump_recipe(passes)
    out = Path(path)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write recipe {out}: {exc.strerror or exc}") from None
    return out


def load_recipe(path: str | os.PathLike[str]) -> list[Pass]:
    """Read a recipe written by :func:`save_recipe` (or by hand)."""
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read recipe {src}: {reason}") from None
    return parse_recipe(text, where=f"recipe {src}")
