"""Bucket table of the block-64 quantize kernel (backends/kernels/quant.cu, `quant_lut`): the nearest
code of a scaled value s in one shared-memory lookup and one comparison, bit-exact with the
reference's count code = order[#{j : m_j < s}] (qref.codebooks.Codebook.nearest).

The bucket of s is f(s) = (bits(fl32(s + 6)) >> shift) & mask: for s in [-2, 2) the sum lies in
[4, 8), one binade, so f takes the top `bits` bits of its significand; f is monotone because
float32 rounding is. Hence a midpoint in an earlier bucket is below s and one in a later bucket is
above it; only midpoints in s's own bucket need a comparison. The table is built so that each
bucket holds midpoints of one value only (`build` returns None otherwise), and stores that value
(or +inf) with the codes for "not above" and "above" it. Scaled values of finite input lie in
[-1 - 2^-23, 1 + 2^-23] (|x| <= absmax, 1/absmax rounded once, the product once); midpoints inside
(-1, 1) give the same count for s and for clamp(s, -1, 1), so the kernel needs no clamp. NaN and
inf (rejected by the caller) still index inside the table.

This module is NumPy only, so the table and an emulation of the kernel's lookup are tested on any
machine (tests/test_cuda_lut.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFFSET = np.float32(6.0)
MIN_BITS, MAX_BITS = 4, 11  # up to 2048 entries of 8 bytes: 16 KiB of shared memory


@dataclass(frozen=True)
class BucketTable:
    """entries[k] = (bits of the midpoint in bucket k or of +inf, lo | hi << 8) as uint32 pairs."""

    entries: np.ndarray  # uint32, shape (2**bits, 2)
    bits: int

    @property
    def shift(self) -> int:
        return 23 - self.bits

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1


def bucket(s: np.ndarray, bits: int) -> np.ndarray:
    """f(s): the kernel's bucket index, computed with the same float32 operations."""
    t = (np.asarray(s, dtype=np.float32) + OFFSET).astype(np.float32)
    return (t.view(np.uint32) >> np.uint32(23 - bits)) & np.uint32((1 << bits) - 1)


def build(midpoints: np.ndarray, order: np.ndarray) -> BucketTable | None:
    """The smallest table that separates the midpoints, or None (no fast path for this codebook)."""
    mids = np.asarray(midpoints, dtype=np.float32)
    order = np.asarray(order, dtype=np.uint32)
    if mids.size == 0 or mids.size > 255 or not (np.all(mids > -1) and np.all(mids < 1)):
        return None
    for bits in range(MIN_BITS, MAX_BITS + 1):
        b = bucket(mids, bits).astype(np.int64)
        k = np.arange(1 << bits)
        first = np.searchsorted(b, k, side="left")  # #{j : f(m_j) < k}
        count = np.searchsorted(b, k, side="right") - first
        shared = count > 0
        if np.any(mids[first[shared]] != mids[first[shared] + count[shared] - 1]):
            continue  # two different midpoints share a bucket: more bits
        mid = np.where(shared, mids[np.minimum(first, mids.size - 1)], np.float32(np.inf)).astype(np.float32)
        lo, hi = order[first], order[first + count]
        entries = np.stack([mid.view(np.uint32), lo | (hi << np.uint32(8))], axis=1).astype(np.uint32)
        return BucketTable(np.ascontiguousarray(entries), bits)
    return None


def lookup(table: BucketTable, s: np.ndarray) -> np.ndarray:
    """The kernel's code for scaled values s (float32): an emulation for tests."""
    s = np.asarray(s, dtype=np.float32)
    e = table.entries[bucket(s, table.bits)]
    above = s > e[..., 0].view(np.float32)
    return np.where(above, e[..., 1] >> np.uint32(8), e[..., 1] & np.uint32(0xFF)).astype(np.uint8)
