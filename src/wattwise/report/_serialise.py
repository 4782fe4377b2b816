"""The machine-readable outputs: ``results.json`` and ``trials.csv``, and the report's inputs.

The report takes a :class:`~wattwise.results.Results` and its :class:`~wattwise.results.TrialRow`
list, or their plain-dict forms (read with ``from_dict``, so a wrong type is one
:class:`~wattwise.errors.InputError` line naming the field). Every storage URL written has its
password replaced by ``***``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from wattwise.errors import InputError
from wattwise.results import FIGURE_KEYS, Results, TrialRow

__all__ = [
    "TRIAL_COLUMNS",
    "as_results",
    "as_rows",
    "canonical_results",
    "redact_url",
    "results_json_text",
    "trials_csv_text",
]

# CSV columns in reading order; the other fields of a row (and keys a newer writer added)
# follow, sorted, so nothing the search records is silently dropped.
TRIAL_COLUMNS: tuple[str, ...] = (
    "number",
    "state",
    "fail_reason",
    "feasible",
    "pareto",
    "fidelity",
    "accuracy",
    "accuracy_drop",
    *(k for k in FIGURE_KEYS if k != "accuracy"),
    "build_energy_j",
    "measure_energy_j",
    "duration_s",
    "student",
    "recipe",
    "deployment",
)

# Query parameters that carry secrets in database URLs (libpq, SQLAlchemy dialects).
_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword"})


# ----------------------------------------------------------------------------- inputs


def as_results(results: Results | Mapping[str, Any]) -> Results:
    """``results`` as a :class:`Results` (a results.json dict is read with ``from_dict``)."""
    if isinstance(results, Results):
        return results
    if not isinstance(results, Mapping):
        raise InputError(f"results must be a mapping (results.json), got {type(results).__name__}")
    return Results.from_dict(results)


def as_rows(trials: Iterable[TrialRow | Mapping[str, Any]]) -> list[TrialRow]:
    """``trials`` as :class:`TrialRow` objects, in trial-number order (the page and the CSV
    then read the same whatever order the storage gave)."""
    if isinstance(trials, str | bytes | Mapping) or not isinstance(trials, Iterable):
        raise InputError(f"trials must be a list of trial rows, got {type(trials).__name__}")
    rows = []
    for i, row in enumerate(trials):
        if isinstance(row, TrialRow):
            rows.append(row)
        elif isinstance(row, Mapping):
            rows.append(TrialRow.from_dict(row, name=f"trials[{i}]"))
        else:
            raise InputError(f"trials[{i}] must be a mapping, got {type(row).__name__}")
    return sorted(rows, key=lambda t: t.number)


# ----------------------------------------------------------------------------- secrets


def redact_url(url: Any) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and secret query parameters).

    Used for every storage URL the report shows or writes, so a results file can be shared.

    Example:
        >>> redact_url("postgresql://ann:s3cret@db.example:5432/studies")
        'postgresql://ann:***@db.example:5432/studies'
        >>> redact_url("sqlite:///wattwise.db")
        'sqlite:///wattwise.db'
    """
    if url is None:
        return ""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        # A URL urllib refuses (e.g. a bad IPv6 host) may still carry 'user:pass@'.
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = "&".join(
                f"{k}=***" if k.lower() in _SECRET_PARAMS else urllib.parse.urlencode({k: v})
                for k, v in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return text  # untouched: don't let urlunsplit normalise what the user wrote
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# ----------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: tuples → lists, paths → str, numpy scalars → Python, NaN → null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def canonical_results(results: Results | Mapping[str, Any]) -> dict[str, Any]:
    """The results.json document as plain JSON values, its storage URL redacted.

    The key order is :meth:`Results.to_dict`'s, whatever order the input had: the same
    content gives the same bytes. The caller's dict is not modified.
    """
    doc = as_results(results)
    if doc.storage is not None:
        doc = dataclasses.replace(doc, storage=redact_url(doc.storage))
    plain: dict[str, Any] = _jsonable(doc.to_dict())
    return plain


def results_json_text(results: Results | Mapping[str, Any]) -> str:
    """``results`` as pretty, key-stable JSON text (trailing newline, UTF-8 kept readable)."""
    return json.dumps(canonical_results(results), indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- CSV

# A spreadsheet opening trials.csv runs a cell that starts with one of these as a formula
# (CSV injection: a study name or fail reason "=HYPERLINK(...)" from a shared study).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """``text`` for a CSV cell: a would-be formula gets a leading ``'``, which spreadsheets
    take as "this is text" (OWASP's advice). Only strings: a number such as ``-0.5`` is
    written as a number and stays one."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _csv_text(value)
    # Structured cells (recipe, deployment) as compact JSON: one cell, parseable again.
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)


def trials_csv_text(trials: Iterable[TrialRow | Mapping[str, Any]]) -> str:
    """One CSV row per trial, sorted by number; recipe and deployment as compact JSON.

    Empty cells mean "not recorded"; booleans are ``true``/``false``.
    """
    rows = [row.to_dict() for row in as_rows(trials)]
    extra = sorted({k for row in rows for k in row} - set(TRIAL_COLUMNS))
    columns = [*TRIAL_COLUMNS, *extra]
    buf = io.StringIO()
    # CRLF, RFC 4180's line end: the writer quotes a cell holding any character of the line
    # terminator, so with "\n" alone a bare CR inside a fail reason was left unquoted and
    # readers split the row there.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([_csv_text(c) for c in columns])  # extra columns are the trials' keys
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue()
