"""qref's own mutation testing: single-fault backends, each the reference with one documented decision
changed the way an implementer might get it wrong. The conformance suite must reject every one
(`python -m qref.conformance.mutation`); each names the decision of conformance/decisions.json it breaks.
Blockwise, 4-bit, packing, double quantization and the error contract here; group-wise, QA-LoRA, the
initialisers and the allocation in mutants_solvers.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qref import blockwise, double_quant, packing, validation
from qref.backend import FourBit, zero_code
from qref.codebooks import Codebook, get_codebook
from qref.dtypes import BFloat16Array, cast_float32
from qref.numpy_backend import NumpyBackend


@dataclass(frozen=True)
class Mutant:
    id: str
    decision: str  # an id of conformance/decisions.json
    fault: str
    backend: type


MUTANTS: list[Mutant] = []


def mutant(id: str, decision: str, fault: str):
    def register(cls):
        cls.name = f"mutant-{id}"
        MUTANTS.append(Mutant(id, decision, fault, cls))
        return cls

    return register


def _x32(x) -> np.ndarray:
    x32, _ = validation.float_input(x, "x")
    return x32


def _nearest_side(cb: Codebook, scaled: np.ndarray, side: str) -> np.ndarray:
    return np.take(cb.order.astype(np.uint8), np.searchsorted(cb.midpoints, scaled, side=side))


class _Blockwise(NumpyBackend):
    """The reference's quantize_blockwise split into overridable steps."""

    def absmax(self, flat, bs):
        return blockwise.block_absmax(flat, bs)

    def scale(self, flat, absmax, bs):
        return blockwise.scale_blocks(flat, absmax, bs)

    def nearest(self, cb, scaled):
        return cb.nearest(scaled)

    def quantize_blockwise(self, x, codebook, blocksize):
        blocksize = validation.positive_int(blocksize, "blocksize")
        x32 = _x32(x)
        flat = x32.reshape(-1)
        cb = get_codebook(codebook)
        absmax = self.absmax(flat, blocksize)
        return self.nearest(cb, self.scale(flat, absmax, blocksize)).reshape(x32.shape), absmax


# ---- blockwise quantization ----
@mutant("ties-up", "blockwise.ties", "a value exactly on a midpoint takes the upper code")
class TiesUp(_Blockwise):
    def nearest(self, cb, scaled):
        return _nearest_side(cb, scaled, "right")


@mutant("divide-full-blocks", "blockwise.full-block-scaling", "full blocks divided by absmax, not x * (1/absmax)")
class DivideFull(_Blockwise):
    def scale(self, flat, absmax, bs):
        per = np.repeat(np.maximum(absmax, blockwise.ABSMAX_FLOOR), bs)[: flat.size]
        return np.clip(flat / per, -1, 1).astype(np.float32)


@mutant("reciprocal-tail", "blockwise.tail-block-scaling", "the tail block multiplied by the reciprocal too")
class ReciprocalTail(_Blockwise):
    def scale(self, flat, absmax, bs):
        per = np.repeat(np.float32(1) / np.maximum(absmax, blockwise.ABSMAX_FLOOR), bs)[: flat.size]
        return np.clip(flat * per, -1, 1).astype(np.float32)


@mutant("no-floor", "blockwise.zero-block", "no 1e-38 floor on the divisor: a zero block divides 0/0")
class NoFloor(_Blockwise):
    def scale(self, flat, absmax, bs):
        with np.errstate(all="ignore"):
            per = np.repeat(absmax, bs)[: flat.size]
            return np.nan_to_num(np.clip(flat / per, -1, 1), nan=-1.0).astype(np.float32)


@mutant("floor-1e-30", "blockwise.subnormal-absmax", "the divisor floored at 1e-30 instead of 1e-38")
class Floor30(_Blockwise):
    def scale(self, flat, absmax, bs):
        return blockwise.scale_blocks(flat, np.maximum(absmax, np.float32(1e-30)), bs)


@mutant("tail-absmax-raw", "blockwise.zero-tail-block", "the tail block's absmax stored raw (0 for a zero tail)")
class TailRaw(_Blockwise):
    def absmax(self, flat, bs):
        a = blockwise.block_absmax(flat, bs)
        full, rem = divmod(flat.size, bs)
        if rem:
            a[-1] = np.abs(flat[full * bs :]).max()
        return a


@mutant("full-absmax-floored", "blockwise.zero-full-block", "a zero full block stores the floor, not 0")
class FullFloored(_Blockwise):
    def absmax(self, flat, bs):
        return np.maximum(blockwise.block_absmax(flat, bs), blockwise.ABSMAX_FLOOR)


@mutant("scale-float64", "blockwise.arithmetic-precision", "x / absmax in float64, then rounded")
class ScaleF64(_Blockwise):
    def scale(self, flat, absmax, bs):
        per = np.repeat(np.maximum(absmax, blockwise.ABSMAX_FLOOR).astype(np.float64), bs)[: flat.size]
        return np.clip(flat.astype(np.float64) / per, -1, 1).astype(np.float32)


@mutant("signed-absmax", "blockwise.absmax", "absmax as the largest value, not the largest magnitude")
class SignedAbsmax(_Blockwise):
    def absmax(self, flat, bs):
        a = blockwise.block_absmax(flat, bs)
        full, rem = divmod(flat.size, bs)
        big = flat[: full * bs].reshape(full, bs).max(axis=1, initial=-np.inf) if full else np.zeros(0, np.float32)
        a[:full] = np.where(big > 0, big, a[:full])
        return a


@mutant("column-blocks", "blockwise.block-layout", "blocks of the Fortran-order flattening")
class ColumnBlocks(_Blockwise):
    def quantize_blockwise(self, x, codebook, blocksize):
        x32 = _x32(x)
        if x32.ndim < 2:
            return super().quantize_blockwise(x, codebook, blocksize)
        codes, absmax = super().quantize_blockwise(np.asfortranarray(x32).T.copy(), codebook, blocksize)
        return codes.T.reshape(x32.shape).copy(), absmax


@mutant("nearest-argmin-f32", "codebooks.nearest", "nearest code by argmin of float32 |s - v| (lowest index)")
class ArgminF32(_Blockwise):
    def nearest(self, cb, scaled):
        d = np.abs(scaled[:, None] - cb.values[None, :].astype(np.float32))
        return np.argmin(d, axis=1).astype(np.uint8)


@mutant("midpoints-f64", "codebooks.midpoints", "midpoints kept in float64, not rounded to float32")
class MidpointsF64(_Blockwise):
    def nearest(self, cb, scaled):
        v = np.sort(cb.values.astype(np.float64))
        mids = (v[1:] + v[:-1]) / 2
        return np.take(cb.order.astype(np.uint8), np.searchsorted(mids, scaled.astype(np.float64), side="left"))


def _table_mutant(id, decision, fault, codebook, values):
    class Table(NumpyBackend):
        def dequantize_blockwise(self, codes, absmax, name, blocksize, out_dtype="float32"):
            out = super().dequantize_blockwise(codes, absmax, name, blocksize, out_dtype)  # validation
            if name != codebook:
                return out
            c = np.asarray(codes).reshape(-1)
            flat = values()[c] * np.repeat(np.asarray(absmax, np.float32), blocksize)[: c.size]
            return cast_float32(flat.astype(np.float32).reshape(np.shape(codes)), out_dtype)

    Table.__name__ = f"Table_{id}"
    return mutant(id, decision, fault)(Table)


def _nudged(codebook, i):
    def values():
        v = get_codebook(codebook).values.astype(np.float32).copy()
        v[i] = np.nextafter(v[i], np.float32(2))
        return v

    return values


def _fp4_negative_zero():
    v = get_codebook("fp4").values.astype(np.float32).copy()
    v[8] = np.float32(-0.0)
    return v


def _dynamic_numpy_linspace():
    """bitsandbytes' dynamic map built with NumPy's float32 linspace instead of PyTorch's evaluation."""
    from qref import codebooks

    saved = codebooks.linspace_f32
    codebooks.linspace_f32 = lambda a, b, n: np.linspace(a, b, n, dtype=np.float32)
    try:
        return codebooks.dynamic_map(signed=True)
    finally:
        codebooks.linspace_f32 = saved


_table_mutant("nf4-value-ulp", "codebooks.nf4-values", "one NF4 value 1 ulp off", "nf4", _nudged("nf4", 1))
_table_mutant("fp4-value-ulp", "codebooks.fp4-values", "one FP4 value 1 ulp off", "fp4", _nudged("fp4", 3))
_table_mutant("fp4-code8-negzero", "codebooks.fp4-zero", "FP4 code 8 is -0.0", "fp4", _fp4_negative_zero)
_table_mutant(
    "dynamic-numpy-linspace",
    "codebooks.dynamic-map",
    "the dynamic map from NumPy's float32 linspace",
    "dynamic",
    _dynamic_numpy_linspace,
)


@mutant("dequant-f64-round", "blockwise.dequantization", "float16 output rounded once from the float64 product")
class DequantF64(NumpyBackend):
    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        ref = super().dequantize_blockwise(codes, absmax, codebook, blocksize, out_dtype)
        if out_dtype != "float16":
            return ref
        c = np.asarray(codes).reshape(-1)
        v = get_codebook(codebook).values[c].astype(np.float64)
        v = v * np.repeat(np.asarray(absmax, np.float64), blocksize)[: c.size]
        return v.astype(np.float16).reshape(ref.shape)  # NumPy rounds float64 -> float16 in one step


@mutant("bf16-truncate", "dtypes.bfloat16-rounding", "float32 -> bfloat16 by truncation, not round to nearest even")
class Bf16Truncate(NumpyBackend):
    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        out = super().dequantize_blockwise(codes, absmax, codebook, blocksize, "float32")
        if out_dtype != "bfloat16":
            return cast_float32(out, out_dtype)
        return BFloat16Array((out.view(np.uint32) >> 16).astype(np.uint16))


@mutant("fp16-saturate", "dtypes.float16-overflow", "float32 -> float16 saturates at 65504 instead of inf")
class Fp16Saturate(NumpyBackend):
    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        out = super().dequantize_blockwise(codes, absmax, codebook, blocksize, "float32")
        if out_dtype != "float16":
            return cast_float32(out, out_dtype)
        return np.clip(out, -65504, 65504).astype(np.float16)


# ---- packing and the 4-bit composites ----
@mutant("low-nibble-first", "packing.nibble-order", "the first code of a pair in the low nibble")
class LowNibbleFirst(NumpyBackend):
    def pack_nibbles(self, codes, pad_code=0):
        hi = packing.pack_nibbles(codes, pad_code)
        return ((hi << 4) | (hi >> 4)).astype(np.uint8)

    def unpack_nibbles(self, packed, n):
        p = validation.uint8_array(packed, "packed")
        return packing.unpack_nibbles(((p << 4) | (p >> 4)).astype(np.uint8), n)


@mutant("pad-zero", "packing.pad-nibble", "the pad nibble of an odd length is 0, not the given code")
class PadZero(NumpyBackend):
    def pack_nibbles(self, codes, pad_code=0):
        return packing.pack_nibbles(codes, 0)


@mutant("unpack-signed", "packing.unpack", "bytes unpacked as signed int8 (high nibble sign-extended)")
class UnpackSigned(NumpyBackend):
    def unpack_nibbles(self, packed, n):
        p = validation.uint8_array(packed, "packed").reshape(-1).view(np.int8)
        out = np.empty(p.size * 2, np.int16)
        out[0::2], out[1::2] = p >> 4, p & 0xF
        return out[:n].astype(np.uint8)


@mutant("pack-masks-codes", "errors.codes-range", "codes >= 16 are masked into a nibble instead of refused")
class PackMasks(NumpyBackend):
    def pack_nibbles(self, codes, pad_code=0):
        return packing.pack_nibbles((np.asarray(codes) & 0xF).astype(np.uint8), pad_code & 0xF)


@mutant("fourbit-pad-code0", "fourbit.pad", "quantize_4bit pads odd lengths with code 0, not the zero code")
class FourbitPad(NumpyBackend):
    def quantize_4bit(self, x, blocksize=64, quant_type="nf4", double_quant=False):
        q = super().quantize_4bit(x, blocksize, quant_type, double_quant)
        n = _x32(x).size
        if n % 2:
            p = q.packed.copy()
            p[-1] = p[-1] & 0xF0
            return FourBit(p, q.absmax, q.qabsmax, q.absmax2, q.offset)
        return q


@mutant("fourbit-f32-only", "fourbit.output-format", "dequantize_4bit ignores out_dtype for bfloat16 (float32 out)")
class FourbitFormat(NumpyBackend):
    def dequantize_4bit(self, q, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        fmt = "float32" if out_dtype == "bfloat16" else out_dtype
        return super().dequantize_4bit(q, shape, blocksize, quant_type, fmt)


@mutant("fourbit-fp16-via-bf16", "fourbit.output-format", "float16 output rounded through bfloat16")
class FourbitFp16(NumpyBackend):
    def dequantize_4bit(self, q, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        out = super().dequantize_4bit(
            q, shape, blocksize, quant_type, "bfloat16" if out_dtype == "float16" else out_dtype
        )
        return out.to_float32().astype(np.float16) if out_dtype == "float16" else out


@mutant("fourbit-accepts-nan", "errors.non-finite", "quantize_4bit accepts NaN and Inf (NaN absmax)")
class AcceptsNan(NumpyBackend):
    def quantize_blockwise(self, x, codebook, blocksize):
        x32 = (x.to_float32() if isinstance(x, BFloat16Array) else np.asarray(x)).astype(np.float32)
        if np.isfinite(x32).all():
            return super().quantize_blockwise(x, codebook, blocksize)
        with np.errstate(all="ignore"):
            flat = x32.reshape(-1)
            absmax = np.abs(flat).reshape(-1, blocksize).max(axis=1) if flat.size % blocksize == 0 else None
            if absmax is None:
                absmax = np.array([np.abs(flat).max()], np.float32)
            return np.full(x32.shape, 15, np.uint8), absmax.astype(np.float32)


@mutant("fourbit-any-blocksize", "errors.blocksize", "quantize_4bit accepts block sizes outside bitsandbytes' set")
class AnyBlocksize(NumpyBackend):
    def quantize_4bit(self, x, blocksize=64, quant_type="nf4", double_quant=False):
        if blocksize in (16, 8, 48, 100):
            codes, absmax = self.quantize_blockwise(x, quant_type, blocksize)
            return FourBit(self.pack_nibbles(codes.reshape(-1), zero_code(quant_type)), absmax)
        return super().quantize_4bit(x, blocksize, quant_type, double_quant)


@mutant("float64-input-accepted", "errors.dtype", "float64 input cast to float32 silently")
class AcceptsF64(NumpyBackend):
    def quantize_blockwise(self, x, codebook, blocksize):
        if isinstance(x, np.ndarray) and x.dtype == np.float64:
            x = x.astype(np.float32)
        return super().quantize_blockwise(x, codebook, blocksize)


@mutant("codes-out-of-range", "errors.codes-range", "dequantize_blockwise wraps codes beyond the codebook")
class CodesWrap(NumpyBackend):
    def dequantize_blockwise(self, codes, absmax, codebook, blocksize, out_dtype="float32"):
        size = get_codebook(codebook).size
        return super().dequantize_blockwise(
            (np.asarray(codes) % size).astype(np.uint8), absmax, codebook, blocksize, out_dtype
        )


# ---- double quantization ----
class _DQ(NumpyBackend):
    def offset(self, absmax):
        return double_quant.mean_offset(np.asarray(absmax, np.float32))

    def mean_offset(self, absmax):
        return np.float32(self.offset(absmax))


@mutant("mean-float32", "double-quant.mean", "the offset by a float32 pairwise mean (PyTorch's)")
class MeanF32(_DQ):
    def offset(self, absmax):
        return np.asarray(absmax, np.float32).mean(dtype=np.float32)


@mutant("mean-float64-sum", "double-quant.mean", "the offset by a float64 running sum, not an exact one")
class MeanF64(_DQ):
    def offset(self, absmax):
        s = np.float64(0)
        for v in np.asarray(absmax, np.float64):
            s += v
        return np.float32(s / np.asarray(absmax).size)


@mutant("mean-divide-f32", "double-quant.mean", "exact sum rounded to float32 before the division by n")
class MeanDivF32(_DQ):
    def offset(self, absmax):
        import math

        a = np.asarray(absmax, np.float64)
        return np.float32(np.float32(math.fsum(a.tolist())) / np.float32(a.size))


@mutant("dq-block-128", "double-quant.blocksize", "the second level in blocks of 128, not 256")
class DQ128(NumpyBackend):
    def double_quantize(self, absmax, blocksize=256, offset=None):
        return super().double_quantize(absmax, 128 if blocksize == 256 else blocksize, offset)

    def double_dequantize(self, qabsmax, absmax2, offset, blocksize=256):
        return super().double_dequantize(qabsmax, absmax2, offset, 128 if blocksize == 256 else blocksize)


@mutant("dq-not-centred", "double-quant.centre", "the absmax quantized without subtracting the offset")
class DQNotCentred(NumpyBackend):
    def double_quantize(self, absmax, blocksize=256, offset=None):
        q, a2, off = super().double_quantize(absmax, blocksize, offset)
        q2, a22 = self.quantize_blockwise(absmax, "dynamic", blocksize)
        return q2, a22, off

    def double_dequantize(self, qabsmax, absmax2, offset, blocksize=256):
        return self.dequantize_blockwise(qabsmax, absmax2, "dynamic", blocksize, "float32")


@mutant("dq-unsigned-map", "double-quant.codebook", "the second level with the unsigned dynamic map")
class DQUnsigned(NumpyBackend):
    def double_quantize(self, absmax, blocksize=256, offset=None):
        offset = self.mean_offset(absmax) if offset is None else np.float32(offset)
        centred = np.asarray(absmax, np.float32) - offset
        q, a2 = self.quantize_blockwise(np.abs(centred).astype(np.float32), "dynamic-unsigned", blocksize)
        return q, a2, offset


@mutant("dq-restore-f64", "double-quant.restore", "code * absmax2 + offset in float64, rounded once")
class DQRestoreF64(NumpyBackend):
    def double_dequantize(self, qabsmax, absmax2, offset, blocksize=256):
        c = np.asarray(qabsmax).reshape(-1)
        v = get_codebook("dynamic").values[c].astype(np.float64)
        a2 = np.repeat(np.asarray(absmax2, np.float64), blocksize)[: c.size]
        with np.errstate(over="ignore"):
            return (v * a2 + np.float64(offset)).astype(np.float32)


@mutant("dq-overflow-accepted", "errors.dq-overflow", "a restored absmax that overflows to inf is used, not refused")
class DQOverflow(NumpyBackend):
    def dequantize_4bit(self, q, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        if q.qabsmax is None:
            return super().dequantize_4bit(q, shape, blocksize, quant_type, out_dtype)
        absmax = self.double_dequantize(q.qabsmax, q.absmax2, q.offset)
        codes = self.unpack_nibbles(q.packed, int(np.prod(shape))).reshape(tuple(shape))
        with np.errstate(all="ignore"):
            values = get_codebook(quant_type).values[codes.reshape(-1)]
            out = values * np.repeat(absmax, blocksize)[: values.size]
        return cast_float32(out.astype(np.float32).reshape(tuple(shape)), out_dtype)


@mutant("exponent-sums-f64", "double-quant.mean", "exponent_sums by a float64 total in one bin")
class ExpSumsF64(NumpyBackend):
    def exponent_sums(self, values):
        sums = np.zeros(double_quant.FREXP_EXPONENTS.size, np.int64)
        total = float(np.asarray(values, np.float64).sum())
        m, e = np.frexp(total)
        sums[min(max(e - double_quant.FREXP_EXPONENTS[0], 0), sums.size - 1)] = int(np.ldexp(m, 24))
        return sums


from . import mutants_solvers  # noqa: E402, F401  (registers the other half of the catalogue)


@mutant("batch-first-offset", "batch.same-as-single", "a double-quantized batch centres every item on item 0's mean")
class BatchFirstOffset(NumpyBackend):
    def quantize_4bit_many(self, xs, blocksize=64, quant_type="nf4", double_quant=False):
        qs = super().quantize_4bit_many(xs, blocksize, quant_type, double_quant)
        if not double_quant:
            return qs
        out = [qs[0]]
        for x, q in zip(xs[1:], qs[1:]):
            absmax = self.quantize_4bit(x, blocksize, quant_type).absmax
            qabsmax, absmax2, offset = self.double_quantize(absmax, offset=qs[0].offset)
            out.append(FourBit(q.packed, None, qabsmax, absmax2, offset))
        return out


@mutant("batch-error-unnamed", "batch.errors", "a refused batch raises the item's error without naming the item")
class BatchErrorUnnamed(NumpyBackend):
    def quantize_4bit_many(self, xs, blocksize=64, quant_type="nf4", double_quant=False):
        return [self.quantize_4bit(x, blocksize, quant_type, double_quant) for x in xs]
