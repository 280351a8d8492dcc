"""Double quantization of the absmax constants (QLoRA Sec. 3, "Double Quantization"; docs/double-quant.md).

c2 = mean(c1) is subtracted, then the centred constants are quantized blockwise (block 256) with
the signed 8-bit dynamic map; dequantization restores c1 = code[q] * absmax2 + offset, each step
rounded to float32. The one decision point bitsandbytes leaves to the framework is the mean:
qref defines offset = float32(float64(exact sum) / n), the exact sum by math.fsum, so it does not
depend on a reduction order. A different offset (PyTorch's float32 `mean`) can be passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import validation
from .blockwise import dequantize_blockwise, quantize_blockwise
from .codebooks import Codebook, get_codebook

#: QLoRA's second-level block size.
DQ_BLOCKSIZE = 256


@dataclass(frozen=True)
class DoubleQuant:
    """Quantized absmax (uint8), second-level absmax (float32), offset (float32 scalar), layout."""

    qabsmax: np.ndarray
    absmax2: np.ndarray
    offset: np.float32
    blocksize: int
    codebook: Codebook


def mean_offset(absmax: np.ndarray) -> np.float32:
    """offset = RN_f32(RN_f64(sum_i c_i) / n), the sum exact (math.fsum): reduction-order free."""
    return np.float32(math.fsum(absmax.astype(np.float64).tolist()) / absmax.size)


def double_quantize(
    absmax: np.ndarray, blocksize: int = DQ_BLOCKSIZE, codebook: Codebook | None = None, offset=None
) -> DoubleQuant:
    """Quantize c1 - c2 blockwise with the signed dynamic map (QLoRA's c2^FP32 and c1^FP8)."""
    absmax = validation.float32_vector(absmax, "absmax", np.asarray(absmax).size)
    if absmax.size == 0:
        raise ValueError("absmax is empty")
    codebook = codebook or get_codebook("dynamic")
    offset = mean_offset(absmax) if offset is None else np.float32(validation.real(offset, "offset"))
    validation.finite(np.asarray(offset), "offset")  # a float64 offset beyond the float32 range
    qabsmax, absmax2 = quantize_blockwise(absmax - offset, codebook, blocksize)
    return DoubleQuant(qabsmax, absmax2, offset, blocksize, codebook)


def double_dequantize(dq: DoubleQuant) -> np.ndarray:
    """c1 = RN_f32(code[q] * absmax2) + offset, in float32: the exact inverse of the stored state."""
    centred = dequantize_blockwise(dq.qabsmax, dq.absmax2, dq.codebook, dq.blocksize)
    with np.errstate(over="ignore"):  # an overflow to inf is refused by the caller (known-divergences 14)
        return (centred + np.float32(dq.offset)).astype(np.float32)


#: frexp exponents of finite float32 values lie in [-148, 128]; sums are kept per exponent.
FREXP_EXPONENTS = np.arange(-148, 129)


def exponent_sums(absmax: np.ndarray) -> np.ndarray:
    """S_e = sum of the 24-bit integer significands m_i of the values with frexp exponent e, where
    c_i = m_i 2^(e-24): integer partial sums from which any backend gets the exact sum (int64)."""
    f, e = np.frexp(absmax.astype(np.float32))
    sums = np.zeros(FREXP_EXPONENTS.size, dtype=np.int64)
    np.add.at(sums, e - FREXP_EXPONENTS[0], np.ldexp(f, 24).astype(np.int64))
    return sums


def offset_from_exponent_sums(sums: np.ndarray, n: int) -> np.float32:
    """The same offset as `mean_offset`, from per-exponent integer sums: the exact sum as one Python
    integer in units of 2^-172 (the smallest c_i = m_i 2^(e-24) step), correctly rounded to float64 by
    the integer division, then divided by n and rounded to float32: how a GPU backend gets the
    reference's mean."""
    sums = np.asarray(sums)
    total = sum(int(sums[i]) << int(i) for i in np.flatnonzero(sums))  # bin i holds exponent e = i - 148
    return np.float32(total / (1 << SUM_SHIFT) / n)


#: exponent of the unit of `offset_from_exponent_sums`' integer total: 24 - FREXP_EXPONENTS[0].
SUM_SHIFT = 24 - int(FREXP_EXPONENTS[0])
