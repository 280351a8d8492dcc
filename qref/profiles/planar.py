"""Planar bit packing of small codes, the layout HQQ and optimum-quanto store (their profiles).

Values of k bits are split along axis 0 into P = word_bits / k consecutive chunks that share one row
of words, each chunk at its own bit offset; qref's own 4-bit layout (two consecutive codes per byte,
qref.packing) is a different one.
"""

from __future__ import annotations

import numpy as np


def pack_planes(values: np.ndarray, bits: int, word_bits: int, first_high: bool, pad: bool = False) -> np.ndarray:
    """Planar packing along axis 0 (HQQ, optimum-quanto): P = word_bits // bits chunks of R = rows / P
    consecutive rows share one row of words; chunk p goes to bit offset bits * (P - 1 - p) when
    `first_high` (HQQ) or bits * p (optimum-quanto). With `pad`, rows are zero-padded to a multiple of
    P (quanto; HQQ at 3 bits); without it, rows must divide by P. Words are uint8 (word_bits 8) or
    int32 (word_bits 32)."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= 2**bits):
        raise ValueError(f"values must be in [0, {2**bits - 1}] to pack into {bits} bits")
    planes = word_bits // bits
    rows = values.shape[0]
    if rows % planes:
        if not pad:
            raise ValueError(f"{rows} rows do not split into {planes} planes of {bits}-bit values")
        values = np.concatenate([values, np.zeros((planes - rows % planes, values.shape[1]), values.dtype)])
    chunks = values.astype(np.uint64).reshape(planes, -1, values.shape[1])
    shifts = np.arange(planes, dtype=np.uint64) * np.uint64(bits)
    if first_high:
        shifts = shifts[::-1]
    words = (chunks << shifts[:, None, None]).sum(axis=0, dtype=np.uint64)
    return words.astype(np.uint8) if word_bits == 8 else words.astype(np.uint32).view(np.int32)


def unpack_planes(words: np.ndarray, bits: int, rows: int, first_high: bool) -> np.ndarray:
    """Inverse of `pack_planes`: the first `rows` rows of values, uint8."""
    words = np.asarray(words)
    word_bits = 8 if words.dtype == np.uint8 else 32
    planes = word_bits // bits
    u = words.astype(np.uint32) if word_bits == 8 else words.view(np.uint32)
    shifts = np.arange(planes, dtype=np.uint32) * np.uint32(bits)
    if first_high:
        shifts = shifts[::-1]
    values = (u[None] >> shifts[:, None, None]) & np.uint32(2**bits - 1)
    return values.reshape(-1, words.shape[1])[:rows].astype(np.uint8)
