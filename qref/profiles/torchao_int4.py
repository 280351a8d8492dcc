"""torchao's int4 weight-only group-wise quantization (the tinygemm form: zeros in the float domain)
(docs/profiles.md).

Source: torchao 0.18.0, `quantization/utils.py` (get_groupwise_affine_qparams,
groupwise_affine_quantize_tensor_from_qparams, ..._dequantize_...) and `quantization/quant_primitives.py`
(_choose_qparams_affine_tinygemm, _quantize_affine_tinygemm, _dequantize_affine_tinygemm).
For a weight (D_out, D_in), n bits, group size g, mid = 2^(n-1), and a parameter format `dtype`
(bfloat16 by default, as Int4WeightOnlyConfig keeps the model's dtype):

1. per (row, group), in float32: scale = max(RN((hi - lo) / (2^n - 1)), 1e-6) (on CUDA PyTorch
   multiplies by RN(1 / (2^n - 1)) instead);
   zero = RN(lo + RN(scale mid)); then scale and zero are rounded to `dtype` (QA-LoRA's min-max
   offset form, the offset moved to the middle code);
2. quantize, with the rounded parameters: m = RN_dtype(zero - RN_dtype(scale mid)) (the group's
   minimum as `dtype` arithmetic gives it back), q = clamp(round_half_even(RN(RN(w - m) / scale)),
   0, 2^n - 1); float32 steps for float32 w;
3. dequantize: RN_dtype(RN_dtype((q - mid) scale) + zero), every step in `dtype`;
4. storage off the CPU: two codes per byte along each row, RN_uint8(q_2j << 4 | q_2j+1) (uint8
   (D_out, D_in / 2)), whatever n is: at n <= 4 it is lossless, at n > 4 the byte keeps only the
   low 8 bits, so q_2j loses its top bits and q_2j+1's high bits spill into it (the library's
   storage, reproduced; a known divergence of its dequantized weights); on the CPU the int32
   codes are kept unpacked. (tinygemm's own
   `_convert_weight_to_int4pack` layout is opaque to the library and not profiled.)
A group narrower than (2^n - 1) 1e-6 has scale 1e-6: its values collapse onto the codes nearest its
minimum (a constant group: code 0, up to the rounding of m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation
from ..dtypes import round_to
from ..groupwise import check_layout, group_view
from . import divide_by_number

NAME = "torchao-int4"
VERSION = "0.18.0"
BITS = (1, 2, 3, 4, 5, 6, 7, 8)
#: get_groupwise_affine_qparams' default minimum scale.
EPS = np.float32(1e-6)
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Int4Quant:
    """Codes (D_out, D_in) int32 in [0, 2^n - 1]; scales and zeros (D_out, G) in `dtype` (held as float32)."""

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    dtype: str


def quantize(W, bits: int = 4, group_size: int = 128, dtype: str = "bfloat16", device: str = "cpu") -> Int4Quant:
    """Steps 1-2 of the module doc; on `device` "cuda" the division by 2^n - 1 is PyTorch's CUDA
    rule (qref.profiles.divide_by_number)."""
    W32, _ = validation.float_input(W, "W")
    validation.one_of(bits, BITS, "bits")
    validation.one_of(dtype, DTYPES, "dtype")
    check_layout(W32.shape, group_size)
    mid = np.float32(2 ** (bits - 1))
    w = group_view(W32, group_size)
    lo, hi = w.min(axis=2), w.max(axis=2)
    with np.errstate(over="ignore"):
        scale = np.maximum(divide_by_number((hi - lo).astype(np.float32), 2**bits - 1, device), EPS)
    if not np.all(np.isfinite(scale)):
        raise ValueError("W: a group's range exceeds the float32 maximum (no finite scale)")
    zero = (lo + (scale * mid).astype(np.float32)).astype(np.float32)
    scale, zero = round_to(scale, dtype), round_to(zero, dtype)
    m = round_to(zero - round_to(scale * mid, dtype), dtype)
    with np.errstate(over="ignore"):
        ratio = ((w - m[..., None]).astype(np.float32) / scale[..., None]).astype(np.float32)
    q = np.clip(np.rint(ratio), 0, 2**bits - 1).astype(np.int32)
    return Int4Quant(q.reshape(W32.shape), scale, zero, bits, group_size, dtype)


def dequantize(state: Int4Quant) -> np.ndarray:
    """Step 3, float32 values of the `dtype` result."""
    mid = np.float32(2 ** (state.bits - 1))
    s = np.repeat(state.scales, state.group_size, axis=1)
    z = np.repeat(state.zeros, state.group_size, axis=1)
    centred = round_to(state.codes.astype(np.float32) - mid, state.dtype)
    return round_to(round_to(centred * s, state.dtype) + z, state.dtype)


def pack_uint8(codes: np.ndarray) -> np.ndarray:
    """Step 4: (D_out, D_in) codes -> uint8 (D_out, D_in / 2), column 2j high, kept to 8 bits."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] % 2:
        raise ValueError(f"codes must be 2-D with an even number of columns, got shape {codes.shape}")
    validation.integer_array(codes, "codes", codes.dtype, 0, 255)
    both = (codes[:, ::2].astype(np.int64) << 4) | codes[:, 1::2].astype(np.int64)
    return (both & 0xFF).astype(np.uint8)


def unpack_uint8(packed: np.ndarray) -> np.ndarray:
    """The codes a reader takes back from `pack_uint8`'s bytes: (high nibble, low nibble) per byte."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.stack((packed >> 4, packed & 15), axis=-1).reshape(packed.shape[0], -1).astype(np.int32)
