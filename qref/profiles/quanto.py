"""optimum-quanto's int2/int4 group-wise weights (qint2, qint4 with MaxOptimizer) and their packing
(docs/profiles.md).

Source: optimum-quanto 0.2.7 (`tensor/optimizers/max_optimizer.py`, `tensor/grouped.py`,
`library/quantize.py` quantize_affine, `tensor/qbits.py` QBitsDequantizer, `tensor/packed.py`).
For a float32 weight (D_out, D_in), axis 0 (how QModule quantizes weights) and group size g:

1. the weight is viewed as (D_out D_in / g, g), groups of g consecutive row-major elements;
2. per group: scale = (max - min) / 15 at 4 bits (qmax - qmin of the signed type: 3 at 2 bits;
   on CUDA PyTorch multiplies by RN(1/15) instead), shift = -min, both float32 (the float-shift
   mode; zeropoint=False is QModule's default);
3. q = clamp(round_half_even(RN(RN(w + shift) / scale)), 0, 2^k - 1), uint8;
4. dequantize: RN(RN(scale q) - shift), QA-LoRA's min-max form scale q + min rounded twice in
   float32; the codes, scales and offsets are those of qref.groupwise's profile "minmax" (which
   dequantizes exactly, in float64);
5. a constant group has scale 0: w + shift = 0 and 0/0 is NaN, which the uint8 conversion turns
   into 0 (x86 and CUDA), and dequantizes to 0 * 0 + min, the constant, as "minmax" does; only the
   stored scale differs (0 here, 1 there);
6. packing along the group axis (rows), planar: R = ceil(rows / P) rows of uint8 with P = 8 / k
   values each, chunk p (rows [pR, (p+1)R)) at bit offset k p, the first chunk in the low bits; the
   rows are zero-padded to a multiple of P.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation
from . import divide_by_number
from .planar import pack_planes, unpack_planes

NAME = "optimum-quanto"
VERSION = "0.2.7"
BITS = (2, 4)


@dataclass(frozen=True)
class QuantoQuant:
    """Codes (numel/g, g) uint8; scale and shift (numel/g, 1) float32; the weight's shape."""

    codes: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    bits: int
    group_size: int
    shape: tuple[int, int]


def quantize(W, bits: int = 4, group_size: int = 128, device: str = "cpu") -> QuantoQuant:
    """Steps 1-3 and 5 of the module doc; on `device` "cuda" the division by 2^k - 1 is PyTorch's
    CUDA rule (qref.profiles.divide_by_number)."""
    W32, _ = validation.float_input(W, "W")
    validation.one_of(bits, BITS, "bits")
    g = validation.positive_int(group_size, "group_size")
    if W32.ndim != 2 or W32.shape[1] % g:
        raise ValueError(f"group_size = {g} must divide the rows of a 2-D weight, got shape {W32.shape}")
    w = W32.reshape(-1, g)
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        scale = divide_by_number((hi - lo).astype(np.float32), 2**bits - 1, device)
    if not np.all(np.isfinite(scale)):
        raise ValueError("W: a group's range exceeds the float32 maximum (no finite scale)")
    shift = -lo
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ((w + shift).astype(np.float32) / scale).astype(np.float32)
    q = np.clip(np.nan_to_num(np.rint(ratio), nan=0.0), 0, 2**bits - 1).astype(np.uint8)  # step 5: NaN -> 0
    return QuantoQuant(q, scale, shift, bits, g, tuple(W32.shape))


def dequantize(state: QuantoQuant) -> np.ndarray:
    """Step 4, float32."""
    return ((state.scale * state.codes.astype(np.float32)).astype(np.float32) - state.shift).reshape(state.shape)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Step 6: quanto's pack_weights."""
    validation.one_of(bits, BITS, "bits")
    return pack_planes(codes, bits, 8, first_high=False, pad=True)


def unpack(words: np.ndarray, bits: int, rows: int) -> np.ndarray:
    validation.one_of(bits, BITS, "bits")
    return unpack_planes(words, bits, rows, first_high=False)
