"""PyTorch backend, any torch device (cpu, cuda): the reference's primitives in torch ops.

Each decision point follows the reference (qref/blockwise.py, qref/groupwise.py): float32
arithmetic, reciprocal multiply on full blocks and true division on the tail, absmax floored at
1e-38, nearest code = number of float32 midpoints strictly below the scaled value (torch.bucketize,
right=False), round half to even (torch.round). The exact mean of double quantization comes from
integer sums per frexp exponent (qref.double_quant.exponent_sums). On CUDA, where CuPy is
importable, the 4-bit ops run the fused kernels of backends/cuda_kernels.py (through backends/cuda_bridge.py)
on torch's memory (torch
allocates, the kernels get raw addresses, on torch's current stream); without CuPy they run as torch ops.
"""

from __future__ import annotations

import numpy as np

from qref import groupwise, validation
from qref.backend import BackendBase, zero_code
from qref.blockwise import ABSMAX_FLOOR
from qref.codebooks import get_codebook
from qref.dtypes import BFloat16Array
from qref.fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT
from qref.registry import BackendUnavailable

from . import cpu_kernels, cuda_lut
from .checks import check_dequantize_4bit_codes, check_dequantize_blockwise, check_pack_nibbles, check_unpack_nibbles

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised where torch is missing
    torch = None
    _IMPORT_ERROR = e

_FLOATS = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}


class TorchBackend(BackendBase):
    name = "torch"
    DEVICES = ("cpu", "cuda")

    def __init__(self, device: str | None = None):
        if torch is None:
            raise BackendUnavailable(f"torch is not installed ({_IMPORT_ERROR})")
        device = device or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch:cuda needs a CUDA device; torch.cuda.is_available() is False")
        self.device = device
        self._tables = {}
        self._buckets: dict = {}
        self._fused = None
        self.fused_unavailable = "not on CUDA" if not device.startswith("cuda") else ""
        if device.startswith("cuda"):
            from .cuda_bridge import TorchBridge

            try:
                self._fused = TorchBridge(torch.device(device).index or 0)
            except BackendUnavailable as e:  # no CuPy or no device for it: plain torch ops, reason kept
                self.fused_unavailable = str(e)

    # ---- conversion ----
    def from_numpy(self, a):
        bf16 = isinstance(a, BFloat16Array)
        host = np.ascontiguousarray(a.bits.view(np.int16) if bf16 else a)
        if self.device == "cpu" or not host.flags.writeable:  # the result never aliases the caller's array
            host = host.copy()
        t = torch.from_numpy(host)
        return (t.view(torch.bfloat16) if bf16 else t).to(self.device)

    def host_buffer(self, shape, dtype):
        if self.device == "cpu":
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return torch.empty(n, dtype=torch.uint8, pin_memory=True).numpy().view(dtype).reshape(shape)

    def to_numpy(self, a):
        a = a.detach().cpu()
        if a.dtype == torch.bfloat16:
            return BFloat16Array(a.view(torch.int16).numpy().view(np.uint16).copy())
        return a.numpy()

    def is_array(self, a) -> bool:
        return isinstance(a, torch.Tensor)

    def all_finite(self, a) -> bool:
        # the min and max carry any NaN and are infinite where any value is: one pass, no bool array
        if a.numel() == 0:
            return True
        lo, hi = torch.aminmax(a)
        return bool(torch.isfinite(lo) & torch.isfinite(hi))

    def _table(self, codebook: str):
        if not isinstance(codebook, str) or codebook not in self._tables:  # a list would fail the hashing
            cb = get_codebook(codebook)  # refuses an unknown name
            self._tables[codebook] = tuple(
                torch.from_numpy(np.asarray(a).copy()).to(self.device)
                for a in (cb.values, cb.midpoints, cb.order.astype(np.uint8))
            )
        return self._tables[codebook]

    def _float_tensor(self, x, name="x"):
        """x itself, refused unless a non-empty float32, float16 or bfloat16 tensor."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")
        if x.numel() == 0:
            raise ValueError(f"{name} is empty; quantization needs at least one element")
        return x

    def _float_input(self, x, name="x", check_finite=True):
        x32 = self._float_tensor(x, name).float()
        if not check_finite:
            return x32
        bad = ~torch.isfinite(x32)
        if bool(bad.any()):
            i = int(torch.nonzero(bad.reshape(-1))[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite value(s) (first at flat index {i}); "
                "the reference rejects NaN and Inf (docs/nan-inf.md)"
            )
        return x32

    # ---- bit-exact primitives ----
    def quantize_blockwise(self, x, codebook, blocksize):
        return self._blockwise(x, codebook, blocksize)

    def _packed_codes(self, x, quant_type: str, blocksize: int):
        """quantize_4bit's packed codes and absmax: on the CPU the kernels pack the whole blocks' codes as
        they go (no array of codes in between); the tail's are packed after them."""
        if self.device != "cpu":
            return super()._packed_codes(x, quant_type, blocksize)
        return self._blockwise(x, quant_type, blocksize, pad=zero_code(quant_type))

    def _blockwise(self, x, codebook, blocksize, pad: int | None = None):
        """quantize_blockwise's (codes, absmax); with `pad` (a code; blocksize even) the codes packed two
        per byte, high nibble first, an odd count padded with it (pack_nibbles), as a 1-D array."""
        blocksize = validation.positive_int(blocksize, "blocksize")
        x = self._float_tensor(x)
        _, midpoints, order = self._table(codebook)  # refuses an unknown codebook before any work
        n = x.numel()
        full, rem = divmod(n, blocksize)
        floor = torch.tensor(ABSMAX_FLOOR, device=x.device)
        flat = x.reshape(-1)
        if not (self.device == "cpu" and flat.dtype == torch.bfloat16):  # the kernels widen bfloat16 as read
            flat = flat.float()
        compiled = None
        if self.device == "cpu":  # large inputs: one loop per block (backends/cpu_kernels.py), same bits
            head = flat[: full * blocksize].view(full, blocksize)
            compiled = cpu_kernels.codes(codebook, midpoints, order, head, packed=pad is not None)
        if compiled is None:
            flat = flat.float()  # the eager path works in float32 (a no-op on float32)
        head = flat[: full * blocksize].view(full, blocksize)
        tail = flat[full * blocksize :].float()
        if compiled is not None:
            head_codes, absmax = compiled
        else:
            absmax = head.abs().amax(1) if full else flat.new_zeros(0)
        if rem:
            absmax = torch.cat([absmax, torch.maximum(tail.abs().amax(), floor)[None]])
        if not self.all_finite(absmax):  # amax carries any NaN or Inf of its block
            self._float_input(x)  # raises, naming the first non-finite element
        if compiled is not None:
            if not rem:
                return (head_codes if pad is not None else head_codes.reshape(x.shape)), absmax
            tail_codes = self._codes(codebook, (tail / absmax[full]).clamp_(-1, 1))
            if pad is not None:  # whole blocks hold an even number of codes: the tail's bytes follow theirs
                return torch.cat([head_codes, self.pack_nibbles(tail_codes, pad)]), absmax
            return torch.cat([head_codes, tail_codes]).reshape(x.shape), absmax
        scaled = (head * torch.reciprocal(torch.maximum(absmax[:full], floor))[:, None]).reshape(-1)
        if rem:
            scaled = torch.cat([scaled, tail / absmax[full]])
        codes = self._codes(codebook, scaled.clamp_(-1, 1))
        return (self.pack_nibbles(codes, pad) if pad is not None else codes.reshape(x.shape)), absmax

    def _codes(self, codebook: str, scaled):
        """The code of each scaled value in [-1, 1]: the nearest, ties to the lower (bucketize)."""
        _, midpoints, order = self._table(codebook)
        table = self._bucket_table(codebook) if self.device == "cpu" else None
        if table is None:
            codes = order[torch.bucketize(scaled, midpoints, right=False)]
        else:  # backends/cuda_lut.py's exact bucket tables: two gathers instead of a binary search
            mid, lo, hi, bucket = table
            k = bucket(scaled)
            above = scaled > torch.index_select(mid, 0, k)
            codes = torch.where(above, torch.index_select(hi, 0, k), torch.index_select(lo, 0, k))
        return codes

    def _bucket_table(self, codebook: str):
        """(midpoint or +inf, code not above, code above per bucket; the bucket of each scaled value), or
        None: cuda_lut's table over fl32(s + 6) (16-code codebooks), else its log-scale table (the 8-bit
        dynamic map of double quantization: a bucket per few bits of |s|, mirrored below 0)."""
        if codebook not in self._buckets:
            cb = get_codebook(codebook)
            t = cuda_lut.build(cb.midpoints, cb.order)
            if t is not None:
                shift, mask, offset = t.shift, t.mask, cuda_lut.OFFSET.item()

                def bucket(s):
                    return ((s + offset).view(torch.int32) >> shift) & mask

            else:
                t = cuda_lut.build_log(cb.midpoints, cb.order)
                if t is not None:
                    shift, low, high = t.shift, t.low, t.high
                    r = high - low + 1

                    def bucket(s):  # cuda_lut.log_bucket (s clamped to [-1, 1])
                        kc = (s.abs().view(torch.int32) >> shift).clamp_(low, high) - low
                        return torch.where(s < 0, r - 1 - kc, r + kc)

            if t is not None:
                e = t.entries
                mid = torch.from_numpy(e[:, 0].view(np.float32).copy())
                lo = torch.from_numpy((e[:, 1] & 0xFF).astype(np.uint8))
                hi = torch.from_numpy((e[:, 1] >> 8).astype(np.uint8))
                t = (mid, lo, hi, bucket)
            self._buckets[codebook] = t
        return self._buckets[codebook]

    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        values, _, _ = self._table(codebook)
        n = check_dequantize_blockwise(self, codes, absmax, values.numel(), blocksize, out_dtype)
        full, rem = divmod(n, blocksize)
        out = torch.index_select(values, 0, codes.reshape(-1).to(torch.int32))  # code[q], then * absmax in place
        out[: full * blocksize].view(full, blocksize).mul_(absmax[:full, None])
        if rem:
            out[full * blocksize :].mul_(absmax[full])
        return out.reshape(codes.shape).to(getattr(torch, out_dtype))

    def pack_nibbles(self, codes, pad_code=0):
        pad_code = check_pack_nibbles(self, codes, pad_code)
        codes = codes.reshape(-1)
        if codes.numel() % 2:
            codes = torch.cat([codes, codes.new_full((1,), pad_code)])
        return (codes[0::2] << 4) | codes[1::2]

    def unpack_nibbles(self, packed, n):
        n = check_unpack_nibbles(self, packed, n)
        packed = packed.reshape(-1)
        return torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[:n]

    def exponent_sums(self, values):
        from qref.double_quant import FREXP_EXPONENTS

        mantissa, exponent = torch.frexp(values.float().reshape(-1))
        m = (mantissa * 2.0**24).long()
        sums = torch.zeros(FREXP_EXPONENTS.size, dtype=torch.int64, device=values.device)
        sums.index_add_(0, (exponent - int(FREXP_EXPONENTS[0])).long(), m)
        return sums.cpu().numpy()

    def quantize_groupwise(self, W, bits, group_size, profile):
        W32 = self._float_input(W, "W")
        groupwise.check_args(tuple(W32.shape), bits, group_size, profile)
        # a tensor divisor: on CUDA, torch divides by a Python scalar as a multiply by its reciprocal
        maxq = torch.tensor(float(2**bits - 1), device=W32.device)
        w = W32.reshape(W32.shape[0], W32.shape[1] // group_size, group_size)
        if profile == "minmax":
            lo, hi = w.amin(2), w.amax(2)
            scale = (hi - lo) / maxq
            _finite_scale(scale)
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
            q = torch.clamp(torch.round((w - lo[..., None]) / scale[..., None]), 0, 2**bits - 1)
            return q.to(torch.uint8).reshape(W32.shape), scale, lo
        zero32 = torch.zeros((), device=w.device)
        xmin = torch.minimum(w.amin(2), zero32)
        xmax = torch.maximum(w.amax(2), zero32)
        if profile == "gptq-sym":
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        degenerate = ((xmin == 0) & (xmax == 0)) | ((xmax - xmin) / maxq == 0)
        xmin = torch.where(degenerate, -torch.ones_like(xmin), xmin)
        xmax = torch.where(degenerate, torch.ones_like(xmax), xmax)
        scale = (xmax - xmin) / maxq
        _finite_scale(scale)
        if profile == "gptq-sym":
            zero = torch.full_like(scale, float(2**bits // 2))
        else:
            zero = torch.round(-xmin / scale)
        q = torch.clamp(torch.round(w / scale[..., None]) + zero[..., None], 0, 2**bits - 1)
        return q.to(torch.uint8).reshape(W32.shape), scale, zero

    # ---- fused 4-bit paths (CUDA with CuPy) ----
    def quantize_4bit(self, x, blocksize=64, quant_type="nf4", double_quant=False):
        if self._fused is None:
            return super().quantize_4bit(x, blocksize, quant_type, double_quant)
        q = self._fused.quantize_known(x, blocksize, quant_type, double_quant)  # a shape quantized before
        if q is not None:
            return q
        if (
            not isinstance(x, torch.Tensor)
            or x.dtype not in (torch.float32, torch.float16, torch.bfloat16)
            or x.numel() == 0
        ):
            self._float_input(x)  # raises the reference's error; finiteness is checked inside the kernel
        return self._fused.quantize_4bit(self, x, blocksize, quant_type, double_quant)

    def batch(self):
        """On CUDA the calls of a batch wait once (TorchBridge.batch, qref.batch)."""
        return super().batch() if self._fused is None else self._fused.batch()

    def dequantize_4bit(self, q, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        if self._fused is not None:
            return self._fused.dequantize_4bit(self, q, shape, blocksize, quant_type, out_dtype)
        # One gather per byte from a 256-entry table of value pairs (code[b >> 4], code[b & 15]), as
        # qref.fourbit does, then * absmax in place: no separate unpacking pass.
        validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
        validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
        n = int(np.prod(shape, dtype=np.int64))
        absmax = q.absmax if q.qabsmax is None else self.double_dequantize(q.qabsmax, q.absmax2, q.offset)
        n = check_dequantize_4bit_codes(self, q.packed, absmax, n, blocksize, out_dtype)
        if self.device == "cpu":  # large inputs: one loop per block (backends/cpu_kernels.py), same bits
            out = cpu_kernels.dequantize(quant_type, q.packed.reshape(-1), absmax, n, blocksize, out_dtype)
            if out is not None:  # already in out_dtype
                return out.reshape(tuple(shape))
        out = torch.index_select(self._pairs(quant_type), 0, q.packed.reshape(-1).to(torch.int32)).reshape(-1)[:n]
        full, rem = divmod(n, blocksize)
        out[: full * blocksize].view(full, blocksize).mul_(absmax[:full, None])
        if rem:
            out[full * blocksize :].mul_(absmax[full])
        return out.reshape(tuple(shape)).to(getattr(torch, out_dtype))

    def _pairs(self, quant_type: str):
        """(256, 2) float32: the two code values each packed byte holds, high nibble first."""
        key = ("pairs", quant_type)
        if key not in self._tables:
            values = np.asarray(get_codebook(quant_type).values, dtype=np.float32)
            pairs = np.stack([values[np.arange(256) >> 4], values[np.arange(256) & 15]], axis=1)
            self._tables[key] = torch.from_numpy(np.ascontiguousarray(pairs)).to(self.device)
        return self._tables[key]

    # ---- linear algebra ----
    def astype(self, a, dtype):
        return a.to(getattr(torch, _FLOATS[dtype]))

    def svd(self, R):
        return torch.linalg.svd(R, full_matrices=False)

    def solve(self, M, Y):
        return torch.linalg.solve(M, Y)

    def norm(self, a) -> float:
        return float(torch.linalg.norm(a))

    def sqrt(self, a):
        return torch.sqrt(a)

    def qr(self, a):
        return torch.linalg.qr(a)[0]

    def randn(self, shape, seed: int = 0):
        g = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(shape, generator=g, device=self.device, dtype=torch.float64)


def _finite_scale(scale) -> None:
    """The reference refuses a group whose range exceeds the float32 maximum (qref.groupwise)."""
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("W: a group's range max - min exceeds the float32 maximum (no finite scale)")
