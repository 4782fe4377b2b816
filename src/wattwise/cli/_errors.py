"""The CLI's error and exit-code contract, in one place.

Exit codes (what scripts and CI rely on):

* 0: success.
* 1: a check failed (:class:`~wattwise.errors.CheckFailed`, from ``wattwise check``).
* 2: the command could not do its job: bad input, something unavailable here (no GPU, no
  counter), the user's model raised, or an unexpected internal error. The reason is one line
  on stderr, ``error: ...``; ``wattwise --debug ...`` adds the traceback. Internal errors say
  "internal error" so they can be told apart and reported.
* 130: interrupted (Ctrl-C); 143: stopped by SIGTERM (``optimize`` writes its partial results
  first); 141: stdout was closed early (``wattwise ... | head``).
"""

from __future__ import annotations

import contextvars
import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from wattwise.errors import CheckFailed, WattwiseError

# No __all__: the contract's public names (the EXIT_* codes, error_line, exit_code_for) are
# listed once, where they are re-exported, in wattwise.cli; the commands import handled.

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
EXIT_TERMINATED = 143  # 128 + SIGTERM

# Set by the root callback, which runs before every command (also under typer's CliRunner).
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("wattwise_debug", default=False)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The exit code the CLI gives for ``exc`` (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CheckFailed):
        return EXIT_CHECK_FAILED
    return EXIT_ERROR


def error_line(exc: BaseException) -> str:
    """The one line printed for ``exc``, without the ``error:`` prefix."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())  # one line, whatever the message held
    if isinstance(exc, WattwiseError):
        return text or type(exc).__name__
    from wattwise._fs import storage_error_line

    storage = storage_error_line(exc)  # a full disk or a file-size limit is no internal error
    if storage is not None:
        return " ".join(storage.split())
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"internal error ({detail}); rerun as 'wattwise --debug ...' for the traceback"


def handled(func: F) -> F:
    """Run a command, turning any exception into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # typer's own control flow: it prints and exits as usual
        except BrokenPipeError:
            # stdout closed early (``wattwise ... | head``): quiet, like other Unix tools; point
            # stdout at devnull so the interpreter's final flush does not raise again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except (Exception, KeyboardInterrupt) as exc:
            if DEBUG.get():
                traceback.print_exception(exc, file=sys.stderr)
            print(f"error: {error_line(exc)}", file=sys.stderr, flush=True)
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper  # type: ignore[return-value]
