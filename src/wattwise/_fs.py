"""Files written whole or not at all: temporary siblings renamed into place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_dir_beside(target: Path, tag: str = "tmp") -> Path:
    """A new, empty directory next to ``target`` (same filesystem, so a rename is atomic).

    ``mkdtemp`` makes it private (0700); it gets the ordinary mode the user's umask gives, so
    the directory renamed into place looks like any other the user made.
    """
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path
