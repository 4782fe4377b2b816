"""mypy over tests/, benchmarks/ and tools/, one root at a time (``make lint`` runs it).

pytest imports the test files by bare name from their own folder (rootdir ``prepend`` import
mode; the folders have no ``__init__.py``), so tests/deploy, tests/report and tests/search each
hold a top-level module named ``conftest``, and ``mypy tests`` stops at the duplicate. Here
each folder is a root of its own, as pytest sees it: ``mypy tests/search`` names its files
``conftest``, ``search_tasks``, ... with tests/search on the search path, which is how their
``from search_helpers import ...`` resolves. The files directly in tests/ are one more root;
tests/passes is a package, so its modules are ``passes.*`` under tests/, as pytest imports
them. Every run reads pyproject.toml's ``[tool.mypy]`` settings and shares one ``.mypy_cache``,
so only the first run in a fresh checkout pays for parsing torch.

Usage: ``python tools/mypy_tests.py [mypy options]``, e.g. ``--cache-dir /tmp/cold`` to time a
run without a cache. Exits 1 if any root has errors (after checking them all).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# Folders a root imports from by bare name besides its own, as its files put them on sys.path
# at run time: tests/robustness/test_faults.py appends tests/search for the search helpers.
EXTRA_PATHS: dict[str, tuple[str, ...]] = {"tests/robustness": ("tests/search",)}


def roots() -> list[tuple[str, ...]]:
    """The mypy runs, as paths relative to the repository: the files directly in tests/
    together, then each folder of tests/ that holds Python files, benchmarks/ and tools/."""
    runs = [tuple(f"tests/{p.name}" for p in sorted(TESTS.glob("*.py")))]
    runs += [
        (f"tests/{d.name}",) for d in sorted(TESTS.iterdir()) if d.is_dir() and any(d.rglob("*.py"))
    ]
    return [*runs, ("benchmarks",), ("tools",)]


def check_extra_paths() -> None:
    """Fail on a stale EXTRA_PATHS: with ``ignore_missing_imports`` a helper that is no longer
    found would silently type as ``Any``."""
    for root, paths in EXTRA_PATHS.items():
        for path in (root, *paths):
            if not (ROOT / path).is_dir():
                raise SystemExit(f"tools/mypy_tests.py: EXTRA_PATHS names {path}, which is gone")


def run(root: tuple[str, ...], mypy_args: list[str]) -> int:
    """One mypy run over ``root``; its output goes to ours. Returns mypy's exit status."""
    env = dict(os.environ)
    extra = EXTRA_PATHS.get(root[0], ())
    if extra:
        env["MYPYPATH"] = os.pathsep.join(str(ROOT / p) for p in extra)
    cmd = [sys.executable, "-m", "mypy", *mypy_args, *root]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    check_extra_paths()
    failed = []
    start = time.perf_counter()
    for root in roots():
        print(f"mypy {' '.join(root)}", flush=True)
        if run(root, argv) != 0:
            failed.append(" ".join(root))
    took_s = time.perf_counter() - start
    if failed:
        print(f"mypy failed on: {', '.join(failed)} ({took_s:.0f} s)")
        return 1
    print(f"mypy: tests/, benchmarks/ and tools/ pass ({took_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
