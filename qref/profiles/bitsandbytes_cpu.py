"""bitsandbytes' CPU kernels (bitsandbytes 0.50.2, libbitsandbytes_cpu): where they differ from qref's
default, and only there (docs/profiles.md).

The 4-bit step (NF4/FP4 codes, absmax, packing) is the default's, byte for byte. The 8-bit blockwise
quantizer, which double quantization applies to the absmax, is not round-to-nearest on the CPU. It
looks codes up in a 65,536-entry table over [-1, 1]:

    LUT[i]  = #{j : m_j < v_i},  m_j = RN_f32(0.5 (c_j + c_{j+1})),  v_i = RN_f32(-1 + RN_f32(2 i / 65535))
    code(x) = LUT[trunc(RN_f32(RN_f32(RN_f32(clip(x / absmax) + 1) * 0.5) * 65535) + 0.5)]
              with x / absmax computed as x * RN_f32(1 / absmax); an all-zero block gets absmax 0, codes 0

so a value lands on the code of the table cell it falls in, not on the nearest code: where codes are
closer together than a cell (near 0 in the dynamic map), a neighbour one to four codes away.

The offset is the library's float32 `mean` of the absmax, in PyTorch's reduction order, which depends
on the build and the CPU's vector width; pass it as `offset` (bitsandbytes keeps it in
QuantState.offset) to reproduce the bytes exactly. Without it, qref's order-free mean is used.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import validation
from ..codebooks import Codebook, get_codebook
from ..double_quant import DQ_BLOCKSIZE, DoubleQuant, mean_offset
from ..fourbit import quantize_4bit as default_quantize_4bit
from ..quant_state import QuantState

#: Cells of the lookup table over [-1, 1].
LUT_SIZE = 65536


@lru_cache(maxsize=8)
def _lut(table: bytes) -> np.ndarray:
    code = np.frombuffer(table, dtype=np.float32)
    mid = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    cells = np.arange(LUT_SIZE, dtype=np.float32)
    v = (np.float32(-1) + (np.float32(2) * cells) / np.float32(LUT_SIZE - 1)).astype(np.float32)
    lut = np.searchsorted(mid, v, side="left").astype(np.uint8)
    lut.flags.writeable = False
    return lut


def lookup_table(codebook: Codebook) -> np.ndarray:
    """The 65,536 codes of the CPU kernel's table for `codebook` (256 sorted values in [-1, 1])."""
    values = np.asarray(codebook.values, dtype=np.float32)
    if values.shape != (256,) or np.any(np.diff(values) <= 0):
        raise ValueError("codebook must hold 256 increasing values (the 8-bit maps)")
    return _lut(values.tobytes())


def quantize_blockwise_8bit(x, codebook: Codebook, blocksize: int) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' CPU `quantize_blockwise`: per-block absmax, then the table lookup above."""
    x32, _ = validation.float_input(x, "x")
    blocksize = validation.positive_int(blocksize, "blocksize")
    lut = lookup_table(codebook)
    flat = x32.reshape(-1)
    n = flat.size
    nblocks = -(-n // blocksize)
    padded = np.zeros(nblocks * blocksize, dtype=np.float32)
    padded[:n] = flat
    blocks = padded.reshape(nblocks, blocksize)
    absmax = np.abs(blocks).max(axis=1)
    inverse = (np.float32(1) / np.where(absmax == 0, np.float32(1), absmax)).astype(np.float32)
    scaled = np.clip(blocks * inverse[:, None], np.float32(-1), np.float32(1))
    cell = (((scaled + np.float32(1)) * np.float32(0.5)) * np.float32(LUT_SIZE - 1) + np.float32(0.5)).astype(
        np.float32
    )
    codes = lut[cell.astype(np.int64)]
    codes[absmax == 0] = 0
    return codes.reshape(-1)[:n].reshape(x32.shape), absmax


def quantize_4bit(x, blocksize: int = 64, quant_type: str = "nf4", compress_statistics: bool = False, offset=None):
    """bitsandbytes' CPU `quantize_4bit`: the default 4-bit step; the absmax, when compressed, by the
    table quantizer with the dynamic map, block 256, around `offset` (default: qref's mean)."""
    packed, state = default_quantize_4bit(x, blocksize, quant_type, False)
    if not compress_statistics:
        return packed, state
    absmax = state.absmax
    offset = mean_offset(absmax) if offset is None else np.float32(validation.real(offset, "offset"))
    validation.finite(np.asarray(offset), "offset")
    dynamic = get_codebook("dynamic")
    qabsmax, absmax2 = quantize_blockwise_8bit(absmax - offset, dynamic, DQ_BLOCKSIZE)
    nested = DoubleQuant(qabsmax, absmax2, offset, DQ_BLOCKSIZE, dynamic)
    return packed, QuantState(
        quant_type=state.quant_type,
        absmax=qabsmax,
        blocksize=state.blocksize,
        code=state.code,
        dtype=state.dtype,
        shape=state.shape,
        nested=nested,
    )
