"""The reference's refusals for a device backend's arrays: the same errors, in the same order, as the
NumPy reference (qref.blockwise, docs/nan-inf.md), decided from facts every array type gives (its
dtype name, shape, an `all finite` and a `max` reduction). They call hooks of qref.backend.BackendBase
(defaults for NumPy arrays; `max_int` works for any array with `.max()`); a backend overrides:

    is_array(a) -> bool      the backend's array type
    all_finite(a) -> bool
"""

from __future__ import annotations

import numpy as np

from qref import validation
from qref.dtypes import FLOAT_FORMATS


def check_pack_nibbles(bk, codes, pad_code) -> int:
    """qref.packing.pack_nibbles' refusals; returns the pad code."""
    bk.require_array(codes, "codes")
    validation.dtype_is(str(codes.dtype), "uint8", "codes")
    if int(np.prod(tuple(codes.shape), dtype=np.int64)):
        validation.nibble_codes_max(bk.max_int(codes))
    return validation.pad_code(pad_code)


def check_unpack_nibbles(bk, packed, n) -> int:
    """qref.packing.unpack_nibbles' refusals; returns n."""
    bk.require_array(packed, "packed")
    validation.dtype_is(str(packed.dtype), "uint8", "packed")
    n = validation.count(n, "n")
    size = int(np.prod(tuple(packed.shape), dtype=np.int64))
    if size != (n + 1) // 2:
        raise ValueError(f"packed must hold ceil(n/2) = {(n + 1) // 2} bytes for n = {n}, got {size}")
    return n


def check_absmax(bk, absmax, n: int, blocksize: int) -> None:
    """The absmax of n codes in blocks of `blocksize`: float32, 1-D, one per block, finite."""
    validation.dtype_is(str(absmax.dtype), "float32", "absmax")
    if len(absmax.shape) != 1:
        raise ValueError(f"absmax must be 1-D, got shape {tuple(absmax.shape)}")
    if int(absmax.shape[0]) != -(-n // blocksize):
        raise ValueError(f"absmax must have shape ({-(-n // blocksize)},), got {int(absmax.shape[0])} values")
    if not bk.all_finite(absmax):
        raise ValueError("absmax contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)")


def check_dequantize_4bit_codes(bk, packed, absmax, n: int, blocksize, out_dtype) -> int:
    """dequantize_4bit's refusals on packed nibbles, in the order of unpack_nibbles then
    dequantize_blockwise (whose code checks the unpacked nibbles always pass); returns n."""
    n = check_unpack_nibbles(bk, packed, n)
    blocksize = validation.positive_int(blocksize, "blocksize")
    validation.one_of(out_dtype, FLOAT_FORMATS, "out_dtype")
    bk.require_array(absmax, "absmax")
    check_absmax(bk, absmax, n, blocksize)
    return n


def check_dequantize_blockwise(bk, codes, absmax, codebook_size: int, blocksize, out_dtype) -> int:
    """qref.blockwise.dequantize_blockwise's refusals, in its order; returns the number of codes."""
    blocksize = validation.positive_int(blocksize, "blocksize")
    validation.one_of(out_dtype, FLOAT_FORMATS, "out_dtype")
    bk.require_array(codes, "codes")
    bk.require_array(absmax, "absmax")
    validation.dtype_is(str(codes.dtype), "uint8", "codes")
    n = int(np.prod(tuple(codes.shape), dtype=np.int64))
    if n == 0:
        raise ValueError("codes is empty")
    check_absmax(bk, absmax, n, blocksize)
    top = bk.max_int(codes)
    if top >= codebook_size:
        raise ValueError(f"codes holds {top}, out of range for the {codebook_size}-entry codebook")
    return n
