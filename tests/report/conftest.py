"""A realistic synthetic study for the report tests: what `wattwise optimize` hands the report.

Fourteen trials: Pareto points, dominated and infeasible ones, one estimated energy figure,
one completed row missing most figures, failed, pruned and running trials. User strings carry
HTML/script payloads and the storage URL a password, so every test exercises escaping and
redaction without asking for it.
"""

from __future__ import annotations

from typing import Any

import pytest
from report_study import make_study


@pytest.fixture
def study() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return make_study()
