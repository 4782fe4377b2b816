"""Files written whole or not at all: temporary siblings renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def temp_dir_beside(target: Path, tag: str = "tmp") -> Path:
    """A new, empty directory next to ``target`` (same filesystem, so a rename is atomic).

    ``mkdtemp`` makes it private (0700); it gets the ordinary mode the user's umask gives, so
    the directory renamed into place looks like any other the user made.
    """
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    path.chmod(0o777 & ~_umask())
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename.

    Readers see the old file or the new one, never half of one, even if we are killed mid-way.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777  # keep the mode of the file we replace
    except FileNotFoundError:
        mode = 0o666 & ~_umask()  # what open() would have given a new file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            # mkstemp makes 0600 files; a report is meant to be read by others.
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
