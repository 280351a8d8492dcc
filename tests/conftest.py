"""Shared test setup: hypothesis profiles and the bitsandbytes skip marker.

HYPOTHESIS_PROFILE=ci (default: few examples, no deadline) or dev (thorough).
"""
import pytest

# The profiles (ci: 40 examples, no example database; gpu: 200; dev: 1000) are registered and
# loaded by the conformance plugin (conformance/plugin.py), which pytest loads by entry point.


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
