"""Run a function in a fresh child process: crash isolation and a quiet allocator.

Every measurement (and later every search trial) runs through :func:`run_isolated`:

* a segfault, an out-of-memory kill or a hang in the child fails that one call with a
  one-line reason instead of taking the caller down;
* the child starts (``spawn``, never ``fork``) with ``GLIBC_TUNABLES`` set so glibc malloc
  neither returns memory to the OS nor serves big blocks with ``mmap``. On our 2-core VM the
  default allocator made one forward pass take 2652 ms in one run and 466 ms in the next
  (page faults); with these tunables the swings went away;
* threads are pinned: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and CPU affinity.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from wattwise import errors

TAME_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


class IsolationError(errors.WorkloadError):
    """The child process crashed, was killed or ran out of time.

    Attributes:
        reason: ``"crash"``, ``"killed"`` or ``"timeout"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def child_env(threads: int | None) -> dict[str, str]:
    env = {"GLIBC_TUNABLES": os.environ.get("WATTWISE_GLIBC_TUNABLES", TAME_MALLOC)}
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    # spawn copies os.environ when the child starts; set it just for that moment.
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pin_threads(threads: int | None) -> int:
    """Limit this process to ``threads`` cores (the first ones it may use); returns the count."""
    import torch

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    n = threads or len(allowed) or os.cpu_count() or 1
    if allowed and n < len(allowed):
        os.sched_setaffinity(0, allowed[:n])
    torch.set_num_threads(n)
    return n


def _child_main(conn: Connection, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = func(*args)
        conn.send(("ok", result))
    except BaseException as exc:  # report everything; the parent decides what it means
        kind = type(exc).__name__
        if isinstance(exc, errors.WattwiseError):
            conn.send(("wattwise", kind, str(exc), traceback.format_exc()))
        else:
            conn.send(("raised", kind, str(exc), traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(
    func: Callable[..., Any],
    *args: Any,
    threads: int | None = None,
    timeout_s: float = 600.0,
    what: str = "measurement",
) -> Any:
    """Call ``func(*args)`` in a spawned child and return its result.

    ``func`` and ``args`` must pickle (module-level functions, importable classes).

    Raises:
        InputError: the payload cannot be sent to a child (e.g. a lambda).
        IsolationError: the child crashed, was killed or timed out.
        WattwiseError subclasses raised in the child are re-raised with their message.
    """
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, func, args), daemon=True)
    try:
        with _environ(child_env(threads)):
            proc.start()
    except Exception as exc:  # pickling fails here, in the parent
        recv.close()
        send.close()
        raise errors.InputError(
            f"cannot send the {what} to a child process ({type(exc).__name__}: {exc}); "
            "use a picklable model or factory, or isolate=False"
        ) from None
    send.close()
    try:
        message = _receive(recv, proc, timeout_s, what)
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    status = message[0]
    if status == "ok":
        return message[1]
    _, kind, text, tb = message
    first = text.strip().splitlines()[0] if text.strip() else ""
    error: errors.WattwiseError
    if status == "wattwise":
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, errors.WattwiseError):
            error = cls(first)
        else:
            error = errors.WattwiseError(first)
    elif kind in ("MemoryError", "OutOfMemoryError"):
        error = IsolationError(f"{what} ran out of memory: {first}", "oom")
    else:
        error = errors.WorkloadError(f"{kind} in the {what}: {first}")
    # The child's traceback travels with the error for --debug.
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(f"in the child process:\n{tb}")
    raise error


def _receive(recv: Connection, proc: Any, timeout_s: float, what: str) -> tuple[Any, ...]:
    waited = 0.0
    step = 0.2
    while waited < timeout_s:
        if recv.poll(step):
            try:
                return recv.recv()  # type: ignore[no-any-return]
            except EOFError:
                break
        waited += step
        if not proc.is_alive() and not recv.poll(0):
            break
    else:
        proc.kill()
        proc.join(5)
        raise IsolationError(f"{what} timed out after {timeout_s:.0f} s", "timeout")
    proc.join(5)
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        raise IsolationError(
            f"{what} process died with {name}{hint}", "killed" if name == "SIGKILL" else "crash"
        )
    raise IsolationError(f"{what} process exited with code {code} before reporting", "crash")
