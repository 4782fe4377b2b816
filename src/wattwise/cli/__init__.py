"""The ``wattwise`` command: a thin typer + rich layer over the Python API.

One module per command group (``_measure``, ``_doctor``, ``_compress``, ``_search``,
``_train``), each adding
its commands to the one app in :mod:`._app`; the exit-code contract is in :mod:`._errors`, and
what a command may write where in :mod:`._output`. Only results go to stdout (a table, or one
JSON document with ``--json``); errors and progress go to stderr, and the progress spinner only
when stderr is a terminal.

Nothing heavy is imported at module level: ``wattwise --help`` must not load torch.
"""

from wattwise.cli import _compress, _doctor, _measure, _search, _train  # noqa: F401  (commands)
from wattwise.cli._app import app, main
from wattwise.cli._doctor import doctor_report
from wattwise.cli._errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    error_line,
    exit_code_for,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CHECK_FAILED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "app",
    "doctor_report",
    "error_line",
    "exit_code_for",
    "main",
]
