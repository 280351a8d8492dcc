"""CuPy backend (CUDA): blockwise quantization by the kernels of backends/cuda_kernels.py (the fused 4-bit
calls through backends/fused4bit.py, shared with the PyTorch backend on CUDA), the rest by
CuPy's NumPy-compatible ops with the reference's float32 arithmetic. bfloat16 arrays travel as
`CupyBF16` (their uint16 bits), since CuPy has no bfloat16 dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qref import groupwise, validation
from qref.backend import BackendBase, FourBit
from qref.dtypes import FLOAT_FORMATS, BFloat16Array
from qref.fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT

from . import cuda_kernels as K
from . import cuda_launch as L
from .checks import check_dequantize_blockwise, check_pack_nibbles, check_unpack_nibbles
from .cuda_bridge import cupy_or_unavailable as _cupy
from .fused4bit import Fused4bit, with_device


@dataclass(frozen=True)
class CupyBF16:
    """bfloat16 values on the GPU as their uint16 bits."""

    bits: object

    @property
    def shape(self):
        return self.bits.shape

    def reshape(self, *shape):
        return CupyBF16(self.bits.reshape(*shape))

    def to_float32(self):
        return (self.bits.astype("uint32") << 16).view("float32")


class CupyBackend(BackendBase):
    name = "cupy"
    DEVICES = ("cuda",)

    def __init__(self, device: str | None = None):
        cp = _cupy()
        index = int(device.split(":")[1]) if device and ":" in device else 0
        self.cp, self.device = cp, f"cuda:{index}"
        self._dev = cp.cuda.Device(index)
        dt = {k: np.dtype(k) for k in ("uint8", "uint16", "float32", "uint64")}
        self._fused = Fused4bit(
            cp,
            lambda size, dtype: cp.empty(size, dtype=dt[dtype]),
            lambda size, dtype: cp.zeros(size, dtype=dt[dtype]),
            index,
        )

    # ---- conversion ----
    def from_numpy(self, a):
        with self._dev:
            if isinstance(a, BFloat16Array):
                return CupyBF16(self.cp.asarray(a.bits))
            return self.cp.asarray(a)

    def to_numpy(self, a):
        if isinstance(a, CupyBF16):
            return BFloat16Array(self.cp.asnumpy(a.bits))
        return self.cp.asnumpy(a)

    _FORMATS = {np.dtype("float32"): "float32", np.dtype("float16"): "float16", np.dtype("uint16"): "bfloat16"}

    def is_array(self, a) -> bool:
        return isinstance(a, (self.cp.ndarray, CupyBF16))

    def all_finite(self, a) -> bool:
        return bool(self.cp.isfinite(a).all())

    def _flat_input(self, x, name="x"):
        """(C-contiguous array for the kernels, which read its address and size, format, shape) after the
        reference's checks; copies only an input that is not C-contiguous."""
        arr = x.bits if isinstance(x, CupyBF16) else x
        fmt = self._FORMATS.get(getattr(arr, "dtype", None))
        if fmt is None or not isinstance(arr, self.cp.ndarray) or (fmt == "bfloat16") != isinstance(x, CupyBF16):
            raise TypeError(f"{name} must be a float32/float16 cupy array or CupyBF16, got {type(x).__name__}")
        if arr.size == 0:
            raise ValueError(f"{name} is empty; quantization needs at least one element")
        if arr.data.device_id != self._dev.id:
            raise ValueError(f"{name} is on cuda:{arr.data.device_id}; this backend runs on {self.device}")
        return (arr if arr.flags.c_contiguous else self.cp.ascontiguousarray(arr)), fmt, x.shape

    # ---- bit-exact primitives ----
    def quantize_blockwise(self, x, codebook, blocksize):
        blocksize = validation.positive_int(blocksize, "blocksize")
        flat, fmt, shape = self._flat_input(x)
        with self._dev:
            _, mids, order, _ = self._fused.tables(codebook)
            flag = K.Flag.get(self.cp)
            codes, absmax = L.quantize(
                flat,
                fmt,
                flat.size,
                blocksize,
                mids,
                order,
                False,
                empty=self._fused.empty,
                flag=flag,
                device=self._dev.id,
            )
            flag.raise_if_set(L.NONFINITE)
        return codes.reshape(shape), absmax

    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        table = self._fused.tables(codebook)[0]
        n = check_dequantize_blockwise(self, codes, absmax, table.size, blocksize, out_dtype)
        with self._dev:
            flag = K.Flag.get(self.cp)
            out = L.dequantize(
                self.cp.ascontiguousarray(codes.reshape(-1)),
                n,
                blocksize,
                table,
                out_dtype,
                False,
                absmax=self.cp.ascontiguousarray(absmax),
                empty=self._fused.empty,
                flag=flag,
                device=self._dev.id,
            )
            flag.raise_if_set(L.NONFINITE_SCALE)
        return self._wrap(out.reshape(codes.shape), out_dtype)

    def _wrap(self, out, out_dtype):
        if out_dtype == "bfloat16":
            return CupyBF16(out)
        return out.view(self.cp.float16) if out_dtype == "float16" else out

    def pack_nibbles(self, codes, pad_code=0):
        cp = self.cp
        pad_code = check_pack_nibbles(self, codes, pad_code)
        codes = codes.reshape(-1)
        if codes.size % 2:
            codes = cp.concatenate([codes, cp.full(1, pad_code, dtype=cp.uint8)])
        return ((codes[0::2] << 4) | codes[1::2]).astype(cp.uint8)

    def unpack_nibbles(self, packed, n):
        n = check_unpack_nibbles(self, packed, n)
        packed = packed.reshape(-1)
        return self.cp.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:n]

    def exponent_sums(self, values):
        return K.exponent_sums(self.cp.ascontiguousarray(values.reshape(-1).astype(self.cp.float32)))

    def quantize_groupwise(self, W, bits, group_size, profile):
        self._flat_input(W, "W")
        W32 = self.cp.ascontiguousarray(self.astype(W, "float32"))
        if not bool(self.cp.isfinite(W32).all()):
            raise ValueError("W contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)")
        groupwise.check_args(tuple(W32.shape), bits, group_size, profile)
        codes, scale, zero = K.groupwise(W32, bits, group_size, profile)
        if not bool(self.cp.isfinite(scale).all()):  # the reference refuses such a group (qref.groupwise)
            raise ValueError("W: a group's range max - min exceeds the float32 maximum (no finite scale)")
        return codes, scale, zero

    # ---- fused 4-bit ----
    def quantize_4bit(self, x, blocksize=64, quant_type="nf4", double_quant=False):
        validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
        validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
        flat, fmt, _ = self._flat_input(x)
        return with_device(
            self.cp,
            self._dev,
            self._fused.quantize,
            flat,
            flat.size,
            fmt,
            blocksize,
            quant_type,
            double_quant,
            self.cp.cuda.get_current_stream(),
        )

    def batch(self):
        """The calls of a batch wait once, on CuPy's current stream (Fused4bit.batch, qref.batch)."""
        return self._fused.batch(self.cp.cuda.get_current_stream().ptr)

    def dequantize_4bit(self, q, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        validation.one_of(out_dtype, FLOAT_FORMATS, "out_dtype")
        shape = tuple(shape)
        n = math.prod(shape)
        if q.packed.size != (n + 1) // 2:
            raise ValueError(f"packed holds {q.packed.size} bytes; shape {shape} needs {(n + 1) // 2}")
        q = FourBit(
            self._ready("packed", q.packed),
            self._ready("absmax", q.absmax),
            self._ready("qabsmax", q.qabsmax),
            self._ready("absmax2", q.absmax2),
            q.offset,
        )
        return with_device(
            self.cp,
            self._dev,
            self._fused.dequantize,
            q,
            n,
            blocksize,
            quant_type,
            out_dtype,
            self.cp.cuda.get_current_stream(),
            lambda out: self._wrap(out if len(shape) == 1 else out.reshape(shape), out_dtype),
        )

    def _ready(self, name, a):
        """The kernels read raw addresses: a cupy array on this device, C-contiguous (None stays None)."""
        if a is None:
            return None
        if not isinstance(a, self.cp.ndarray) or a.data.device_id != self._dev.id:
            raise ValueError(f"{name} must be a cupy array on {self.device}")
        return a if a.flags.c_contiguous else self.cp.ascontiguousarray(a)

    def add_f32(self, a, scalar):
        """a + scalar in float32 without CuPy's flush to zero: added in float64 (rounding a float64 sum
        of two float32 values to float32 equals the float32 sum, as 53 >= 2 * 24 + 2) and rounded by
        qref's own cast kernel."""
        return K.convert(K.convert(a, "float64") + float(np.float32(float(scalar))), "float32")

    # ---- linear algebra ----
    def astype(self, a, dtype):
        """Casts; float32 <-> float64 by qref's kernel, since CuPy's casts flush subnormals."""
        a = a.to_float32() if isinstance(a, CupyBF16) else a
        if {a.dtype.name, dtype} == {"float32", "float64"}:
            return K.convert(a, dtype)
        if a.dtype.name == "float16" and dtype == "float64":
            return K.convert(a.astype("float32"), dtype)  # float16 has no float32 subnormals
        return a.astype(dtype)

    def svd(self, R):
        return self.cp.linalg.svd(R, full_matrices=False)

    def solve(self, M, Y):
        return self.cp.linalg.solve(M, Y)

    def norm(self, a) -> float:
        return float(self.cp.linalg.norm(a))

    def sqrt(self, a):
        return self.cp.sqrt(a)

    def qr(self, a):
        return self.cp.linalg.qr(a)[0]

    def randn(self, shape, seed: int = 0):
        return self.cp.random.default_rng(seed).standard_normal(shape, dtype=self.cp.float64)
