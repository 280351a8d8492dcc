"""The reference as a backend: NumPy arrays, each primitive a call into the reference modules."""

from __future__ import annotations

import numpy as np

from . import blockwise, double_quant, groupwise, packing
from .backend import BackendBase
from .codebooks import get_codebook
from .dtypes import BFloat16Array
from .registry import BackendUnavailable


class NumpyBackend(BackendBase):
    """The spec itself. Arrays: numpy.ndarray, bfloat16 as qref.BFloat16Array."""

    name = "numpy"
    DEVICES = (None,)

    def __init__(self, device: str | None = None):
        if device not in (None, "cpu"):
            raise BackendUnavailable(f"numpy runs on the cpu only, not {device!r}")
        self.device = "cpu"

    def from_numpy(self, a):
        return a.copy() if isinstance(a, np.ndarray) else a

    def to_numpy(self, a):
        return a

    def quantize_blockwise(self, x, codebook, blocksize):
        return blockwise.quantize_blockwise(x, get_codebook(codebook), blocksize)

    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        return blockwise.dequantize_blockwise(codes, absmax, get_codebook(codebook), blocksize, out_dtype)

    def pack_nibbles(self, codes, pad_code=0):
        return packing.pack_nibbles(codes, pad_code)

    def unpack_nibbles(self, packed, n):
        return packing.unpack_nibbles(packed, n)

    def exponent_sums(self, values):
        return double_quant.exponent_sums(values)

    def quantize_groupwise(self, W, bits, group_size, profile):
        gq = groupwise.quantize_groupwise(W, bits, group_size, profile)
        return gq.codes, gq.scales, gq.zeros

    # linear algebra
    def astype(self, a, dtype):
        return (a.to_float32() if isinstance(a, BFloat16Array) else np.asarray(a)).astype(dtype)

    def svd(self, R):
        return np.linalg.svd(R, full_matrices=False)

    def solve(self, M, Y):
        return np.linalg.solve(M, Y)

    def norm(self, a) -> float:
        return float(np.linalg.norm(a))

    def sqrt(self, a):
        return np.sqrt(a)

    def qr(self, a):
        return np.linalg.qr(a)[0]

    def randn(self, shape, seed: int = 0):
        return np.random.default_rng(seed).standard_normal(shape)
