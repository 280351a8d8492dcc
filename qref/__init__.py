"""qref: the reference implementation of quantized-LoRA numerics (NumPy + SciPy only).

Each module is one concept of the spec; docs/ has one page per module with the math and every
decision point. Start at `quantize_4bit` / `dequantize_4bit` for QLoRA's NF4 and FP4.
"""

from .blockwise import dequantize_blockwise, quantize_blockwise
from .codebooks import CODEBOOK_NAMES, Codebook, get_codebook
from .double_quant import DoubleQuant, double_dequantize, double_quantize
from .dtypes import BFloat16Array, bitwise_equal
from .fourbit import BLOCKSIZES_4BIT, dequantize_4bit, quantize_4bit
from .packing import pack_nibbles, unpack_nibbles
from .quant_state import QuantState
from .storage import StorageConfig, bits_per_parameter, storage_bytes

__version__ = "0.1.0"

__all__ = [
    "BLOCKSIZES_4BIT",
    "CODEBOOK_NAMES",
    "BFloat16Array",
    "Codebook",
    "DoubleQuant",
    "QuantState",
    "StorageConfig",
    "bits_per_parameter",
    "bitwise_equal",
    "dequantize_4bit",
    "dequantize_blockwise",
    "double_dequantize",
    "double_quantize",
    "get_codebook",
    "pack_nibbles",
    "quantize_4bit",
    "quantize_blockwise",
    "storage_bytes",
    "unpack_nibbles",
]
