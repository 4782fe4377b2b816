"""Grid carbon intensity: grams of CO2-equivalent per kWh, to turn joules into emissions.

Default: the world average, 480 gCO2e/kWh for 2023 (Ember, *Global Electricity Review 2024*,
https://ember-energy.org/latest-insights/global-electricity-review-2024/). Override with the
``grid_intensity_g_per_kwh`` argument, ``--grid-intensity`` on the CLI, or the environment
variable ``WATTWISE_GRID_G_PER_KWH``. Grids differ by 10x (hydro/nuclear ~30-60, coal-heavy
~700+): set your own figure when it matters.
"""

from __future__ import annotations

import math
import os

from wattwise.errors import InputError

WORLD_AVERAGE_G_PER_KWH = 480.0
_SOURCE = "Ember Global Electricity Review 2024 (world average, 2023)"
_J_PER_KWH = 3.6e6


def grid_intensity(override: float | None = None) -> tuple[float, str]:
    """Return ``(g CO2e per kWh, where the figure came from)``."""
    if override is not None:
        return _checked(override, "grid_intensity_g_per_kwh"), "user"
    env = os.environ.get("WATTWISE_GRID_G_PER_KWH")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise InputError(f"WATTWISE_GRID_G_PER_KWH={env!r} is not a number") from None
        return _checked(value, "WATTWISE_GRID_G_PER_KWH"), "env:WATTWISE_GRID_G_PER_KWH"
    return WORLD_AVERAGE_G_PER_KWH, _SOURCE


def co2e_g_per_million_items(energy_j_per_item: float, g_per_kwh: float) -> float:
    return energy_j_per_item * 1e6 / _J_PER_KWH * g_per_kwh


def _checked(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite, non-negative number, got {value!r}")
    return float(value)
