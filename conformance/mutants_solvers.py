"""The mutants of conformance/mutants.py for group-wise quantization, QA-LoRA, the low-rank
initialisers and the bit allocation (registered there when that module loads)."""

from __future__ import annotations

import numpy as np

from qref import groupwise, validation
from qref.dtypes import BFloat16Array
from qref.numpy_backend import NumpyBackend

from .mutants import mutant


# ---- group-wise ----
class _Group(NumpyBackend):
    """The reference's quantize_groupwise with overridable rounding, range and zero point."""

    def rnd(self, t):
        return np.rint(t)

    def rng(self, w, bits, profile):
        xmin = np.minimum(w.min(axis=2), np.float32(0))
        xmax = np.maximum(w.max(axis=2), np.float32(0))
        return xmin, xmax

    def degenerate(self, xmin, xmax, maxq):
        return ((xmin == 0) & (xmax == 0)) | ((xmax - xmin) / maxq == 0)

    def scale_of(self, xmin, xmax, maxq):
        return ((xmax - xmin) / maxq).astype(np.float32)

    def zero_of(self, xmin, scale, bits, profile):
        if profile == "gptq-sym":
            return np.full_like(scale, np.float32((2**bits) // 2))
        return self.rnd(-xmin / scale).astype(np.float32)

    def divide(self, w, scale):
        return w / scale

    def clip_max(self, bits):
        return np.float32(2**bits - 1)

    def quantize_groupwise(self, W, bits, group_size, profile):
        validation.one_of(bits, groupwise.GROUPWISE_BITS, "bits")
        validation.one_of(profile, groupwise.GROUPWISE_PROFILES, "profile")
        W32, _ = validation.float_input(W, "W")
        groupwise.check_layout(W32.shape, group_size)
        if profile == "minmax":
            return self.minmax(W32, bits, group_size)
        maxq = np.float32(2**bits - 1)
        w = groupwise.group_view(W32, group_size)
        xmin, xmax = self.rng(w, bits, profile)
        if profile == "gptq-sym":
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        deg = self.degenerate(xmin, xmax, maxq)
        xmin, xmax = np.where(deg, np.float32(-1), xmin), np.where(deg, np.float32(1), xmax)
        scale = self.scale_of(xmin, xmax, maxq)
        zero = self.zero_of(xmin, scale, bits, profile)
        q = np.clip(self.rnd(self.divide(w, scale[..., None])) + zero[..., None], 0, self.clip_max(bits))
        return q.astype(np.uint8).reshape(W32.shape), scale, zero

    def minmax(self, W32, bits, group_size):
        gq = groupwise.quantize_groupwise(W32, bits, group_size, "minmax")
        return gq.codes, gq.scales, gq.zeros


@mutant("round-half-away", "groupwise.rounding", "codes rounded half away from zero, not half to even")
class HalfAway(_Group):
    def rnd(self, t):
        return np.floor(np.abs(t) + np.float32(0.5)) * np.sign(t)


@mutant("round-half-up", "groupwise.rounding", "codes rounded half up (floor(t + 0.5))")
class HalfUp(_Group):
    def rnd(self, t):
        return np.floor(t + np.float32(0.5))


@mutant("zero-unrounded", "groupwise.zero-point", "the asymmetric zero point not rounded")
class ZeroUnrounded(_Group):
    def zero_of(self, xmin, scale, bits, profile):
        if profile == "gptq-sym":
            return super().zero_of(xmin, scale, bits, profile)
        return np.clip(-xmin / scale, 0, 2**bits - 1).astype(np.float32)


@mutant("sym-zero-minus-one", "groupwise.sym-zero", "gptq-sym zero point 2^(b-1) - 1 instead of 2^(b-1)")
class SymZero(_Group):
    def zero_of(self, xmin, scale, bits, profile):
        if profile == "gptq-sym":
            return np.full_like(scale, np.float32(2 ** (bits - 1) - 1))
        return super().zero_of(xmin, scale, bits, profile)


@mutant("range-without-zero", "groupwise.range", "the range [min w, max w] without 0")
class RangeNoZero(_Group):
    def rng(self, w, bits, profile):
        return w.min(axis=2), w.max(axis=2)

    def degenerate(self, xmin, xmax, maxq):
        return (xmax - xmin) / maxq == 0


@mutant("all-zero-group-scale-1", "groupwise.all-zero-group", "an all-zero group gets scale 1, zero 0")
class AllZeroScale1(_Group):
    def degenerate(self, xmin, xmax, maxq):
        return np.zeros_like(xmin, dtype=bool)

    def scale_of(self, xmin, xmax, maxq):
        s = super().scale_of(xmin, xmax, maxq)
        return np.where(s == 0, np.float32(1), s)


@mutant("scale-underflow-kept", "groupwise.scale-underflow", "a range whose scale underflows is not widened")
class UnderflowKept(_Group):
    def degenerate(self, xmin, xmax, maxq):
        return (xmin == 0) & (xmax == 0)

    def divide(self, w, scale):
        with np.errstate(all="ignore"):
            return np.nan_to_num(w / scale, nan=0.0, posinf=0.0, neginf=0.0)

    def zero_of(self, xmin, scale, bits, profile):
        with np.errstate(all="ignore"):
            return np.nan_to_num(super().zero_of(xmin, scale, bits, profile), nan=0.0, posinf=0.0, neginf=0.0)


@mutant("group-scale-float64", "groupwise.scale-precision", "the scale computed in float64, then rounded")
class GroupScaleF64(_Group):
    def scale_of(self, xmin, xmax, maxq):
        return ((xmax.astype(np.float64) - xmin.astype(np.float64)) / float(maxq)).astype(np.float32)


@mutant("maxq-2^b", "groupwise.maxq", "scale = range / 2^b instead of / (2^b - 1)")
class Maxq(_Group):
    def scale_of(self, xmin, xmax, maxq):
        return ((xmax - xmin) / (maxq + 1)).astype(np.float32)


@mutant("clip-2^b-2", "groupwise.clip", "codes clipped to 2^b - 2")
class ClipLow(_Group):
    def clip_max(self, bits):
        return np.float32(2**bits - 2)


@mutant(
    "reciprocal-multiply", "groupwise.division", "w * (1/scale) instead of w / scale (PyTorch CUDA's scalar division)"
)
class RecipMul(_Group):
    def divide(self, w, scale):
        return w * (np.float32(1) / scale)


@mutant("minmax-constant-scale0", "groupwise.minmax-constant", "min-max: a constant group keeps scale 0 (codes 0)")
class MinmaxConst(_Group):
    def minmax(self, W32, bits, group_size):
        w = groupwise.group_view(W32, group_size)
        lo, hi = w.min(axis=2), w.max(axis=2)
        scale = ((hi - lo) / np.float32(2**bits - 1)).astype(np.float32)
        with np.errstate(all="ignore"):
            q = np.nan_to_num(np.clip(np.rint((w - lo[..., None]) / scale[..., None]), 0, 2**bits - 1))
        return q.astype(np.uint8).reshape(W32.shape), scale, lo


@mutant("dequant-group-f32", "groupwise.dequantization", "dequantize_groupwise in float32, not float64")
class GroupDequantF32(NumpyBackend):
    def dequantize_groupwise(self, codes, scales, zeros, group_size, profile):
        out = super().dequantize_groupwise(codes, scales, zeros, group_size, profile)
        d_out, d_in = codes.shape
        q = codes.astype(np.float32).reshape(d_out, d_in // group_size, group_size)
        s, z = scales.astype(np.float32)[..., None], zeros.astype(np.float32)[..., None]
        W = s * q + z if profile == "minmax" else s * (q - z)
        return W.reshape(out.shape).astype(np.float64)


@mutant("layout-truncates", "errors.layout", "D_in not divisible by the group size: the last columns dropped")
class LayoutTruncates(NumpyBackend):
    def quantize_groupwise(self, W, bits, group_size, profile):
        W = np.asarray(W) if not isinstance(W, BFloat16Array) else W
        if not isinstance(W, BFloat16Array) and W.ndim == 2 and W.shape[1] % group_size:
            keep = W.shape[1] - W.shape[1] % group_size
            return super().quantize_groupwise(np.ascontiguousarray(W[:, :keep]), bits, group_size, profile)
        return super().quantize_groupwise(W, bits, group_size, profile)


# ---- QA-LoRA ----
@mutant("pool-sum", "qalora.pooling", "the pooled adapter sums a group where the profile averages it")
class PoolSum(NumpyBackend):
    def qalora_forward(self, x, codes, scales, zeros, A, B, alpha, group_size, profile, pooling="average"):
        return super().qalora_forward(
            x, codes, scales, zeros, A, B, alpha, group_size, profile, "sum" if pooling == "average" else pooling
        )

    def qalora_zero_shift(self, scales, A, B, alpha, group_size, d_in, profile, pooling="average"):
        return super().qalora_zero_shift(
            scales, A, B, alpha, group_size, d_in, profile, "sum" if pooling == "average" else pooling
        )


@mutant("merge-sign", "qalora.merge", "the zero shift with the wrong sign for GPTQ zeros")
class MergeSign(NumpyBackend):
    def qalora_zero_shift(self, scales, A, B, alpha, group_size, d_in, profile, pooling="average"):
        z = super().qalora_zero_shift(scales, A, B, alpha, group_size, d_in, profile, pooling)
        return z if profile == "minmax" else -z


@mutant("scale-alpha", "qalora.scale", "the adapter scaled by alpha, not alpha / r")
class ScaleAlpha(NumpyBackend):
    def qalora_forward(self, x, codes, scales, zeros, A, B, alpha, group_size, profile, pooling="average"):
        return super().qalora_forward(x, codes, scales, zeros, A, B, alpha * A.shape[0], group_size, profile, pooling)


# ---- low rank and initialisers ----
@mutant("unbalanced-split", "lowrank.balanced-split", "svd_factors returns (U S, V^T), not sqrt(S) to each")
class Unbalanced(NumpyBackend):
    def svd_factors(self, R, rank):
        U, S, Vt = np.linalg.svd(R, full_matrices=False)
        return U[:, :rank] * S[:rank], Vt[:rank].copy()


@mutant("rank-minus-one", "lowrank.rank", "svd_factors drops the last kept direction")
class RankMinusOne(NumpyBackend):
    def svd_factors(self, R, rank):
        L, Rt = super().svd_factors(R, rank)
        L = L.copy()
        L[:, -1] = 0
        return L, Rt


@mutant("loftq-one-iteration-less", "loftq.iterations", "LoftQ runs num_iter - 1 alternations")
class LoftqFewer(NumpyBackend):
    def loftq(self, W, rank, num_iter=1, bits=4, blocksize=64, svd="exact"):
        return super().loftq(W, rank, max(num_iter - 1, 1), bits, blocksize, svd)


@mutant("loftq-block-32", "loftq.quantizer", "LoftQ's quantizer with block 32 instead of 64")
class LoftqBlock(NumpyBackend):
    def nf_quantize(self, x, bits=4, blocksize=64, dq_blocksize=None):
        return super().nf_quantize(x, bits, 32 if blocksize == 64 else blocksize, dq_blocksize)


@mutant("loftq-unbalanced", "loftq.balanced-split", "LoftQ's factors B = U S, A = V^T (not PEFT's sqrt(S) split)")
class LoftqUnbalanced(NumpyBackend):
    def loftq(self, W, rank, num_iter=1, bits=4, blocksize=64, svd="exact"):
        out = super().loftq(W, rank, num_iter, bits, blocksize, svd)
        U, S, Vt = np.linalg.svd(out["lora_B"] @ out["lora_A"], full_matrices=False)
        return {**out, "lora_B": U[:, :rank] * S[:rank], "lora_A": Vt[:rank].copy()}


@mutant("lqlora-last-iterate", "lqlora.best-iterate", "LQ-LoRA returns its last iterate, not the best")
class LqLast(NumpyBackend):
    def lqlora(self, W, rank, bits=4, blocksize=64, max_iter=20, fisher=None, svd="exact", dq_blocksize=256):
        out = super().lqlora(W, rank, bits, blocksize, max_iter, fisher, svd, dq_blocksize)
        if len(out["errors"]) > 1 and out["errors"][-1] > min(out["errors"]):
            # redo the last step from the best iterate's successor: the last iterate's factors
            Wf = self.astype(W, "float64")
            L1, L2 = self.svd_factors(Wf - out["Q"], rank)
            src = Wf - L1 @ L2
            Q = self.nf_quantize(src, bits, blocksize, dq_blocksize)
            return {**out, "Q": Q, "L1": L1, "L2": L2, "quantized_from": src, "error": float(np.linalg.norm(src - Q))}
        return out


@mutant("lqlora-fisher-ignored", "lqlora.fisher", "LQ-LoRA ignores the Fisher weights")
class LqNoFisher(NumpyBackend):
    def lqlora(self, W, rank, bits=4, blocksize=64, max_iter=20, fisher=None, svd="exact", dq_blocksize=256):
        return super().lqlora(W, rank, bits, blocksize, max_iter, None, svd, dq_blocksize)


@mutant("quailora-uncalibrated", "quailora.calibration", "QuAILoRA ignores the calibration second moment C")
class QuaiUncal(NumpyBackend):
    def quailora(self, W, Q, rank, C, max_iter=100, tol=1e-12, svd="exact"):
        out = super().quailora(W, Q, rank, np.eye(np.asarray(C).shape[0]), max_iter, tol, svd)
        R = np.asarray(W, np.float64) - np.asarray(Q, np.float64)
        E = R - out["lora_B"] @ out["lora_A"]
        return {**out, "objective": float(((E @ C) * E).sum())}


@mutant("quailora-one-step", "quailora.convergence", "QuAILoRA stops after one alternation")
class QuaiOne(NumpyBackend):
    def quailora(self, W, Q, rank, C, max_iter=100, tol=1e-12, svd="exact"):
        return super().quailora(W, Q, rank, C, 1, tol, svd)


@mutant("randomized-no-power", "lowrank.randomized", "randomized factors without power iterations or oversampling")
class RandNoPower(NumpyBackend):
    def svd_factors_randomized(self, R, rank, start=None, oversample=8, power=2, seed=0):
        return super().svd_factors_randomized(R, rank, start, 0, 0, seed)


@mutant("allocate-greedy", "lqlora.allocation", "the bit allocation by a greedy pass instead of the ILP")
class AllocGreedy(NumpyBackend):
    def allocate(self, costs, bits, sizes, budget):
        from qref.lqlora import Allocation

        costs, bits, sizes = (np.asarray(a, float) for a in (costs, bits, sizes))
        choice = np.zeros(costs.shape[0], int)  # cheapest bits first, then upgrade the best ratio
        while True:
            spent = (sizes * bits[np.arange(len(choice)), choice]).sum()
            best = None
            for i, c in enumerate(choice):
                if c + 1 < costs.shape[1]:
                    extra = sizes[i] * (bits[i, c + 1] - bits[i, c])
                    if spent + extra <= budget * sizes.sum() + 1e-9:
                        gain = (costs[i, c] - costs[i, c + 1]) / max(extra, 1e-300)
                        best = max(best or (-np.inf, i), (gain, i))
            if best is None:
                break
            choice[best[1]] += 1
        obj = float(costs[np.arange(len(choice)), choice].sum())
        got = (sizes * bits[np.arange(len(choice)), choice]).sum() / sizes.sum()
        return Allocation(choice, float(got), obj)


@mutant("allocate-strict-budget", "lqlora.allocation-budget", "the budget as a strict inequality")
class AllocStrict(NumpyBackend):
    def allocate(self, costs, bits, sizes, budget):
        return super().allocate(costs, bits, sizes, float(np.nextafter(budget, -np.inf)) - 1e-9)
