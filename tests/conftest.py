"""Settings shared by every test folder. Fixtures live next to the tests that use them."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "ci" is slower and reproducible; pick a profile with HYPOTHESIS_PROFILE=...
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
