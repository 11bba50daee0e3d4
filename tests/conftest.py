"""Test configuration shared by every test module."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# One named profile for the whole suite: enough examples to find edge cases in
# the closed forms, no example database (nothing is written into the tree),
# and no deadline because the first call of a jitted scipy routine is slow.
settings.register_profile(
    "retrystorm",
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("retrystorm"),
    max_examples=1000,
)
settings.load_profile(os.environ.get("RETRYSTORM_HYPOTHESIS_PROFILE", "retrystorm"))
