"""Helpers the search tests import by name (a conftest is not importable reliably: every
test folder has one, and whichever was imported first answers ``import conftest``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def subprocess_env() -> dict[str, str]:
    """Environment for ``python -m wattwise`` subprocesses: find this package and the test tasks."""
    env = dict(os.environ)
    paths = [str(HERE), str(SRC), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("COLUMNS", None)
    return env


def wattwise_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wattwise", *args]
