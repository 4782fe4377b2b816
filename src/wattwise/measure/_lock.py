"""One measurement per device at a time, across processes: two workers measuring on one
machine would each see the other's joules."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from wattwise.errors import WattwiseError


def lock_dir() -> Path:
    path = Path(
        os.environ.get("WATTWISE_LOCK_DIR") or Path(tempfile.gettempdir()) / "wattwise-locks"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_path(device: str) -> Path:
    # All CPU work shares one lock: cores share the package's power and memory bandwidth.
    key = "cpu" if device.startswith("cpu") else re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    if key == "cuda":
        key = "cuda_0"
    return lock_dir() / f"{key}.lock"


@contextlib.contextmanager
def device_lock(device: str, *, timeout_s: float | None = None) -> Iterator[float]:
    """Hold the device's lock; yields the seconds spent waiting for it.

    The lock is an ``flock`` on a file, so the kernel releases it if the holder dies.
    """
    path = lock_path(device)
    start = time.monotonic()
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise WattwiseError(
                        f"timed out after {timeout_s:.0f} s waiting for the {device} measurement lock {path}"
                    ) from None
                time.sleep(0.05)
        try:
            yield time.monotonic() - start
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
