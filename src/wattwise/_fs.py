"""Files written whole or not at all: temporary siblings renamed into place."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

# Errors that only writing raises and that say the output has no room or no place (file-size
# limit, full disk, quota, read-only file system), not that wattwise is broken: the CLI prints
# them as one plain line. EACCES is not here: reading raises it too.
STORAGE_ERRNOS = frozenset({errno.EFBIG, errno.ENOSPC, errno.EDQUOT, errno.EROFS})


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
    return atomic_write_texts({Path(path): text})[0]


def atomic_write_texts(files: Mapping[Path, str]) -> list[Path]:
    """Write several files all or none: every one goes to a temp sibling first, and only when
    all of them are whole are they renamed into place (a rename cannot run out of room).

    Why: a report is three files; a full disk after the first must not leave a results.json
    that no report.html or trials.csv goes with.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            temps.append((_write_temp(Path(path), text), Path(path)))
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return [path for _, path in temps]


def _write_temp(path: Path, text: str) -> str:
    """``text`` in a new temp file beside ``path`` with the mode ``path`` has (or would get)."""
    try:
        mode = path.stat().st_mode & 0o7777  # keep the mode of the file we replace
    except FileNotFoundError:
        mode = 0o666 & ~_umask()  # what open() would have given a new file
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            # mkstemp makes 0600 files; a report is meant to be read by others.
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            # A failed write names no file (EFBIG, ENOSPC): name the one the user asked for,
            # not our temporary sibling, which is gone.
            raise _naming(exc, path) from None
        raise
    return tmp


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error (same class, errno and text) about ``path``."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))


def storage_error_line(exc: BaseException) -> str | None:
    """One line for an error that says the output cannot be written where it was asked to go,
    naming the file; None for any other error.

    Why: "File too large" alone sends people looking for a big file; under ``ulimit -f`` the
    file is small and the limit is the cause, so the limit is named with it.

    Example:
        >>> storage_error_line(OSError(errno.ENOSPC, "No space left on device", "out/r.json"))
        'cannot write out/r.json: No space left on device'
    """
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    where = os.fsdecode(exc.filename) if exc.filename is not None else "the output"
    line = f"cannot write {where}: {exc.strerror or os.strerror(exc.errno or 0)}"
    limit = file_size_limit() if exc.errno == errno.EFBIG else None
    if limit is not None:
        line += f" (this process may write files of at most {limit} bytes: ulimit -f)"
    return line


def file_size_limit() -> int | None:
    """The largest file this process may write (RLIMIT_FSIZE, bytes); None if unlimited."""
    try:
        import resource
    except ImportError:  # not Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
