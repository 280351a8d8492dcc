"""Shared test setup: hypothesis profiles and the bitsandbytes skip marker.

HYPOTHESIS_PROFILE=ci (default: few examples, no deadline) or dev (thorough).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def peer_or_skip(name: str):
    """The adapter module conformance.peers.<name>, or a skip naming why the library is unavailable."""
    import importlib

    peer = importlib.import_module(f"conformance.peers.{name}")
    ok, info = peer.available()
    if not ok:
        pytest.skip(info)
    return peer


@pytest.fixture(scope="session")
def bnb():
    return peer_or_skip("bitsandbytes")


@pytest.fixture(scope="session")
def ag():
    return peer_or_skip("autogptq")
