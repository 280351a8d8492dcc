"""Per (op, profile) counts of a conformance run, printed as one table at the end."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .report import as_bits, values

_COUNTS: dict[tuple[str, str], dict[str, int]] = defaultdict(
    lambda: {"cases": 0, "exact": 0, "certified": 0, "mismatches": 0}
)
_FIRST: dict[tuple[str, str], str] = {}


class Mismatch(AssertionError):
    """A backend output that breaks the exactness contract or a certificate."""


def reset() -> None:
    _COUNTS.clear()
    _FIRST.clear()


def first(key: tuple[str, str]) -> str:
    return _FIRST.get(key, "")


def cases() -> int:
    """Cases recorded so far, over every op and profile."""
    return sum(c["cases"] for c in _COUNTS.values())


def counts() -> dict[tuple[str, str], dict[str, int]]:
    return {k: dict(v) for k, v in _COUNTS.items()}


def _fail(key, message: str):
    _COUNTS[key]["mismatches"] += 1
    _FIRST.setdefault(key, message)
    raise Mismatch(message)


def first_difference(got, want) -> str | None:
    """None when bit-identical, else where and how they first differ."""
    if np.shape(values(got)) != np.shape(values(want)):
        return f"shape {np.shape(values(got))} vs reference {np.shape(values(want))}"
    a, b = as_bits(got), as_bits(want)
    if a.dtype != b.dtype:
        return f"dtype {values(got).dtype} vs reference {values(want).dtype}"
    idx = np.flatnonzero(a != b)
    if idx.size == 0:
        return None
    i = int(idx[0])
    return (
        f"{idx.size} of {a.size} elements differ; first at flat index {i}: backend "
        f"{values(got).ravel()[i]!r} vs reference {values(want).ravel()[i]!r}"
    )


def expect_exact(op: str, profile: str, got, want, backend="") -> None:
    """Record one case; raise Mismatch naming op, profile and the first differing element."""
    key = (op, profile)
    _COUNTS[key]["cases"] += 1
    diff = first_difference(got, want)
    if diff is None:
        _COUNTS[key]["exact"] += 1
        return
    _fail(key, f"{backend} {op} [{profile}]: {diff}")


def expect_error(op: str, profile: str, error: type, call, backend="", prefix: str = "") -> None:
    """The reference refuses this input: the backend must raise the same exception type (its message
    starting with `prefix`: a batch names the item it refused)."""
    key = (op, profile)
    _COUNTS[key]["cases"] += 1
    try:
        call()
    except error as e:
        if str(e).startswith(prefix):
            _COUNTS[key]["exact"] += 1
            return
        _fail(key, f"{backend} {op} [{profile}]: the reference's error starts {prefix!r}, the backend's: {e}")
    _fail(key, f"{backend} {op} [{profile}]: the reference raises {error.__name__}, the backend returned")


def expect_certified(op: str, profile: str, ok: bool, detail: str, backend="") -> None:
    """Record one certified case (a tolerance or certificate, docs/exactness.md)."""
    key = (op, profile)
    _COUNTS[key]["cases"] += 1
    if ok:
        _COUNTS[key]["certified"] += 1
        return
    _fail(key, f"{backend} {op} [{profile}]: certificate failed: {detail}")


def render(title: str = "conformance") -> str:
    head = ("op", "profile", "cases", "exact", "certified", "mismatches", "first mismatch")
    body = [
        (op, prof, *(str(c[k]) for k in ("cases", "exact", "certified", "mismatches")), _FIRST.get((op, prof), ""))
        for (op, prof), c in sorted(_COUNTS.items())
    ]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(6)]
    lines = [title]
    for r in [head] + body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6][:160])
    return "\n".join(lines)
