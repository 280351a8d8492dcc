"""Minimal examples for blockwise ops: a difference at element i is re-run on its block alone, then
on a block holding only element i and the block's absmax (every other element zero)."""

from __future__ import annotations

import numpy as np

from qref.dtypes import BFloat16Array, as_float32

from .report import as_bits


def flat(x):
    return BFloat16Array(x.bits.reshape(-1)) if isinstance(x, BFloat16Array) else np.asarray(x).reshape(-1)


def take(x, n: int, start: int = 0):
    """n consecutive elements of x (flattened) from `start`, same format."""
    x = flat(x)
    if isinstance(x, BFloat16Array):
        return BFloat16Array(x.bits[start : start + n].copy())
    return x[start : start + n].copy()


def keep(block, positions):
    """The block with every element zeroed except those at `positions`."""
    if isinstance(block, BFloat16Array):
        bits = np.zeros_like(block.bits)
        bits[positions] = block.bits[positions]
        return BFloat16Array(bits)
    out = np.zeros_like(block)
    out[positions] = block[positions]
    return out


def blockwise(x, element: int, blocksize: int, run):
    """(label, smaller input, ours, theirs) for the smallest candidate on which `run(input) ->
    (ours, theirs)` still differs, or None when neither candidate does."""
    start = (element // blocksize) * blocksize
    block = take(x, min(blocksize, as_float32(flat(x)).size - start), start)
    j = element - start
    peak = int(np.argmax(np.abs(as_float32(block))))
    for label, candidate in (
        (f"element {element} and its block's absmax, rest zero", keep(block, sorted({j, peak}))),
        (f"the block at element {start}", block),
    ):
        ours, theirs = run(candidate)
        a, b = as_bits(ours), as_bits(theirs)
        if a.shape != b.shape or np.any(a != b):
            return label, candidate, ours, theirs
    return None
