"""compressed-tensors' integer weight quantization and its "pack-quantized" storage (docs/profiles.md).

Source: compressed-tensors 0.20.1 (the format vLLM loads and llm-compressor writes),
`quantization/utils/helpers.py` (calculate_qparams), `quantization/lifecycle/forward_helpers.py`
(_quantize, _dequantize), `compressors/pack_quantized/helpers.py` (pack_to_int32). For a float32
weight (D_out, D_in), k bits, signed codes in [qmin, qmax] = [-2^(k-1), 2^(k-1) - 1], one scale (and
zero point) per row ("channel") or per (row, group of g consecutive inputs) ("group"):

1. the range always holds 0: lo = min(min w, 0), hi = max(max w, 0);
2. symmetric: scale = max(|lo|, |hi|) / ((qmax - qmin) / 2), i.e. divided by 7.5 at 4 bits, so the
   largest magnitude maps to +-7.5 and a positive one is clipped to 7 (its negative twin reaches -8);
   zero point 0;
   asymmetric: scale = (hi - lo) / (qmax - qmin); zp = clamp(qmin - lo / scale, qmin, qmax), rounded
   half to even and stored as int8; an all-zero group divides 0/0 and its NaN zero point converts
   to int8 0 (x86 and CUDA; the profile states 0);
3. a scale of exactly 0 (all-zero group) becomes float32 eps = 2^-23 (after the zero point is formed);
4. q = round_half_even(clamp(RN(RN(w / scale) + zp), qmin, qmax)), int8;
5. dequantize: (q - zp) * scale in float32;
6. "pack-quantized": q + 2^(k-1) as a dense little-endian bit stream along each row, k bits per value,
   cut into int32 words (ceil(D_in k / 32) per row); zero points, when present, are packed the same
   way along the output dimension (dim 0).
All arithmetic is float32 (the library computes in the weight's dtype; the profile takes float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation
from ..gptq_pack import pack_bits, unpack_bits
from ..groupwise import check_layout, group_view

NAME = "compressed-tensors"
VERSION = "0.20.1"
BITS = (2, 4, 8)
STRATEGIES = ("group", "channel")


@dataclass(frozen=True)
class CTQuant:
    """Signed codes (D_out, D_in) int8, float32 scales and int8 zero points (D_out, G)."""

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    bits: int
    group_size: int
    symmetric: bool


def qrange(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def quantize(W, bits: int = 4, group_size: int | None = 128, symmetric: bool = True) -> CTQuant:
    """Steps 1-4 of the module doc; group_size None is the "channel" strategy (one group per row)."""
    W32, _ = validation.float_input(W, "W")
    validation.one_of(bits, BITS, "bits")
    g = int(W32.shape[-1] if group_size is None else validation.positive_int(group_size, "group_size"))
    check_layout(W32.shape, g)
    qmin, qmax = qrange(bits)
    w = group_view(W32, g)
    lo = np.minimum(w.min(axis=2), np.float32(0))
    hi = np.maximum(w.max(axis=2), np.float32(0))
    span = np.float32(qmax - qmin)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if symmetric:
            scale = (np.maximum(np.abs(lo), np.abs(hi)) / (span / np.float32(2))).astype(np.float32)
            zp = np.zeros_like(scale)
        else:
            scale = ((hi - lo) / span).astype(np.float32)
            zp = np.clip(np.float32(qmin) - lo / scale, qmin, qmax).astype(np.float32)
    if not np.all(np.isfinite(scale)):
        raise ValueError("W: a group's range exceeds the float32 maximum (no finite scale)")
    scale = np.where(scale == 0, np.float32(np.finfo(np.float32).eps), scale)
    zp = np.rint(np.nan_to_num(zp, nan=0.0)).astype(np.int8)  # step 2: NaN -> int8 0
    with np.errstate(over="ignore"):
        scaled = (w / scale[..., None]).astype(np.float32) + zp[..., None].astype(np.float32)
    q = np.rint(np.clip(scaled, qmin, qmax)).astype(np.int8)
    return CTQuant(q.reshape(W32.shape), scale, zp, bits, g, symmetric)


def dequantize(state: CTQuant) -> np.ndarray:
    """Step 5: (q - zp) * scale, float32."""
    scale = np.repeat(state.scales, state.group_size, axis=1)
    zp = np.repeat(state.zero_points, state.group_size, axis=1).astype(np.float32)
    return ((state.codes.astype(np.float32) - zp) * scale).astype(np.float32)


def pack(values: np.ndarray, bits: int, packed_dim: int = 1) -> np.ndarray:
    """Step 6, pack_to_int32: signed values (int8) offset by 2^(k-1), packed along `packed_dim`."""
    values = np.asarray(values)
    validation.one_of(packed_dim, (0, 1), "packed_dim")
    if values.dtype != np.int8 or values.ndim != 2:
        raise TypeError(f"values must be a 2-D int8 array, got {values.dtype} of shape {values.shape}")
    unsigned = values.astype(np.int64) + 2 ** (bits - 1)
    along_rows = unsigned.T if packed_dim == 1 else unsigned
    words = pack_bits(along_rows, bits)
    return words.T.copy() if packed_dim == 1 else words


def unpack(words: np.ndarray, bits: int, n: int, packed_dim: int = 1) -> np.ndarray:
    """Inverse of `pack`: the first n values along `packed_dim`, int8."""
    words = np.asarray(words)
    validation.one_of(packed_dim, (0, 1), "packed_dim")
    along_rows = words.T if packed_dim == 1 else words
    values = unpack_bits(np.ascontiguousarray(along_rows), bits, n) - 2 ** (bits - 1)
    return (values.T if packed_dim == 1 else values).astype(np.int8)


def to_checkpoint(state: CTQuant) -> dict[str, np.ndarray]:
    """The tensors a "pack-quantized" checkpoint holds for one linear: weight_packed int32,
    weight_scale float32, weight_zero_point int32 packed along dim 0 (asymmetric only),
    weight_shape int64."""
    out = {
        "weight_packed": pack(state.codes, state.bits, 1),
        "weight_scale": state.scales.copy(),
        "weight_shape": np.array(state.codes.shape, dtype=np.int64),
    }
    if not state.symmetric:
        out["weight_zero_point"] = pack(state.zero_points, state.bits, 0)
    return out
