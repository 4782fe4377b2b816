"""Output directories of ``optimize``, ``worker`` and ``report``: created, checked writable."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from wattwise.errors import InputError

__all__ = ["check_out_dir"]


def check_out_dir(out: Path) -> bool:
    """Create ``out`` if needed and make sure we can write there; returns whether we made it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out} exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    probe = out / f".wattwise-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise InputError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    return created
