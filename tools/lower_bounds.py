"""Print pip constraints that pin every dependency in pyproject.toml to its declared lower bound.

``make lower-bounds`` installs wattwise with these constraints into ``.venv-lower`` and runs the
test suite there, so a lower bound we declare is a version the suite has passed on (see
``docs/dependencies.md``). A requirement without a lower bound, or with ``==``, is pinned as
written; extras are followed (``wattwise[compress,...]`` names this project's own groups).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*)$")


def lower_bounds(
    pyproject: Path = ROOT / "pyproject.toml", groups: tuple[str, ...] = ("dev",)
) -> dict[str, str]:
    """``{distribution: "==version"}`` for the runtime dependencies and the given extras."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    pending = list(project["dependencies"])
    seen_groups: set[str] = set()
    for group in groups:
        pending.extend(extras[group])
        seen_groups.add(group)
    pins: dict[str, str] = {}
    while pending:
        match = _REQUIREMENT.match(pending.pop(0))
        if match is None:
            continue
        name, extra, spec = match.groups()
        if name == project["name"]:  # our own extras: follow them
            for group in (extra or "[]").strip("[]").split(","):
                group = group.strip()
                if group and group not in seen_groups:
                    seen_groups.add(group)
                    pending.extend(extras[group])
            continue
        bound = re.search(r"(>=|==)\s*([^,;\s]+)", spec)
        if bound is None:
            continue  # no lower bound declared: take what pip resolves
        pins[name.lower()] = f"=={bound.group(2)}"
    return pins


def main() -> None:
    for name, pin in sorted(lower_bounds().items()):
        print(f"{name}{pin}")


if __name__ == "__main__":
    main()
