"""Hypothesis profiles for the fuzz tests.

The default profile keeps ``make test`` fast; ``FLEETCAST_LONG_FUZZ=1`` runs
many more examples per property (CI's long job, or before a release).
``FLEETCAST_FUZZ_EXAMPLES=N`` overrides the count either way.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("FLEETCAST_LONG_FUZZ") == "1"
EXAMPLES = int(os.environ.get("FLEETCAST_FUZZ_EXAMPLES", "2000" if LONG else "150"))

settings.register_profile(
    "fleetcast",
    max_examples=EXAMPLES,
    # A generous per-example deadline: a hang or a quadratic blow-up still fails,
    # a slow CI machine does not.
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fleetcast")
