"""Shared setup of qref's own tests (this folder only; not installed): hypothesis profiles and the
peer-library skip fixtures.

HYPOTHESIS_PROFILE=ci (default: 40 derandomized examples, no database) or dev (thorough). The
conformance suite (qref.conformance) carries its own settings, chosen by --qref-profile.
"""
import os

import pytest
from hypothesis import settings

from qref.conformance.hsettings import PROFILES

for _name, _settings in PROFILES.items():
    settings.register_profile(f"qref-{_name}", _settings)
settings.load_profile(f"qref-{os.environ.get('HYPOTHESIS_PROFILE', 'ci')}")


def peer_or_skip(name: str):
    """The adapter module conformance.peers.<name>, or a skip naming why the library is unavailable."""
    import importlib

    peer = importlib.import_module(f"qref.conformance.peers.{name}")
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
