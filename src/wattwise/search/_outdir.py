"""Output directories of ``optimize``, ``worker`` and ``report``: created, checked ours, writable.

wattwise replaces what it writes there (``results.json``, ``trials.csv``, ``report.html`` by a
rename, ``artifact/`` as a whole directory), so it must never write into a directory that
holds anything else: a user's ``DIR/artifact/notes.txt`` or their own ``DIR/report.html``
would be gone without a word. The rule, checked before any work is done:

* a new or empty directory is fine;
* a directory with wattwise's marker (``.wattwise-out.json``, written here) is fine if every
  entry in it is a name the marker owns, or a temporary sibling of one that a killed run left
  (``.results.json.x1y2.tmp``, ``.artifact.tmp-x1y2``);
* a directory from before the marker existed is fine if every entry has a name wattwise writes
  and, if report files are there, its ``results.json`` is a wattwise results file;
* ``artifact/`` holds only the files its own ``deployment.json`` lists, the manifest and the
  model card, whichever of the above applies;
* symbolic links are never ours: wattwise writes none.

Anything else is refused with one line naming what is in the way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from wattwise._fs import (
    OUT_MARKER,
    decode_utf8,
    parse_json,
    plain_name,
    read_bounded,
    read_out_marker,
    record_outputs,
    write_out_marker,
)
from wattwise.errors import InputError
from wattwise.search._check import load_results

__all__ = ["ARTIFACT_DIR", "OUTPUT_NAMES", "check_out_dir", "record_outputs"]

ARTIFACT_DIR = "artifact"
# Every name wattwise may write in an output directory, and as what. The marker claims all of
# them up front: a run killed after writing one and before recording it must still find it
# its own on the rerun.
OUTPUT_NAMES: dict[str, str] = {
    "results.json": "file",
    "trials.csv": "file",
    "report.html": "file",
    # wattwise train's
    "training.json": "file",
    "training.html": "file",
    # the default storage (sqlite:///OUT/wattwise.db) and SQLite's side files
    "wattwise.db": "file",
    "wattwise.db-journal": "file",
    "wattwise.db-wal": "file",
    "wattwise.db-shm": "file",
    ARTIFACT_DIR: "dir",
    "cache": "dir",
    "logs": "dir",
    OUT_MARKER: "file",
}
REPORT_FILES = ("results.json", "trials.csv", "report.html")
# What wattwise.deploy.export_deployment writes besides the files its manifest lists.
ARTIFACT_OWN_FILES = ("deployment.json", "MODEL_CARD.md")
MAX_MANIFEST_BYTES = 4 << 20
# The probe file older versions made to test writing (the marker's write does that now).
_OLD_PROBE = ".wattwise-write-test-"
_SHOWN = 3  # names quoted in the error line; the rest are counted
_LISTED = 100  # foreign entries looked for before the error is raised ("and 97+ more")


def check_out_dir(out: Path, *, storage: str | None = None) -> bool:
    """Create ``out`` if needed, make sure it is wattwise's and writable, and mark it ours.

    Args:
        out: the output directory.
        storage: the study's storage URL when the caller gave one: an ``sqlite:///`` file
            directly in ``out`` is then one of its names too.

    Returns:
        Whether ``out`` was made now (a caller that fails later removes it).

    Raises:
        InputError: ``out`` is not a directory, cannot be made or written, or holds anything
            wattwise did not write (see the module docstring).
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out} exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    extra = _storage_names(out, storage)
    owned = set() if created else set(_owned_names(out, extra))
    try:
        # Writing the marker is also the test that we can write here.
        write_out_marker(out, owned | set(OUTPUT_NAMES) | extra)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise InputError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    return created


def _owned_names(out: Path, extra: set[str]) -> frozenset[str]:
    """The names ``out``'s marker owns (the known names for a directory without one), after
    checking every entry of ``out`` is one of them; raises :class:`InputError` otherwise."""
    marker = read_out_marker(out)
    owned = (marker if marker is not None else frozenset(OUTPUT_NAMES)) | extra
    foreign: list[str] = []
    try:
        with os.scandir(out) as entries:
            for entry in entries:
                if not _ours(entry, owned):
                    foreign.append(entry.name)
                    if len(foreign) > _LISTED:  # enough to say so; a directory can be huge
                        break
    except OSError as exc:
        raise InputError(f"cannot list output directory {out}: {exc.strerror or exc}") from None
    artifact = out / ARTIFACT_DIR
    if ARTIFACT_DIR not in foreign and artifact.is_dir() and not artifact.is_symlink():
        foreign += _foreign_in_artifact(artifact)
    if foreign:
        raise InputError(
            f"output directory {out} holds files wattwise did not write ({_names(sorted(foreign))}); "
            "wattwise writes only into a new or empty directory or one it wrote itself: "
            "choose another output directory or move them away"
        )
    if marker is None:
        _check_old_results(out)
    return owned


def _ours(entry: os.DirEntry[str], owned: frozenset[str]) -> bool:
    name = entry.name
    if entry.is_symlink():
        return False
    if name in owned:
        kind = OUTPUT_NAMES.get(name)
        if kind == "file":
            return entry.is_file(follow_symlinks=False)
        if kind == "dir":
            return entry.is_dir(follow_symlinks=False)
        return True  # a name a marker owns that this version does not write: leave it be
    # Temporary siblings of an owned name, left by a run killed mid-write: the atomic writer's
    # ".NAME.xxxx.tmp", export's ".artifact.tmp-xxxx" and ".artifact.old-xxxx".
    if name.startswith(".") and any(name.startswith(f".{n}.") for n in owned):
        return True
    return name.startswith(_OLD_PROBE) and name[len(_OLD_PROBE) :].isdigit()


def _foreign_in_artifact(artifact: Path) -> list[str]:
    """Entries of ``artifact/`` that its manifest does not account for (all of them when it
    has no manifest wattwise could have written)."""
    try:
        names = [(e.name, e.is_file(follow_symlinks=False)) for e in os.scandir(artifact)]
    except OSError as exc:
        raise InputError(f"cannot list {artifact}: {exc.strerror or exc}") from None
    if not names:
        return []
    listed: set[str] = set()
    with contextlib.suppress(InputError):
        manifest = artifact / ARTIFACT_OWN_FILES[0]
        raw = read_bounded(manifest, MAX_MANIFEST_BYTES, follow_symlinks=False)
        doc = parse_json(decode_utf8(raw, what=str(manifest)), what=str(manifest))
        files = doc.get("files") if isinstance(doc, dict) and doc.get("schema") == 1 else None
        if isinstance(files, dict):
            listed = {*ARTIFACT_OWN_FILES, *(n for n in files if plain_name(n))}
    return [
        f"{ARTIFACT_DIR}/{name}" for name, is_file in names if not is_file or name not in listed
    ]


def _check_old_results(out: Path) -> None:
    """A directory without a marker whose report files are there must hold a wattwise
    ``results.json``: report files beside none (or beside another kind of JSON) are not ours."""
    present = [n for n in REPORT_FILES if (out / n).exists()]
    if not present:
        return
    try:
        load_results(out / "results.json")
    except InputError:
        raise InputError(
            f"output directory {out} holds report files ({_names(present)}) but no wattwise "
            "results.json and no wattwise marker: choose another output directory"
        ) from None


def _storage_names(out: Path, storage: str | None) -> set[str]:
    """An ``sqlite:///`` storage file directly in ``out``, with SQLite's side files."""
    if not storage or not storage.startswith("sqlite:///"):
        return set()
    path = Path(unquote(storage[len("sqlite:///") :].split("?", 1)[0]))
    try:
        inside = path.resolve().parent == out.resolve()
    except (OSError, RuntimeError):
        return set()
    if not inside or not plain_name(path.name):
        return set()
    return {path.name, *(f"{path.name}-{s}" for s in ("journal", "wal", "shm"))}


def _names(names: Iterable[str]) -> str:
    """Up to three names as they would be typed, the rest counted: file names can hold
    anything, an escape sequence or a newline included, and the error is one line."""
    items = list(names)
    shown = [n if n.isprintable() else ascii(n)[1:-1] for n in items[:_SHOWN]]
    shown = [n if len(n) <= 60 else n[:59] + "…" for n in shown]
    plus = "+" if len(items) > _LISTED else ""
    more = f" and {len(items) - _SHOWN}{plus} more" if len(items) > _SHOWN else ""
    return ", ".join(shown) + more
