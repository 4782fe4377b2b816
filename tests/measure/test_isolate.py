"""run_isolated's children: real forked and spawned children, real pipes, real semaphores.

* With ``log_path``, everything the child writes (print, sys.stderr, fd-level and C-library
  writes, warnings, even at import time of its modules) lands in the log, none of it in the
  caller's stdout or stderr; the log is capped, keeping its start and its end.
* A child forked from the fork server gets what a spawned one would: the caller's environment,
  path and directory at the call, its stdout and stderr; and dies with its caller.
* A child that has answered is left to exit by itself, so the semaphores its libraries made
  are unlinked and the resource tracker has no "leaked semaphore" to warn about.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from wattwise.errors import InputError
from wattwise.measure import IsolationError, run_isolated
from wattwise.measure._isolate import (
    LOG_MAX_BYTES,
    LOG_TAIL_BYTES,
    TAME_MALLOC,
    log_tail,
    output_is_logged,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def noisy(marker: str) -> bool:
    print(f"{marker} print")
    sys.stderr.write(f"{marker} sys.stderr\n")
    os.write(1, f"{marker} fd1\n".encode())
    os.write(2, f"{marker} fd2\n".encode())
    libc = ctypes.CDLL(None)
    libc.puts(f"{marker} libc".encode())
    libc.fflush(None)
    warnings.warn(f"{marker} warning", UserWarning, stacklevel=1)
    return output_is_logged()


def floods(megabytes: int) -> str:
    line = b"x" * 1023 + b"\n"
    for _ in range(megabytes * 1024):
        os.write(1, line)
    print("the very end")
    return "done"


def prints_then_segfaults() -> None:
    for i in range(30):
        print(f"line {i}")
    os.kill(os.getpid(), signal.SIGSEGV)


def test_child_output_goes_to_the_log_not_to_ours(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "trial-0001.log"  # its directory is made
    assert run_isolated(noisy, "M1", log_path=log, what="trial") is True
    assert run_isolated(noisy, "M2", log_path=log, what="trial") is True  # appended
    ours = capfd.readouterr()
    assert "M1" not in ours.out + ours.err and "M2" not in ours.out + ours.err
    text = log.read_text()
    for marker in ("M1", "M2"):
        for how in ("print", "sys.stderr", "fd1", "fd2", "libc", "warning"):
            assert f"{marker} {how}" in text, (marker, how, text)
    # Without a log the child writes where we do (and says its output is not logged).
    assert run_isolated(noisy, "M3") is False
    assert "M3 fd1" in capfd.readouterr().out


def test_output_at_import_of_the_jobs_module_goes_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "chatty_module.py").write_text(
        "print('chatty at import')\n\ndef job():\n    return 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the child gets our sys.path
    import chatty_module

    capfd.readouterr()  # our own import printed it here: not what is checked
    log = tmp_path / "import.log"
    assert run_isolated(chatty_module.job, log_path=log) == 7
    ours = capfd.readouterr()
    assert "chatty" not in ours.out + ours.err
    assert "chatty at import" in log.read_text()


def test_log_is_capped_keeping_start_and_end(tmp_path: Path) -> None:
    log = tmp_path / "flood.log"
    assert run_isolated(floods, 20, log_path=log) == "done"
    size = log.stat().st_size
    assert LOG_MAX_BYTES < size < LOG_MAX_BYTES + LOG_TAIL_BYTES + 1024, size
    text = log.read_text()
    assert "bytes of output dropped here" in text
    assert text.startswith("x" * 1023)
    assert text.rstrip().endswith("the very end")
    assert log_tail(log, lines=3).splitlines()[-1] == "the very end"


def test_crashing_child_leaves_its_output_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    with pytest.raises(IsolationError, match="SIGSEGV"):
        run_isolated(prints_then_segfaults, log_path=log, what="trial")
    tail = log_tail(log)
    assert tail.splitlines() == [f"line {i}" for i in range(10, 30)]
    assert log_tail(tmp_path / "missing.log") == ""


# A job whose library makes a semaphore (tqdm's write lock: torch.fx makes one in every run of
# its interpreter, which torch.compile and PT2E quantization use), in a process whose exit
# takes a moment, as a torch child's does (stood for here by a finalizer that sleeps first).
LEAK_SCRIPT = """
import multiprocessing.util, sys, time
import tqdm
from wattwise.measure import _isolate

def job():
    tqdm.tqdm.get_lock()
    multiprocessing.util.Finalize(None, time.sleep, (0.5,), exitpriority=100)
    return "ok"

if __name__ == "__main__":
    _isolate.EXIT_GRACE_S = float(sys.argv[1])
    for _ in range(2):
        assert _isolate.run_isolated(job) == "ok"
"""


def _run_leak_script(tmp_path: Path, grace_s: float) -> str:
    script = tmp_path / "leak_job.py"
    script.write_text(textwrap.dedent(LEAK_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(SRC)]))
    done = subprocess.run(
        [sys.executable, str(script), str(grace_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_children_leave_no_leaked_semaphores(tmp_path: Path) -> None:
    # Killed as soon as they answer (no grace), the children die before unlinking their
    # semaphores and the tracker warns: the reproducer reproduces.
    assert "leaked semaphore" in _run_leak_script(tmp_path, 0.0)
    # Left to exit, they clean up after themselves.
    stderr = _run_leak_script(tmp_path, 10.0)
    assert "leaked semaphore" not in stderr and "resource_tracker" not in stderr, stderr


# ------------------------------------------------------------------ the fork server's children


def environment(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def where_am_i() -> tuple[str, list[str]]:
    return os.getcwd(), list(sys.path)


def test_each_child_gets_the_callers_environment_path_and_directory_at_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork server started long before these calls (or with the first): what it had then
    must not leak into a child, as a spawned child would not see it either."""
    assert run_isolated(environment, "HOME")["HOME"] == os.environ.get("HOME")  # server up
    monkeypatch.setenv("WATTWISE_ISOLATE_PROBE", "set after the server started")
    monkeypatch.delenv("HOME", raising=False)
    got = run_isolated(environment, "WATTWISE_ISOLATE_PROBE", "HOME", "GLIBC_TUNABLES", threads=1)
    assert got["WATTWISE_ISOLATE_PROBE"] == "set after the server started"
    assert got["HOME"] is None
    assert got["GLIBC_TUNABLES"] == os.environ.get("WATTWISE_GLIBC_TUNABLES", TAME_MALLOC)
    assert "OMP_NUM_THREADS" not in os.environ  # set for the child only
    assert run_isolated(environment, "OMP_NUM_THREADS", threads=1)["OMP_NUM_THREADS"] == "1"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "added"))
    cwd, path = run_isolated(where_am_i)
    assert cwd == str(tmp_path)
    assert str(tmp_path / "added") in path


def test_other_allocator_tunables_get_a_child_started_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GLIBC_TUNABLES act when a process starts: a child that needs others than the fork
    server's is spawned afresh with them."""
    run_isolated(environment, "HOME")  # the server is up with the default tunables
    other = "glibc.malloc.trim_threshold=1048576"
    monkeypatch.setenv("WATTWISE_GLIBC_TUNABLES", other)
    assert run_isolated(environment, "GLIBC_TUNABLES")["GLIBC_TUNABLES"] == other


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_start_method_can_be_chosen(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTWISE_START_METHOD", method)
    assert run_isolated(environment, "WATTWISE_START_METHOD") == {"WATTWISE_START_METHOD": method}


def test_an_unknown_start_method_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTWISE_START_METHOD", "fork")
    with pytest.raises(InputError, match=r"WATTWISE_START_METHOD='fork' is not a start method"):
        run_isolated(environment, "HOME")


ORPHAN_SCRIPT = """
import os, sys, time
from pathlib import Path
from wattwise.measure import run_isolated

def held(pid_file):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    run_isolated(held, sys.argv[1], timeout_s=300)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_dies_with_its_caller_killed_with_sigkill(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's kill -9 takes its child with it, and the fork server: nothing is left
    holding the caller's stdout open (a pipe reader waiting for EOF would wait for ever)."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    pid_file = tmp_path / "child.pid"
    env = dict(os.environ, PYTHONPATH=str(SRC), WATTWISE_START_METHOD=method)
    caller = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            assert caller.poll() is None, caller.communicate()
            time.sleep(0.1)
        child = int(pid_file.read_text())
        caller.kill()
        caller.communicate(timeout=30)  # EOF: no child or server holds the pipes
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        caller.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
