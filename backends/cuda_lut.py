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


def _entries(b: np.ndarray, size: int, mids: np.ndarray, order: np.ndarray) -> np.ndarray | None:
    """Table entries (midpoint or +inf, lo | hi << 8) of `size` buckets from the sorted midpoints' bucket
    indices b, or None where two different midpoints share a bucket."""
    k = np.arange(size)
    first = np.searchsorted(b, k, side="left")  # #{j : f(m_j) < k}
    count = np.searchsorted(b, k, side="right") - first
    shared = count > 0
    if np.any(mids[first[shared]] != mids[first[shared] + count[shared] - 1]):
        return None
    mid = np.where(shared, mids[np.minimum(first, mids.size - 1)], np.float32(np.inf)).astype(np.float32)
    lo, hi = order[first], order[first + count]
    return np.ascontiguousarray(np.stack([mid.view(np.uint32), lo | (hi << np.uint32(8))], axis=1).astype(np.uint32))


def _code(entries: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The kernel's choice between an entry's two codes: hi where s is above its midpoint."""
    above = s > entries[..., 0].view(np.float32)
    return np.where(above, entries[..., 1] >> np.uint32(8), entries[..., 1] & np.uint32(0xFF)).astype(np.uint8)


def build(midpoints: np.ndarray, order: np.ndarray) -> BucketTable | None:
    """The smallest table that separates the midpoints, or None (no fast path for this codebook)."""
    mids = np.asarray(midpoints, dtype=np.float32)
    order = np.asarray(order, dtype=np.uint32)
    if mids.size == 0 or mids.size > 255 or not (np.all(mids > -1) and np.all(mids < 1)):
        return None
    for bits in range(MIN_BITS, MAX_BITS + 1):
        entries = _entries(bucket(mids, bits).astype(np.int64), 1 << bits, mids, order)
        if entries is not None:  # else two different midpoints share a bucket: more bits
            return BucketTable(entries, bits)
    return None


def lookup(table: BucketTable, s: np.ndarray) -> np.ndarray:
    """The kernel's code for scaled values s (float32): an emulation for tests."""
    s = np.asarray(s, dtype=np.float32)
    return _code(table.entries[bucket(s, table.bits)], s)


def next_entries(table: BucketTable | LogBucketTable) -> np.ndarray | None:
    """The entries of the kernel's NEXT lookup, (midpoint or +inf, lo), where every midpoint separates a
    code from the next one (codes in value order, as NF4's): code = lo + (s > midpoint). None otherwise."""
    mid, y = table.entries[:, 0], table.entries[:, 1]
    lo, hi = y & np.uint32(0xFF), y >> np.uint32(8)
    has_mid = np.isfinite(mid.view(np.float32))
    if not np.all(hi[has_mid] == lo[has_mid] + 1):
        return None
    return np.ascontiguousarray(np.stack([mid, lo], axis=1).astype(np.uint32))


def lookup_next(entries: np.ndarray, bits: int, s: np.ndarray) -> np.ndarray:
    """The NEXT kernel's code for scaled values s (float32), from next_entries: an emulation for tests."""
    s = np.asarray(s, dtype=np.float32)
    e = entries[bucket(s, bits)]
    return (e[..., 1] + (s > e[..., 0].view(np.float32))).astype(np.uint8)


# ---- Log-scale buckets: codebooks whose midpoints crowd near 0 (the 8-bit dynamic map) ----
# g(s) = (bits(|s|) >> shift) clamped to [low, high], mirrored for s < 0 (s = -0 is not below 0, so it
# shares +0's bucket): monotone in s, one binade split into 2^(23 - shift) buckets. Used by the second
# level of double quantization, where s is clamped to [-1, 1] first.


@dataclass(frozen=True)
class LogBucketTable:
    """entries[k] as in BucketTable; index = (r - 1 - kc) for s < 0, (r + kc) otherwise, kc the clamped key."""

    entries: np.ndarray  # uint32, shape (2 * r, 2)
    shift: int
    low: int
    high: int


def log_bucket(s: np.ndarray, shift: int, low: int, high: int) -> np.ndarray:
    """The kernel's index of float32 s."""
    s = np.asarray(s, dtype=np.float32)
    k = (np.abs(s).view(np.uint32) >> np.uint32(shift)).astype(np.int64)
    kc = np.clip(k, low, high) - low
    r = high - low + 1
    return np.where(s < 0, r - 1 - kc, r + kc)


def build_log(midpoints: np.ndarray, order: np.ndarray, max_entries: int = 4096) -> LogBucketTable | None:
    """The smallest log-scale table separating the midpoints (clamped s in [-1, 1]), or None."""
    mids = np.asarray(midpoints, dtype=np.float32)
    order = np.asarray(order, dtype=np.uint32)
    nonzero = np.abs(mids[mids != 0])
    if nonzero.size == 0 or not (np.all(mids >= -1) and np.all(mids < 1)):
        return None
    for mbits in range(2, 9):
        shift = 23 - mbits
        high = int(np.float32(1).view(np.uint32)) >> shift
        low = int(nonzero.min().view(np.uint32)) >> shift
        r = high - low + 1
        if 2 * r > max_entries:
            return None
        entries = _entries(log_bucket(mids, shift, low, high), 2 * r, mids, order)
        if entries is not None:
            return LogBucketTable(entries, shift, low, high)
    return None


def lookup_log(table: LogBucketTable, s: np.ndarray) -> np.ndarray:
    """The kernel's code for clamped scaled values s: an emulation for tests."""
    s = np.clip(np.asarray(s, dtype=np.float32), np.float32(-1), np.float32(1))
    return _code(table.entries[log_bucket(s, table.shift, table.low, table.high)], s)


ABOVE_BYTES = 1024  # 256 float32 midpoints by code, before the bytes of a compact log table


def compact_log(table: LogBucketTable, midpoints: np.ndarray) -> np.ndarray | None:
    """The log table in the NEXT form (knob DQ2_NEXT), where codes are in value order and every midpoint
    separates a code from the next (next_entries): 256 float32 midpoints by code (`above[c]` separates code c
    from c + 1; +inf past the last), then one byte per bucket, its code "not above"; code = lo + (s >
    above[lo]). A bucket without a midpoint needs no midpoint of its own: above[lo] is the first midpoint
    past it, in a later bucket, so above s (g is monotone). 3.8 KB for the dynamic map against 22 KB.
    As (k, 2) uint32 rows (the kernels copy 8-byte units); None where the form does not hold."""
    nxt = next_entries(table)
    mids = np.asarray(midpoints, dtype=np.float32)
    if nxt is None or mids.size > 255:
        return None
    mid, lo = nxt[:, 0].view(np.float32), nxt[:, 1]
    has = np.isfinite(mid)
    if np.any(lo >= 256) or not np.array_equal(mids[lo[has]], mid[has]):
        return None
    above = np.full(256, np.inf, dtype=np.float32)
    above[: mids.size] = mids
    raw = np.concatenate([above.view(np.uint8), lo.astype(np.uint8)])
    raw = np.pad(raw, (0, -raw.size % 8))
    return np.ascontiguousarray(raw.view(np.uint32).reshape(-1, 2))


def lookup_log_compact(raw: np.ndarray, table: LogBucketTable, s: np.ndarray) -> np.ndarray:
    """The DQ2_NEXT kernel's code for clamped scaled values s, from compact_log: an emulation for tests."""
    s = np.clip(np.asarray(s, dtype=np.float32), np.float32(-1), np.float32(1))
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    above = b[:ABOVE_BYTES].view(np.float32)
    lo = b[ABOVE_BYTES + log_bucket(s, table.shift, table.low, table.high)]
    return (lo + (s > above[lo])).astype(np.uint8)
