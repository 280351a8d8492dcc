"""Shared test setup: hypothesis profiles and the bitsandbytes skip marker.

HYPOTHESIS_PROFILE=ci (default: few examples, no deadline) or dev (thorough).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def bnb():
    """The bitsandbytes adapter, or a skip naming why it is unavailable."""
    from conformance.peers import bitsandbytes as bnb

    ok, info = bnb.available()
    if not ok:
        pytest.skip(info)
    return bnb
