"""Settings for the whole suite."""

import os

from hypothesis import settings

# CI must be reproducible: property tests draw the same examples on every run (set
# HYPOTHESIS_PROFILE=explore to search afresh while developing).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
