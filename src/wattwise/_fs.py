"""Files written whole or not at all: temporary siblings renamed into place."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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


# ----------------------------------------------------------------------------- bounded reads
# Files wattwise reads from places the user controls (results.json, a --space file, the
# marker in an output directory, an artifact's manifest) can be anything: /dev/zero, a FIFO no
# one writes, a 1 GB file, 100k nested brackets. They are read with a size limit, only as
# regular files, and parsed with limits on depth, so the answer is one line, never a hang or
# an out-of-memory kill.

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def read_bounded(
    path: str | os.PathLike[str],
    limit_bytes: int,
    *,
    what: str = "",
    follow_symlinks: bool = True,
) -> bytes:
    """The bytes of the regular file at ``path`` if it holds at most ``limit_bytes``.

    Raises :class:`~wattwise.errors.InputError` ``"cannot read <what> <path>: <reason>"`` for a
    missing or unreadable file, one that is not a regular file (a directory, a FIFO, a device),
    one that is too big, and with ``follow_symlinks=False`` a symbolic link.

    Why O_NONBLOCK: opening a FIFO for reading waits for a writer, forever if there is none;
    non-blocking, the open returns at once and fstat says what it is.

    Example:
        >>> read_bounded("/dev/zero", 1024)  # doctest: +SKIP
        InputError: cannot read /dev/zero: it is a character device, not a regular file
    """
    from wattwise.errors import InputError

    shown = f"{what} {os.fsdecode(path)}" if what else os.fsdecode(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        if not follow_symlinks and stat.S_ISLNK(os.lstat(path).st_mode):
            raise InputError(f"cannot read {shown}: it is a symbolic link, not a regular file")
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"cannot read {shown}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(
                f"cannot read {shown}: it is {_kind(info.st_mode)}, not a regular file"
            )
        if info.st_size > limit_bytes:
            raise InputError(
                f"cannot read {shown}: it holds {_size(info.st_size)}, more than the "
                f"{_size(limit_bytes)} wattwise reads"
            )
        chunks: list[bytes] = []
        got = 0
        # Read to the limit, not to st_size: a file may grow while we read it.
        while got <= limit_bytes:
            chunk = os.read(fd, min(1 << 20, limit_bytes + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if got > limit_bytes:
        raise InputError(
            f"cannot read {shown}: it holds more than the {_size(limit_bytes)} wattwise reads"
        )
    return b"".join(chunks)


def decode_utf8(data: bytes, *, what: str) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped: Windows editors write one), or an
    :class:`~wattwise.errors.InputError` naming what the bytes look like instead."""
    from wattwise.errors import InputError

    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
        raise InputError(f"{what} is UTF-16 or UTF-32 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text (byte {exc.start})") from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return False
                stack.append((child, depth + 1))
    return True


def parse_json(text: str, *, what: str, max_depth: int = 64) -> Any:
    """JSON ``text`` parsed, refusing what ``json.loads`` would take silently or fail on with
    a traceback: a duplicate key (which of the two counts depends on the reader), a number
    past Python's 4300-digit limit, nesting deeper than ``max_depth``. ``NaN`` and
    ``Infinity`` are parsed; callers that read figures refuse them by name.

    Raises:
        InputError: one line, starting with ``what``.
    """
    from wattwise.errors import InputError

    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not JSON: {exc.msg} at line {exc.lineno}") from None
    except _DuplicateKey as exc:
        raise InputError(f"{what} has the key {_short(str(exc))!r} twice") from None
    except RecursionError:
        raise InputError(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError:  # int() refusing a number of more than 4300 digits (CVE-2020-10735)
        raise InputError(f"{what} holds a number with too many digits to read") from None
    if not _depth(data, max_depth):
        raise InputError(f"{what} nests deeper than {max_depth} levels")
    return data


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error line (names in files can be huge)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_yaml(text: str, *, what: str, max_depth: int = 32, max_nodes: int = 100_000) -> Any:
    """YAML (or JSON) ``text`` parsed with PyYAML's safe constructors, refusing aliases.

    Why no aliases: anchors and aliases let 600 bytes describe a billion-element list
    ("billion laughs"); ``safe_load`` builds it as shared references, and the first walk over
    it (``json.dumps``, a deep copy) runs out of memory. A config file has no need of them.
    Nesting and the number of nodes are bounded for the same reason, and the composer
    recurses once per level.

    Raises:
        InputError: one line, starting with ``what``: not YAML, an alias, too deep or too big,
            a tag other than the plain YAML types (``!!python/object``), or a number of more
            than 4300 digits.
    """
    import yaml

    from wattwise.errors import InputError

    class Loader(yaml.SafeLoader):
        depth = 0
        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InputError(
                    f"{what} uses a YAML alias (*name) at line {mark.line + 1}; "
                    "aliases are not allowed, write the value out"
                )
            self.depth += 1
            self.nodes += 1
            if self.depth > max_depth:
                raise InputError(f"{what} nests deeper than {max_depth} levels")
            if self.nodes > max_nodes:
                raise InputError(f"{what} holds more than {max_nodes} values")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # PyYAML keeps the last of two equal keys; which one a reader meant is a guess.
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    twice = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the constructor says so below
                    continue
                if twice:
                    raise InputError(
                        f"{what} has the key {_short(str(key))!r} twice "
                        f"(line {key_node.start_mark.line + 1})"
                    )
            return super().construct_mapping(node, deep=deep)

    loader = Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        problem = _short(" ".join(str(exc.problem or exc.context or "").split()), 120)
        line = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise InputError(f"{what} is not valid YAML/JSON: {problem}{line}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{what} is not valid YAML/JSON: {type(exc).__name__}") from None
    except RecursionError:
        raise InputError(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        # int() refusing a number of more than 4300 digits (CVE-2020-10735)
        raise InputError(f"{what} holds a number with too many digits to read") from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- output markers
# Each output directory wattwise writes (optimize, worker, report) holds this file, listing
# the names wattwise owns there; search/_outdir.py decides from it whether a directory is ours
# to write into. It lives here, below both search and report, because the report writer
# records its files in it too.

OUT_MARKER = ".wattwise-out.json"
OUT_MARKER_VERSION = 1
MAX_MARKER_BYTES = 64 << 10  # a few hundred names; the marker we write is under 1 KiB
MAX_MARKER_NAMES = 1000


def plain_name(name: object) -> bool:
    """Whether ``name`` is one entry of a directory: no separator, not ``.``/``..``, no NUL."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and "/" not in name
        and "\x00" not in name
    )


def read_out_marker(out: Path) -> frozenset[str] | None:
    """The names the marker in ``out`` says wattwise owns; ``None`` when there is no marker.

    The marker sits in a directory the user controls, so it is read as hostile: a regular
    file (not a link) of at most 64 KiB, JSON only, every name a plain entry name.

    Raises:
        InputError: the marker is there but is not one wattwise wrote.
    """
    from wattwise.errors import InputError

    path = Path(out) / OUT_MARKER
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    raw = read_bounded(path, MAX_MARKER_BYTES, follow_symlinks=False)
    doc = parse_json(decode_utf8(raw, what=str(path)), what=str(path), max_depth=4)
    names = doc.get("owns") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("wattwise_output_dir") != OUT_MARKER_VERSION
        or isinstance(doc.get("wattwise_output_dir"), bool)
        or not isinstance(names, list)
        or len(names) > MAX_MARKER_NAMES
        or not all(plain_name(n) for n in names)
    ):
        raise InputError(
            f"{path} is not a marker this wattwise wrote (expected "
            f'{{"wattwise_output_dir": {OUT_MARKER_VERSION}, "owns": [names]}}); '
            "choose another output directory"
        )
    return frozenset(names)


def write_out_marker(out: Path, names: Iterable[str]) -> Path:
    """Write the marker of ``out`` (atomically: a reader never sees half of it) owning
    ``names``, the marker itself included."""
    owned = sorted({*names, OUT_MARKER})
    bad = [n for n in owned if not plain_name(n)]
    if bad:
        raise ValueError(f"output names must be plain file names, got {bad[:3]!r}")
    doc = {
        "wattwise_output_dir": OUT_MARKER_VERSION,
        "about": "wattwise wrote this directory and owns the names below; it refuses to write "
        "into a directory that holds anything else",
        "owns": owned,
    }
    return atomic_write_text(Path(out) / OUT_MARKER, json.dumps(doc, indent=1) + "\n")


def record_outputs(out: Path, names: Iterable[str]) -> None:
    """Add ``names`` to the marker of ``out`` before they are written there.

    A folder without a marker is not a wattwise output directory (``render_report`` may be
    writing into any folder an API caller chose) and is left as it is. Recording comes
    before writing so that a kill between the two leaves a name owned but absent, never a
    file of ours that a rerun would take for the user's.

    Example:
        >>> record_outputs(Path("wattwise-out"), ["report.html"])  # doctest: +SKIP
    """
    owned = read_out_marker(out)
    if owned is None:
        return
    wanted = set(names)
    if not wanted <= owned:
        write_out_marker(out, owned | wanted)
