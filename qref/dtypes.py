"""Floating-point formats of the reference: float32, float16 and bfloat16 (held as uint16 bits).

NumPy has no bfloat16, so the reference carries bfloat16 data as its raw 16-bit patterns in a
`BFloat16Array`. Conversions follow IEEE 754 and PyTorch exactly: bfloat16 -> float32 is exact
(the bits become the high half of a float32); float32 -> bfloat16 rounds to nearest, ties to even,
and maps every NaN to the quiet NaN 0x7FC0 (sign kept). See docs/dtypes.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Names of the element formats a quantizer accepts and a dequantizer can produce.
FLOAT_FORMATS = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class BFloat16Array:
    """An array of bfloat16 values stored as their uint16 bit patterns."""

    bits: np.ndarray

    def __post_init__(self):
        if not isinstance(self.bits, np.ndarray) or self.bits.dtype != np.uint16:
            raise TypeError("BFloat16Array.bits must be a numpy array of dtype uint16")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    @property
    def size(self) -> int:
        return self.bits.size

    def to_float32(self) -> np.ndarray:
        """Exact widening: the 16 bits become the high half of a float32."""
        return bf16_bits_to_float32(self.bits)

    @classmethod
    def from_float32(cls, x: np.ndarray) -> BFloat16Array:
        """Round float32 to bfloat16, to nearest with ties to even (PyTorch's rule)."""
        return cls(float32_to_bf16_bits(x))

    def __eq__(self, other):  # bitwise equality, as the exactness contract needs
        return isinstance(other, BFloat16Array) and np.array_equal(self.bits, other.bits)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared bitwise


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits -> float32, exact."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even; NaN -> 0x7FC0 with the sign bit kept."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
    quiet_nan = ((u >> 16) & np.uint32(0x8000)).astype(np.uint16) | np.uint16(0x7FC0)
    return np.where(np.isnan(x), quiet_nan, rounded)


def as_float32(x) -> np.ndarray:
    """The float32 values of any accepted array (bfloat16 and float16 widen exactly)."""
    return x.to_float32() if isinstance(x, BFloat16Array) else np.asarray(x, dtype=np.float32)


def format_of(x) -> str:
    """The element format of an accepted input array (see `FLOAT_FORMATS`)."""
    if isinstance(x, BFloat16Array):
        return "bfloat16"
    return np.dtype(x.dtype).name


def cast_float32(x32: np.ndarray, fmt: str):
    """Round float32 values to the requested output format (round to nearest even)."""
    if fmt == "float32":
        return x32
    if fmt == "float16":  # beyond 65504 rounds to +-inf (IEEE), as every framework's cast does
        with np.errstate(over="ignore"):
            return x32.astype(np.float16)
    if fmt == "bfloat16":
        return BFloat16Array.from_float32(x32)
    raise ValueError(f"out_dtype must be one of {FLOAT_FORMATS}, got {fmt!r}")


def round_to(x32: np.ndarray, fmt: str) -> np.ndarray:
    """Round float32 values to `fmt` (nearest even) and widen back to float32: the result of one op
    that PyTorch computes in float32 and stores in `fmt`."""
    with np.errstate(over="ignore", invalid="ignore"):
        return as_float32(cast_float32(np.asarray(x32, dtype=np.float32), fmt))


def bitwise_equal(a, b) -> bool:
    """True when two arrays (NumPy or BFloat16Array) hold identical bits and shapes."""
    if isinstance(a, BFloat16Array) or isinstance(b, BFloat16Array):
        return isinstance(a, BFloat16Array) and a == b
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tobytes() == b.tobytes()
