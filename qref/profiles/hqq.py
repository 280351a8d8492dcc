"""HQQ's round-to-nearest quantizer and its bit packing, the optimizer aside (docs/profiles.md).

Source: hqq 0.2.8 (`hqq/core/quantize.py` Quantizer.quantize/dequantize with optimize=False,
`hqq/core/bitpack.py`). For a weight (D_out, D_in) and group size g, axis=1 (HQQLinear's default):

1. W is widened to float32 and viewed as (D_out D_in / g, g): groups of g consecutive elements of the
   row-major weight (a row's groups when g divides D_in);
2. per group: lo = min, hi = max; the *inverse* scale is kept: s' = RN(RN(1 / (hi - lo)) (2^k - 1))
   (PyTorch evaluates `number / tensor` as a reciprocal times the number), replaced by
   1.0 where |hi - lo| <= 1e-4 (a near-constant group), then clamped to at most 2e4;
   zero z = -lo * s' (a float, not rounded: round_zero=False);
3. q = clamp(round_half_even(RN(RN(w s') + z)), 0, 2^k - 1);
4. stored scale s = RN(1 / s'); dequantize: (q - z) * s, in float32 when z and s are float32, or in
   the compute dtype (every op rounded to it) once HQQLinear has cast them (float16 by default);
5. packing along the group axis (rows of the (numel/g, g) view), planar: at 4 bits rows [0, R/2)
   go to the high nibble and [R/2, R) to the low one; 2 bits: four planes (first at bits 6-7);
   1 bit: eight; 3 bits: ten planes in int32 (first at bits 27-29) after zero-padding the rows to a
   multiple of 10; 8 bits: the codes as uint8. The row count must divide by the planes (else the
   library fails with a shape error): an odd number of groups cannot be stored at 4 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation
from ..dtypes import round_to
from .planar import pack_planes, unpack_planes

NAME = "hqq"
VERSION = "0.2.8"
BITS = (1, 2, 3, 4, 8)
#: HQQ's guards: a range at most this wide takes inverse scale 1.0; the inverse scale is capped.
NEAR_CONSTANT = np.float32(1e-4)
MAX_INV_SCALE = np.float32(2e4)


@dataclass(frozen=True)
class HQQQuant:
    """Codes (numel/g, g) uint8; scale and zero (numel/g, 1) float32; the weight's shape."""

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    bits: int
    group_size: int
    shape: tuple[int, int]


def quantize(W, bits: int = 4, group_size: int = 64) -> HQQQuant:
    """Steps 1-4 of the module doc."""
    W32, _ = validation.float_input(W, "W")
    validation.one_of(bits, BITS, "bits")
    g = validation.positive_int(group_size, "group_size")
    if W32.size % g:
        raise ValueError(f"W has {W32.size} elements, not a multiple of group_size = {g}")
    w = W32.reshape(-1, g)
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", over="ignore"):
        denom = hi - lo
        inv = ((np.float32(1) / denom).astype(np.float32) * np.float32(2**bits - 1)).astype(np.float32)
    inv = np.where(np.abs(denom) <= NEAR_CONSTANT, np.float32(1), inv)
    inv = np.minimum(inv, MAX_INV_SCALE)
    zero = (-lo * inv).astype(np.float32)
    q = np.clip(np.rint((w * inv).astype(np.float32) + zero), 0, 2**bits - 1).astype(np.uint8)
    scale = (np.float32(1) / inv).astype(np.float32)
    return HQQQuant(q, scale, zero, bits, g, tuple(W32.shape))


def dequantize(state: HQQQuant, compute_dtype: str = "float32") -> np.ndarray:
    """Step 4: (q - z) * s reshaped to the weight, each op rounded to `compute_dtype`."""
    validation.one_of(compute_dtype, ("float32", "float16", "bfloat16"), "compute_dtype")
    z, s = round_to(state.zero, compute_dtype), round_to(state.scale, compute_dtype)
    out = round_to(round_to(state.codes.astype(np.float32) - z, compute_dtype) * s, compute_dtype)
    return out.reshape(state.shape)


def _layout(bits: int) -> tuple[int, bool]:
    return (32, True) if bits == 3 else (8, False)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Step 5: HQQ's BitPack for `bits`."""
    validation.one_of(bits, BITS, "bits")
    if bits == 8:
        return np.asarray(codes, dtype=np.uint8).copy()
    word_bits, pad = _layout(bits)
    return pack_planes(codes, bits, word_bits, first_high=True, pad=pad)


def unpack(words: np.ndarray, bits: int, rows: int) -> np.ndarray:
    validation.one_of(bits, BITS, "bits")
    if bits == 8:
        return np.asarray(words, dtype=np.uint8)[:rows].copy()
    return unpack_planes(words, bits, rows, first_high=True)
