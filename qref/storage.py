"""Storage calculator: bits per parameter and bytes of blockwise quantization (docs/storage.md).

One level:  b + a/B             (a = absmax bits, 32 for float32)
Two levels: b + b2/B + a2/(B*B2) (QLoRA Sec. 3; LQ-LoRA Sec. 3.1 writes the same sum)
where b = code bits, B = first-level block, b2 = bits of the quantized absmax, B2 = second-level
block, a2 = bits of the second-level absmax. Exact byte counts also include the tail blocks, the
odd-length pad nibble, the float32 offset and (optionally) the code tables stored per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil

from . import validation


@dataclass(frozen=True)
class StorageConfig:
    """bits, first-level block, and (if double-quantized) second-level bits and block."""

    bits: int = 4
    blocksize: int = 64
    absmax_bits: int = 32
    blocksize2: int | None = None  # None: absmax stored at absmax_bits, no second level
    absmax2_bits: int = 32

    def __post_init__(self):
        for name in ("bits", "blocksize", "absmax_bits", "absmax2_bits"):
            validation.positive_int(getattr(self, name), name)
        if self.blocksize2 is not None:
            validation.positive_int(self.blocksize2, "blocksize2")
            if self.absmax_bits > 8:  # a second level quantizes the absmax to codes of a 2^absmax_bits table
                raise ValueError(
                    f"absmax_bits = {self.absmax_bits} with a second level (blocksize2 = {self.blocksize2}): "
                    "double-quantized absmax are codes of at most 8 bits"
                )


#: QLoRA's NF4 with double quantization: 4 bits, block 64, 8-bit absmax in blocks of 256.
QLORA_NF4_DQ = StorageConfig(bits=4, blocksize=64, absmax_bits=8, blocksize2=256)
#: NF4 with float32 absmax per block of 64 (no double quantization).
QLORA_NF4 = StorageConfig(bits=4, blocksize=64)


def bits_per_parameter(cfg: StorageConfig) -> Fraction:
    """Asymptotic bits per parameter, exactly, as a Fraction (the formulas in the module doc)."""
    bpp = Fraction(cfg.bits) + Fraction(cfg.absmax_bits, cfg.blocksize)
    if cfg.blocksize2 is not None:
        bpp += Fraction(cfg.absmax2_bits, cfg.blocksize * cfg.blocksize2)
    return bpp


def storage_bits(n: int, cfg: StorageConfig, include_tables: bool = False) -> int:
    """Exact bits to store n parameters: padded codes, every absmax (tail blocks too), the offset."""
    n = validation.positive_int(n, "n")
    per_byte = 8 // cfg.bits if 8 % cfg.bits == 0 else None
    code_bits = 8 * ceil(n / per_byte) if per_byte else ceil(n * cfg.bits / 8) * 8
    blocks = ceil(n / cfg.blocksize)
    total = code_bits + blocks * cfg.absmax_bits
    if cfg.blocksize2 is not None:
        total += ceil(blocks / cfg.blocksize2) * cfg.absmax2_bits + 32  # + the float32 offset
    if include_tables:
        total += 32 * 2**cfg.bits + (32 * 2**cfg.absmax_bits if cfg.blocksize2 is not None else 0)
    return total


def storage_bytes(n: int, cfg: StorageConfig, include_tables: bool = False) -> int:
    """Exact bytes to store n parameters (see `storage_bits`)."""
    return ceil(storage_bits(n, cfg, include_tables) / 8)
