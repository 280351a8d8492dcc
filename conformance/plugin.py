"""pytest plugin (entry point pytest11, name `qref`): options and fixtures for the conformance suite.

It touches nothing it was not asked for: it adds only `--qref-`-prefixed options and `qref_`-prefixed
fixtures, never loads or registers a hypothesis profile (the suite's tests carry their own settings,
conformance/hsettings.py), and prints its table only after a run that executed qref's checks.

    pytest --pyargs qref.conformance --qref-backend torch:cuda
    pytest --pyargs qref.conformance --qref-backend cupy --qref-profile dev
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("qref", "qref conformance suite")
    group.addoption(
        "--qref-backend",
        action="store",
        default="numpy",
        help="qref backend for the conformance suite, NAME[:DEVICE] (default numpy)",
    )
    group.addoption(
        "--qref-profile",
        action="store",
        default=None,
        choices=("ci", "gpu", "dev"),
        help="hypothesis settings of qref's suite: ci (default), gpu or dev; also QREF_PROFILE in the environment",
    )


def pytest_configure(config):
    from . import hsettings

    hsettings.select(config.getoption("--qref-profile"))


@pytest.fixture(scope="session")
def qref_backend(request):
    """The backend under test; the suite skips, with the reason, when it cannot run here."""
    from qref.registry import BackendUnavailable, get_backend

    spec = request.config.getoption("--qref-backend")
    try:
        return get_backend(spec)
    except BackendUnavailable as e:
        pytest.skip(f"backend {spec} unavailable: {e}")


@pytest.fixture(scope="session")
def qref_reference():
    from qref.numpy_backend import NumpyBackend

    return NumpyBackend()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from . import tally

    if tally.counts():
        spec = config.getoption("--qref-backend")
        terminalreporter.write_line("")
        terminalreporter.write_line(
            tally.render(f"qref conformance: {spec} vs the reference (cases include hypothesis' shrinking steps)")
        )
