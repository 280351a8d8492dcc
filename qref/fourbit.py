"""4-bit NF4/FP4 quantization of a whole tensor, bitsandbytes' `quantize_4bit` semantics (docs/fourbit.md).

quantize_4bit = blockwise absmax quantization with the NF4 or FP4 codebook, nibble packing (pad
with the code of 0.0), optional double quantization of the absmax (QLoRA Sec. 3).
"""

from __future__ import annotations

import numpy as np

from . import validation
from .blockwise import quantize_flat, split_blocks, times_absmax
from .codebooks import get_codebook
from .double_quant import DQ_BLOCKSIZE, double_quantize
from .dtypes import FLOAT_FORMATS, cast_float32
from .packing import as_storage, from_storage, pack_nibbles
from .quant_state import QuantState

#: Block sizes bitsandbytes accepts for 4-bit quantization.
BLOCKSIZES_4BIT = (32, 64, 128, 256, 512, 1024, 2048, 4096)
QUANT_TYPES_4BIT = ("nf4", "fp4")


def quantize_4bit(
    x,
    blocksize: int = 64,
    quant_type: str = "nf4",
    compress_statistics: bool = False,
    quant_storage: str = "uint8",
    offset=None,
) -> tuple[np.ndarray, QuantState]:
    """Packed 4-bit codes, shape (ceil(n/2) / itemsize, 1), and the QuantState (QLoRA Eq. 5's storage)."""
    validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
    validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
    if not isinstance(compress_statistics, (bool, np.bool_)):
        raise TypeError(f"compress_statistics must be True or False, got {compress_statistics!r}")
    x32, fmt = validation.float_input(x, "x")
    codebook = get_codebook(quant_type)
    codes, absmax = quantize_flat(x32.reshape(-1), codebook, blocksize)
    zero_code = int(codebook.nearest(np.zeros(1, dtype=np.float32))[0])
    packed = as_storage(pack_nibbles(codes, pad_code=zero_code), quant_storage)
    nested = double_quantize(absmax, DQ_BLOCKSIZE, offset=offset) if compress_statistics else None
    state = QuantState(
        quant_type=quant_type,
        absmax=nested.qabsmax if nested else absmax,
        blocksize=blocksize,
        code=codebook.values,
        dtype=fmt,
        shape=tuple(x32.shape),
        nested=nested,
    )
    return packed, state


def dequantize_4bit(packed: np.ndarray, state: QuantState, out_dtype: str | None = None):
    """x_hat = code[q] * absmax per block in float32, rounded to out_dtype (default: state.dtype)."""
    if not isinstance(state, QuantState):
        raise TypeError(f"state must be a qref QuantState, got {type(state).__name__}")
    validation.one_of(state.blocksize, BLOCKSIZES_4BIT, "state.blocksize")
    validation.one_of(state.quant_type, QUANT_TYPES_4BIT, "state.quant_type")
    out_dtype = validation.one_of(state.dtype if out_dtype is None else out_dtype, FLOAT_FORMATS, "out_dtype")
    raw = from_storage(packed)
    n = int(np.prod(state.shape, dtype=np.int64))
    if n == 0 or raw.size != (n + 1) // 2:
        raise ValueError(f"packed holds {raw.size} bytes; shape {state.shape} needs {(n + 1) // 2}")
    full, rem = split_blocks(n, state.blocksize)
    absmax = validation.float32_vector(state.absmax_float32(), "state.absmax", full + (1 if rem else 0))
    table = np.asarray(state.code, dtype=np.float32)
    if table.shape != (16,):
        raise ValueError(f"state.code must hold 16 float32 values, got shape {table.shape}")
    # One lookup per byte: pairs[b] = (code[b >> 4], code[b & 15]), i.e. unpack and look up at once.
    pairs = np.stack([table[np.arange(256) >> 4], table[np.arange(256) & 15]], axis=1)
    values = np.ascontiguousarray(pairs).view(np.uint64).ravel()[raw.ravel()].view(np.float32)[:n]
    out = times_absmax(values, absmax, state.blocksize)
    return cast_float32(out.reshape(state.shape), out_dtype)
