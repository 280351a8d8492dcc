"""hypothesis settings of qref's own suite, applied test by test (never as a global profile).

    ci  (default) 40 examples, derandomized, no example database: the same examples every run
    gpu           200 examples
    dev           1000 examples, random, with the database

Derandomized profiles draw the same examples whatever the install layout: hypothesis mixes into its
draws constants read from the "local" modules in memory (a source checkout's qref and conformance
modules are local, an installed wheel's are not), so the suite's tests run with that pool emptied
(`layout_independent`); hypothesis' own global constants still take part.

Chosen by `--qref-profile`, else the environment variable QREF_PROFILE, else `ci`. A foreign
project's hypothesis tests in the same pytest session keep hypothesis' own defaults.
"""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck))
PROFILES = {
    "ci": settings(max_examples=40, database=None, derandomize=True, **_COMMON),
    "gpu": settings(max_examples=200, database=None, derandomize=True, **_COMMON),
    "dev": settings(max_examples=1000, **_COMMON),
}
# The mutation runner: the ci profile's examples (generation is unchanged), without shrinking a failure.
PROFILES["ci-mutation"] = settings(PROFILES["ci"], phases=[Phase.explicit, Phase.reuse, Phase.generate])

_chosen: str | None = None


def select(name: str | None) -> None:
    """Pick the profile for the suite's tests collected after this call (the plugin calls it)."""
    global _chosen
    if name is not None and name not in PROFILES:
        raise ValueError(f"unknown qref profile {name!r}; one of {', '.join(PROFILES)}")
    _chosen = name


def current() -> settings:
    name = _chosen or os.environ.get("QREF_PROFILE") or "ci"
    if name not in PROFILES:
        raise ValueError(f"QREF_PROFILE={name!r}: one of {', '.join(PROFILES)}")
    return PROFILES[name]


@contextlib.contextmanager
def layout_independent():
    """Within this block hypothesis draws no constants from local modules, so a derandomized run draws
    the same examples from a source checkout and from an installed wheel. Hypothesis' other draws,
    including its global constants, are unchanged; the pool is restored on exit."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - hypothesis reorganised; tests/test_layout_stable.py says so
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None:  # pragma: no cover
        yield
        return
    empty = providers.Constants()
    providers.CONSTANTS_CACHE.cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        providers.CONSTANTS_CACHE.cache.clear()
