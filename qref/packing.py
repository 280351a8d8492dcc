"""Nibble packing of 4-bit codes (docs/packing.md).

Two codes per byte, the first element in the high nibble: byte_j = q_{2j} << 4 | q_{2j+1}.
An odd count is padded with one pad code (bitsandbytes pads the *scaled value* 0, so the pad is
the code nearest to 0). The packed bytes may be reinterpreted as another storage dtype
(bitsandbytes' quant_storage), which needs the byte count to be a multiple of its itemsize.
"""

from __future__ import annotations

import numpy as np

from . import validation

#: Storage dtypes bitsandbytes accepts for packed 4-bit data (quant_storage).
STORAGE_DTYPES = ("uint8", "int8", "float16", "bfloat16", "float32", "int32", "int64", "float64")
_STORAGE_VIEWS = ("uint8", "int8", "float16", "uint16", "float32", "int32", "int64", "float64")  # bfloat16 as uint16


def pack_nibbles(codes: np.ndarray, pad_code: int = 0) -> np.ndarray:
    """Pack 4-bit codes (uint8, values < 16) two per byte, first element high; shape (ceil(n/2),)."""
    codes = validation.uint8_array(codes, "codes").reshape(-1)
    if codes.size:
        validation.nibble_codes_max(int(codes.max()))
    pad_code = validation.pad_code(pad_code)
    if codes.size % 2:
        codes = np.append(codes, np.uint8(pad_code))
    return ((codes[0::2] << np.uint8(4)) | codes[1::2]).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `pack_nibbles`: the first n codes (the pad nibble of an odd n is dropped)."""
    packed = validation.uint8_array(packed, "packed").reshape(-1)
    n = validation.count(n, "n")  # n = 0: no bytes, no codes (pack_nibbles of no codes)
    if packed.size != (n + 1) // 2:
        raise ValueError(f"packed must hold ceil(n/2) = {(n + 1) // 2} bytes for n = {n}, got {packed.size}")
    codes = np.empty(2 * packed.size, dtype=np.uint8)
    codes[0::2] = packed >> np.uint8(4)
    codes[1::2] = packed & np.uint8(0x0F)
    return codes[:n]


def as_storage(packed: np.ndarray, storage: str) -> np.ndarray:
    """View packed bytes as storage dtype (bfloat16 as uint16 bits), shape (nbytes / itemsize, 1)."""
    validation.one_of(storage, STORAGE_DTYPES, "quant_storage")
    view_dtype = np.uint16 if storage == "bfloat16" else np.dtype(storage)
    itemsize = np.dtype(view_dtype).itemsize
    if packed.size % itemsize:
        raise ValueError(f"{packed.size} packed bytes do not fill whole {storage} elements ({itemsize} bytes each)")
    return np.ascontiguousarray(packed).view(view_dtype).reshape(-1, 1)


def from_storage(stored: np.ndarray) -> np.ndarray:
    """The packed bytes behind any storage view, as flat uint8."""
    if not isinstance(stored, np.ndarray) or stored.ndim == 0:
        raise TypeError(f"packed data must be a numpy array, got {type(stored).__name__}")
    if stored.dtype.name not in _STORAGE_VIEWS:
        raise TypeError(f"packed data must be a storage view ({', '.join(STORAGE_DTYPES)}), got {stored.dtype}")
    return np.ascontiguousarray(stored).reshape(-1).view(np.uint8)
