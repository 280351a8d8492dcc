"""Shared machinery of qref.testing: array conversion, bitwise comparison (with allowed known
divergences), the battery-then-hypothesis driver and its shrinkers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import interop
from .fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT
from .validation import one_of

ARRAYS = ("numpy", "torch")


class _Mismatch(AssertionError):
    pass


def _to(a: np.ndarray, array: str, device: str):
    return a.copy() if array == "numpy" else interop.to_torch(a, device)


def _to_format(a: np.ndarray, fmt: str, array: str, device: str):
    """float32 values already in `fmt`, passed as an array of that dtype."""
    if array == "numpy":
        return a.astype(fmt)
    import torch

    return interop.to_torch(a, device).to(getattr(torch, fmt))


def _back(a) -> np.ndarray:
    return interop.to_numpy(a) if hasattr(a, "detach") else np.asarray(a)


def _allowed(allow, want: np.ndarray, got: np.ndarray, idx: np.ndarray) -> bool:
    """True when one of the known divergences named in `allow` (ids of docs/known-divergences.md
    whose classifier needs only the two outputs, e.g. "flush-to-zero", "signed-zero") explains
    every difference."""
    if not allow:
        return False
    from .conformance import divergences

    entries = divergences.catalogue()
    for name in allow:
        if name not in entries or not entries[name]["classifier"]:
            raise ValueError(f"allow: {name!r} is not a known divergence with a classifier")
        classify = divergences.CLASSIFIERS[entries[name]["classifier"]]
        if classify(want.reshape(-1), got.reshape(-1), idx) == name:
            return True
    return False


def _first_difference(what: str, want: np.ndarray, got: np.ndarray, allow=()) -> str | None:
    """None when equal bit for bit (shape, dtype size and bytes) or when every difference is one of
    the known divergences in `allow`, else a line naming the first difference."""
    got = np.asarray(got)
    if got.size != want.size:
        return f"{what}: {got.size} elements, expected {want.size}"
    if got.dtype.itemsize != want.dtype.itemsize or got.dtype.kind != want.dtype.kind:
        return f"{what}: dtype {got.dtype}, expected {want.dtype}"
    w, g = np.ascontiguousarray(want.reshape(-1)), np.ascontiguousarray(got.reshape(-1))
    bits = f"u{want.dtype.itemsize}"
    diff = np.flatnonzero(w.view(bits) != np.ascontiguousarray(g).view(bits))
    if not diff.size or _allowed(allow, w, g, diff):
        return None
    i = int(diff[0])
    width = 2 * w.itemsize
    want_bits, got_bits = int(w.view(bits)[i]), int(g.view(bits)[i])
    return (
        f"{what}: {diff.size} of {w.size} elements differ; first at flat index {i}: expected {w[i]!r} "
        f"(bits 0x{want_bits:0{width}x}), got {g[i]!r} (bits 0x{got_bits:0{width}x})"
    )


def _settings(max_examples: int):
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def _run(name: str, compare: Callable[[Any], str | None], battery, strategy, max_examples: int, shrink) -> None:
    """The battery first (each failing case shrunk to its failing block), then hypothesis (shrunk by it)."""
    from hypothesis import given

    for case, data in battery:
        problem = compare(data)
        if problem is not None:
            small = shrink(data, compare)
            raise AssertionError(
                f"{name}: battery case {case!r}: {problem}\nsmallest failing input found: {_show(small)}"
            )

    @_settings(max_examples)
    @given(strategy)
    def search(data):
        problem = compare(data)
        if problem is not None:
            raise _Mismatch(f"{name}: {problem}\nsmallest failing input (hypothesis): {_show(data)}")

    try:
        search()
    except _Mismatch as e:
        raise AssertionError(str(e)) from None


def _show(data) -> str:
    with np.printoptions(threshold=200, floatmode="unique"):
        if isinstance(data, tuple):
            return "(" + ", ".join(repr(d) for d in data) + ")"
        return repr(data)


def _check_layout(quant_type: str, blocksize: int, array: str) -> None:
    one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
    one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
    one_of(array, ARRAYS, "array")


def _float32_battery(quant_type: str, blocksize: int):
    from .conformance.battery import cases

    for case, x in cases(quant_type, blocksize):
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            yield case, x


def _block_shrink(blocksize: int):
    """For a failing x: the shortest prefix of blocks that still fails, then the failing block alone."""

    def shrink(x: np.ndarray, compare):
        flat = x.reshape(-1)
        blocks = [flat[i : i + blocksize] for i in range(0, flat.size, blocksize)]
        for b in blocks:
            if compare(b.copy()) is not None:
                return b.copy()
        return x

    return shrink
