"""Run a function in a fresh child process: crash isolation and a quiet allocator.

Every measurement (and later every search trial) runs through :func:`run_isolated`:

* a segfault, an out-of-memory kill or a hang in the child fails that one call with a
  one-line reason instead of taking the caller down;
* the child runs with ``GLIBC_TUNABLES`` set so glibc malloc neither returns memory to the
  OS nor serves big blocks with ``mmap``. On our 2-core VM the default allocator made one
  forward pass take 2652 ms in one run and 466 ms in the next (page faults); with these
  tunables the swings went away;
* the child is forked from a *fork server* that was itself started with those tunables and
  has imported torch (and what :func:`preload` names) once, never forked from the caller,
  whose threads and state a fork would copy. A spawned child spent about 2.5 s of a 3 s
  confirmation run importing torch; forked from the server it starts in 0.05 s. The child
  gets what a spawned one would: the caller's environment, ``sys.path``, working directory
  and file descriptors 1 and 2 as they are at the call, not as they were when the server
  started. ``WATTWISE_START_METHOD=spawn`` (or a platform without ``forkserver``) spawns
  every child afresh instead;
* threads are pinned: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and CPU affinity;
* with ``log_path``, whatever the child writes to its stdout and stderr (the user's prints,
  C libraries writing to fd 1 and 2, warnings) goes to that file instead of the caller's
  terminal, the file capped at :data:`LOG_MAX_BYTES` (one model printed 512 MiB);
* the child is left to exit by itself once it has answered: killed at once, it lost the
  semaphores it had made (tqdm makes one in every ``torch.fx`` interpreter run) without
  unlinking them, and the resource tracker warned of "leaked semaphore objects" at the
  caller's exit.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from wattwise import errors
from wattwise._core import first_line

TAME_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"
# A child's log keeps its first LOG_MAX_BYTES and its last LOG_TAIL_BYTES (where a traceback
# is); what lies between is dropped, and the log says how much.
LOG_MAX_BYTES = 8 * 2**20
LOG_TAIL_BYTES = 64 * 2**10
# How long a child that has answered may take to exit on its own before it is killed. Its
# exit runs the finalizers that unlink its semaphores; a torch child's takes well under 1 s.
EXIT_GRACE_S = 10.0
_logged = False  # this process's fd 1 and 2 were sent to a log by run_isolated


class IsolationError(errors.WorkloadError):
    """The child process crashed, was killed or ran out of time.

    Attributes:
        reason: ``"crash"``, ``"killed"`` or ``"timeout"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Imported once by the fork server, so that no child pays for them. torch._dynamo is there
# because counting MACs (FlopCounterMode) and torch.export import it in most children.
_PRELOAD = ["torch", "torch._dynamo", "wattwise.measure._harness"]
_server_tunables: str | None = None  # GLIBC_TUNABLES the fork server was started with


def preload(*modules: str) -> None:
    """Ask the fork server to import ``modules`` when it starts (no effect once it has).

    A module that fails to import there is skipped; the child imports it itself.
    """
    for name in modules:
        if name not in _PRELOAD:
            _PRELOAD.append(name)


def _start_method() -> str:
    wanted = os.environ.get("WATTWISE_START_METHOD", "forkserver")
    if wanted not in ("forkserver", "spawn"):
        raise errors.InputError(
            f"WATTWISE_START_METHOD={wanted!r} is not a start method: use forkserver or spawn"
        )
    if wanted == "forkserver" and "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


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


def output_is_logged() -> bool:
    """Whether this process is a child of :func:`run_isolated` whose stdout and stderr go to a
    log file (so nothing it writes can reach the caller's terminal)."""
    return _logged


def _send_output_to(out: Connection) -> None:
    """Point fd 1 and 2 at ``out`` (the pipe to the parent's log writer), for Python and C."""
    global _logged
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    out.close()
    # Line by line, so the log holds what was printed up to a crash.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _logged = True


class _Fds:
    """File descriptors of the caller's that the child gets when it starts, whatever the start
    method (multiprocessing sends them with the child, duplicated)."""

    def __init__(self, *fds: int) -> None:
        self.fds = fds

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return (_received_fds, tuple(reduction.DupFd(fd) for fd in self.fds))


def _received_fds(*dups: Any) -> list[int]:
    return [dup.detach() for dup in dups]


def _hold_lifeline(fd: int) -> None:
    """Kill this child when its caller dies: the caller holds the pipe's other end, and the
    kernel closes it when the caller exits, however it exits (kill -9 included). An orphaned
    trial would otherwise run, and hold the device's measurement lock, for minutes. The caller
    closes its end only once this child has exited."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="wattwise-lifeline", daemon=True).start()


def _point_std_fds(out: int, err: int) -> None:
    """Write where the caller's fd 1 and 2 point now (a forked child would otherwise write
    where the fork server's did when it started)."""
    for fd, target in ((out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)


def _adopt(env: dict[str, str]) -> None:
    """Make this (forked) child's environment the caller's, as a spawned child's would be."""
    os.environ.clear()
    os.environ.update(env)


def _child_main(
    conn: Connection,
    out: Connection | None,
    payload: bytes,
    fds: list[int],
    env: dict[str, str] | None = None,
) -> None:
    try:
        _hold_lifeline(fds[0])
        if env is not None:  # forked from the server
            if os.environ.get("GLIBC_TUNABLES") != env.get("GLIBC_TUNABLES"):
                conn.send(("respawn",))  # a server started with other tunables: not ours
                return
            _adopt(env)
            _point_std_fds(fds[1], fds[2])
        if out is not None:
            _send_output_to(out)
        # Unpickled only now, with the output redirected: unpickling imports the user's
        # modules, and their import-time prints belong in the log too.
        func, args = pickle.loads(payload)
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
    log_path: str | os.PathLike[str] | None = None,
) -> Any:
    """Call ``func(*args)`` in a spawned child and return its result.

    ``func`` and ``args`` must pickle (module-level functions, importable classes).

    Args:
        log_path: send the child's stdout and stderr (fd 1 and 2) to this file, appended to,
            its directory made if need be; the file keeps at most about :data:`LOG_MAX_BYTES`
            (its start and its end) and says what it dropped. ``None``: the child writes
            where this process does.

    Raises:
        InputError: the payload cannot be sent to a child (e.g. a lambda).
        IsolationError: the child crashed, was killed or timed out.
        WattwiseError subclasses raised in the child are re-raised with their message.
    """
    try:
        payload = pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise _unpicklable(what, exc) from None
    message = _run_child(_start_method(), payload, threads, timeout_s, what, log_path)
    if message[0] == "respawn":
        message = _run_child("spawn", payload, threads, timeout_s, what, log_path)
    status = message[0]
    if status == "ok":
        return message[1]
    _, kind, text, tb = message
    first = first_line(text)
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


def _run_child(
    method: str,
    payload: bytes,
    threads: int | None,
    timeout_s: float,
    what: str,
    log_path: str | os.PathLike[str] | None,
) -> tuple[Any, ...]:
    """Start one child by ``method``, wait for its message and for it to exit."""
    global _server_tunables
    ctx: Any = mp.get_context(method)  # Spawn or ForkServer context: both make Processes
    env = child_env(threads)
    args: tuple[Any, ...] = ()
    if method == "forkserver":
        if _server_tunables is None:
            ctx.set_forkserver_preload(list(_PRELOAD))
            _server_tunables = env["GLIBC_TUNABLES"]
        elif _server_tunables != env["GLIBC_TUNABLES"]:
            return ("respawn",)
    life_read, life_write = os.pipe()
    fds = _Fds(life_read, 1, 2) if method == "forkserver" else _Fds(life_read)
    if method == "forkserver":
        args = (dict(os.environ, **env),)
    recv, send = ctx.Pipe(duplex=False)
    log = _LogWriter(Path(log_path), ctx) if log_path is not None else None
    proc = ctx.Process(
        target=_child_main,
        args=(send, log.child_end if log else None, payload, fds, *args),
        daemon=True,
    )
    try:
        # The environment a spawned child (or the fork server, at its start) copies.
        with _environ(env):
            proc.start()
    except Exception as exc:
        recv.close()
        send.close()
        os.close(life_read)
        os.close(life_write)
        if log is not None:
            log.close()
        raise _unpicklable(what, exc) from None
    send.close()
    os.close(life_read)
    if log is not None:
        log.start()
    try:
        message = _receive(recv, proc, timeout_s, what)
        proc.join(EXIT_GRACE_S)  # let it exit by itself: see the module's docstring
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        os.close(life_write)  # the child has exited (or is beyond help): see _hold_lifeline
        if log is not None:
            log.close()
    return message


def _unpicklable(what: str, exc: Exception) -> errors.InputError:
    return errors.InputError(
        f"cannot send the {what} to a child process ({type(exc).__name__}: {exc}); "
        "use a picklable model or factory, or isolate=False"
    )


class _LogWriter:
    """Copies a child's output from a pipe into a log file, in a thread of the parent (so a
    child that crashes loses nothing it wrote), keeping the file's first
    :data:`LOG_MAX_BYTES` and the last :data:`LOG_TAIL_BYTES` of the output after them."""

    def __init__(self, path: Path, ctx: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("ab")
        self.room = max(0, LOG_MAX_BYTES - self.file.tell())  # appended calls share the cap
        self.read_end, self.child_end = ctx.Pipe(duplex=False)
        self.thread = threading.Thread(target=self._copy, name="wattwise-child-log", daemon=True)

    def start(self) -> None:
        self.child_end.close()  # the child holds its own copy: EOF comes when it exits
        self.thread.start()

    def _copy(self) -> None:
        fd = self.read_end.fileno()
        tail = bytearray()
        dropped = 0
        try:
            # A full disk or a closed pipe ends the copy; the child's own work goes on.
            with contextlib.suppress(OSError, ValueError):
                while chunk := os.read(fd, 1 << 16):
                    if self.room:
                        kept, chunk = chunk[: self.room], chunk[self.room :]
                        self.file.write(kept)
                        self.file.flush()
                        self.room -= len(kept)
                    tail += chunk
                    if len(tail) > LOG_TAIL_BYTES:
                        dropped += len(tail) - LOG_TAIL_BYTES
                        del tail[: len(tail) - LOG_TAIL_BYTES]
                if dropped:
                    note = (
                        f"\n[wattwise: {dropped} bytes of output dropped here; the log keeps "
                        f"its first {LOG_MAX_BYTES // 2**20} MiB and the last "
                        f"{LOG_TAIL_BYTES // 2**10} KiB]\n"
                    )
                    self.file.write(note.encode())
                self.file.write(bytes(tail))
        finally:
            with contextlib.suppress(OSError):
                self.file.close()

    def close(self) -> None:
        """Wait (briefly) for the copy to end: a grandchild still holding the pipe open keeps it
        running, writing into the capped file, until that one exits too."""
        self.child_end.close()
        if self.thread.is_alive():
            self.thread.join(5)
        if not self.thread.is_alive():
            self.read_end.close()
            if not self.file.closed and not self.thread.ident:  # never started
                self.file.close()


def log_tail(path: str | os.PathLike[str], lines: int = 20, max_chars: int = 2000) -> str:
    """The last ``lines`` lines of a log (each cut to 300 characters, ``max_chars`` in all),
    or ``""`` if it is missing or empty: to show with a failure."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * max_chars))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line[:300] for line in text.splitlines() if line.strip()][-lines:]
    out = "\n".join(kept)
    return out[-max_chars:]


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
