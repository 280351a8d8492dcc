"""pytest plugin (entry point pytest11): `--backend NAME[:DEVICE]` for the conformance suite,
hypothesis profiles, and the op x profile table at the end of the run.

    pytest --pyargs conformance --backend torch:cuda
    HYPOTHESIS_PROFILE=dev pytest --pyargs conformance --backend cupy
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                          database=None, derandomize=True)  # reproducible: same examples every run, no memory
settings.register_profile("dev", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("gpu", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def pytest_configure(config):
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--backend", action="store", default="numpy",
                     help="qref backend for the conformance suite, NAME[:DEVICE] (default numpy)")


@pytest.fixture(scope="session")
def backend(request):
    """The backend under test; the suite skips, with the reason, when it cannot run here."""
    from qref.registry import BackendUnavailable, get_backend

    spec = request.config.getoption("--backend")
    try:
        return get_backend(spec)
    except BackendUnavailable as e:
        pytest.skip(f"backend {spec} unavailable: {e}")


@pytest.fixture(scope="session")
def reference():
    from qref.numpy_backend import NumpyBackend

    return NumpyBackend()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from . import tally

    if tally.counts():
        spec = config.getoption("--backend")
        terminalreporter.write_line("")
        terminalreporter.write_line(tally.render(f"qref conformance: {spec} vs the reference "
                                                 "(cases include hypothesis' shrinking steps)"))
