"""Fixtures for the search tests: a private device-lock directory, and a real PostgreSQL server.

The PostgreSQL server is Debian's: ``initdb`` + ``pg_ctl`` run as the ``postgres`` user (via
``runuser``) on a free loopback port in a temporary directory, and are stopped afterwards. If
the binaries are missing and we are root, ``apt-get install -y postgresql`` is tried (``make
test`` installs it up front); a test needing the server is skipped, saying why, only when it
truly cannot run here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_lock_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other people's measurements on this machine hold the shared CPU lock for minutes; the
    # tests check the search, not the lock, so they measure under their own lock directory.
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return found[-1] if found else None


def _install_postgresql() -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        with contextlib.suppress(Exception):
            subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=600)
    return _initdb()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL server for this test session; yields its URL."""
    initdb = _initdb() or _install_postgresql()
    if initdb is None:
        pytest.skip(
            "PostgreSQL is not installed and could not be installed (needs root and apt-get)"
        )
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting PostgreSQL as the postgres user needs root and runuser")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="wattwise-pg-", dir="/tmp"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres")
    shutil.chown(sock, "postgres")
    port = _free_port()

    def as_postgres(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    init = as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=50"
    start = as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace")[-300:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"pg_ctl start failed: {start.stderr.strip()[-200:]} {log}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            time.sleep(0.2)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", timeout=60)
        shutil.rmtree(root, ignore_errors=True)
