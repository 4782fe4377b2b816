"""What every command writes: its result to stdout whole (a table or one JSON document),
everything else (progress, the user's own prints) to stderr."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["JSON_SCHEMA", "print_json", "progress", "stdout_to_stderr", "write_stdout"]

JSON_SCHEMA = 1  # of the documents ``measure --json`` and ``doctor --json`` print


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever is written to stdout meanwhile to stderr, at the file-descriptor level too,
    so prints in the user's model (here or in the measuring child, which inherits fd 1) never
    corrupt the JSON document or the table."""
    import os

    with contextlib.redirect_stdout(sys.stderr):
        try:
            out_fd, err_fd = sys.__stdout__.fileno(), sys.__stderr__.fileno()  # type: ignore[union-attr]
            saved: int | None = os.dup(out_fd)
        except (AttributeError, OSError, ValueError):  # no real stdout (embedded, closed)
            saved = None
        if saved is not None:
            sys.__stdout__.flush()  # type: ignore[union-attr]
            os.dup2(err_fd, out_fd)
        try:
            yield
        finally:
            if saved is not None:
                sys.__stdout__.flush()  # type: ignore[union-attr]
                os.dup2(saved, out_fd)
                os.close(saved)


@contextlib.contextmanager
def progress(console: Console, text: str) -> Iterator[None]:
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        yield


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_json(doc: dict[str, Any]) -> None:
    write_stdout(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")


def write_stdout(text: str) -> None:
    """Write a command's result to stdout whole, or fail saying so and leave nothing behind.

    Two things go wrong without this when stdout is a file that runs out of room
    (``ulimit -f``, a full disk): with ``PYTHONUNBUFFERED=1`` ``sys.stdout.write`` drops the
    rest of a short write without an error (exit 0, half a JSON document); and the part that
    was written stays. So the bytes are written in a loop until all are taken or the OS says
    why not; on such an error the file is cut back to the size it had, stdout is pointed at
    /dev/null (the interpreter's flush at exit would fail again, exit 120, and print a second
    error), and the error names the file.
    """
    import os

    from wattwise._fs import STORAGE_ERRNOS

    sys.stdout.flush()
    size = _regular_file_size(sys.stdout)
    buffer = getattr(sys.stdout, "buffer", None)
    try:
        if buffer is None:  # a text-only stream (embedded): it keeps what it is given
            sys.stdout.write(text)
        else:
            _write_all(buffer, text.encode(sys.stdout.encoding or "utf-8", "replace"))
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        fd = sys.stdout.fileno()
        where = _fd_path(fd)
        if size is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
        raise OSError(exc.errno, exc.strerror, where) from None


def _write_all(buffer: Any, data: bytes) -> None:
    """``buffer.write`` until every byte is taken: a raw (unbuffered) stream may take fewer."""
    import errno

    view = memoryview(data)
    while view:
        taken = buffer.write(view)
        if taken is None:  # a non-blocking raw stream with no room now
            raise BlockingIOError(errno.EAGAIN, "stdout is non-blocking and full")
        view = view[taken:]
    buffer.flush()


def _regular_file_size(stream: Any) -> int | None:
    """The size of the file ``stream`` writes to, if it is a regular file; else None."""
    import os
    import stat

    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (CliRunner, embedded)
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _fd_path(fd: int) -> str:
    """What a file descriptor is open on, for an error message: ``stdout (/path)``."""
    import os

    with contextlib.suppress(OSError):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith("/"):
            return f"stdout ({target})"
    return "stdout"
