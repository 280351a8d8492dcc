"""Blockwise absmax quantization with any codebook (QLoRA Eq. 1-2; docs/blockwise.md).

The flattened input is cut into blocks of `blocksize` consecutive elements; the last block may be
shorter (the tail). Decision points, bitsandbytes' semantics (its pure-PyTorch kernel, 0.50):
  1. arithmetic in float32 after an exact upcast of float16/bfloat16 input;
  2. absmax_b = max |x_i| over block b;
  3. full blocks are scaled by a float32 reciprocal, x * (1 / max(absmax_b, 1e-38)); the tail block
     is divided, x / max(absmax_t, 1e-38); results are clamped to [-1, 1];
  4. nearest code by the float32 midpoints of the sorted codebook, ties to the lower code;
  5. zero blocks: scaling uses 1e-38 so every element takes the zero code; a full zero block stores
     absmax 0, a zero tail block stores the clamped float32(1e-38);
  6. dequantization is code[q] * absmax_b in float32, then rounded to the output format.
"""

from __future__ import annotations

import numpy as np

from . import validation
from .codebooks import Codebook
from .dtypes import cast_float32

#: Smallest divisor used when scaling (bitsandbytes' clamp), float32(1e-38), a subnormal.
ABSMAX_FLOOR = np.float32(1e-38)


def split_blocks(n: int, blocksize: int) -> tuple[int, int]:
    """(number of full blocks, length of the tail block) of n elements."""
    return n // blocksize, n % blocksize


def block_absmax(x32: np.ndarray, blocksize: int) -> np.ndarray:
    """absmax_b = max_i |x_i| over each block (QLoRA Eq. 1's c); the tail floored at 1e-38."""
    full, rem = split_blocks(x32.size, blocksize)
    absmax = np.abs(x32[: full * blocksize]).reshape(full, blocksize).max(axis=1, initial=0.0)
    if rem:
        tail = np.maximum(np.abs(x32[full * blocksize :]).max(), ABSMAX_FLOOR)
        absmax = np.append(absmax, tail)
    return absmax.astype(np.float32)


def scale_blocks(x32: np.ndarray, absmax: np.ndarray, blocksize: int) -> np.ndarray:
    """x / absmax in [-1, 1]: reciprocal multiply on full blocks, true division on the tail."""
    full, rem = split_blocks(x32.size, blocksize)
    divisor = np.maximum(absmax, ABSMAX_FLOOR)
    head = x32[: full * blocksize].reshape(full, blocksize) * (np.float32(1) / divisor[:full])[:, None]
    scaled = head.reshape(-1)
    if rem:
        scaled = np.concatenate([scaled, x32[full * blocksize :] / divisor[full]])
    return np.clip(scaled, np.float32(-1), np.float32(1)).astype(np.float32)


def quantize_blockwise(x, codebook: Codebook, blocksize: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes q_i = nearest(x_i / absmax_b) and per-block absmax (QLoRA Eq. 1). Codes keep x's shape."""
    blocksize = validation.positive_int(blocksize, "blocksize")
    x32, _ = validation.float_input(x, "x")
    codes, absmax = quantize_flat(x32.reshape(-1), codebook, blocksize)
    return codes.reshape(x32.shape), absmax


def quantize_flat(flat32: np.ndarray, codebook: Codebook, blocksize: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-5 on validated flat float32 input: (codes, absmax)."""
    absmax = block_absmax(flat32, blocksize)
    return codebook.nearest(scale_blocks(flat32, absmax, blocksize)), absmax


def dequantize_blockwise(
    codes: np.ndarray, absmax: np.ndarray, codebook: Codebook, blocksize: int, out_dtype: str = "float32"
):
    """x_hat_i = code[q_i] * absmax_b in float32 (QLoRA Eq. 2), rounded to out_dtype."""
    blocksize = validation.positive_int(blocksize, "blocksize")
    codes = validation.uint8_array(codes, "codes")
    if codes.size == 0:
        raise ValueError("codes is empty")
    full, rem = split_blocks(codes.size, blocksize)
    absmax = validation.float32_vector(absmax, "absmax", full + (1 if rem else 0))
    if codes.max() >= codebook.size:
        raise ValueError(
            f"codes holds {int(codes.max())}, out of range for the {codebook.size}-entry codebook {codebook.name!r}"
        )
    values = codebook.values[codes.reshape(-1)]
    return cast_float32(times_absmax(values, absmax, blocksize).reshape(codes.shape), out_dtype)


def times_absmax(values: np.ndarray, absmax: np.ndarray, blocksize: int) -> np.ndarray:
    """float32 values * absmax_b of each element's block (the tail block included), in place: `values`
    is the caller's fresh 1-D float32 array (no second output to allocate)."""
    full, rem = split_blocks(values.size, blocksize)
    out = values
    np.multiply(
        values[: full * blocksize].reshape(full, blocksize),
        absmax[:full, None],
        out=out[: full * blocksize].reshape(full, blocksize),
    )
    if rem:
        np.multiply(values[full * blocksize :], absmax[full], out=out[full * blocksize :])
    return out
