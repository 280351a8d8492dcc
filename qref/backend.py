"""The backend interface: every op of the reference, array in / array out on a backend's own arrays
(docs/writing-a-backend.md).

A backend implements the *primitives* below: the ops whose decision points (rounding, ties, block
edges, nibble order, the exact mean) must be reproduced bit for bit, plus conversion and the
linear algebra it wants to run natively. `BackendBase` composes every other op from those
primitives with array operators only (`+ - * / @`, `.reshape`, `.T`, `.sum(-1)`, `[..., None]`),
which NumPy, PyTorch and CuPy arrays share, so the composition (4-bit = blockwise + packing, double
quantization, group-wise dequantization, QA-LoRA merge and forward, LoftQ, LQ-LoRA, QuAILoRA) is
written once, here, and is the same on every backend. A backend may override a composite with a
fused kernel; the conformance suite holds it to the same contract either way.

Shared parameters (codebook values and midpoints, block-size lists, the double-quantization block,
profiles) come from the reference modules; a backend holds none of its own.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import validation
from .batch import run_many, same_length, sequence
from .codebooks import get_codebook
from .double_quant import DQ_BLOCKSIZE, offset_from_exponent_sums
from .fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT
from .groupwise import GROUPWISE_PROFILES, check_layout, check_scales_zeros
from .lowrank import NF_BITS
from .qalora import POOLING, pool_factor

Array = Any  # a backend's own array type (numpy.ndarray, torch.Tensor, cupy.ndarray, ...)


@dataclass(frozen=True)
class FourBit:
    """Arrays of a 4-bit quantized tensor: packed nibbles (uint8, ceil(n/2)) and absmax (float32), or,
    with double quantization, qabsmax (uint8), absmax2 (float32) and the float32 offset."""

    packed: Array
    absmax: Array | None
    qabsmax: Array | None = None
    absmax2: Array | None = None
    offset: Any = None  # np.float32 on the host; a backend may keep it as a device scalar (CUDA)


@runtime_checkable
class Backend(Protocol):
    """Everything the conformance suite calls, op for op the table `qref.contract.OPS` (kind, exactness,
    tolerance; tests/test_contract.py keeps the two equal). Bit-exact ops first, then certified ones."""

    name: str
    device: str

    # conversion: exact both ways (bfloat16 as qref.BFloat16Array on the NumPy side)
    def from_numpy(self, a) -> Array: ...
    def to_numpy(self, a): ...

    # bit-exact primitives
    def quantize_blockwise(self, x: Array, codebook: str, blocksize: int) -> tuple[Array, Array]: ...
    def dequantize_blockwise(
        self, codes: Array, absmax: Array, codebook: str, blocksize: int, out_dtype: str = "float32"
    ) -> Array: ...
    def pack_nibbles(self, codes: Array, pad_code: int = 0) -> Array: ...
    def unpack_nibbles(self, packed: Array, n: int) -> Array: ...
    def exponent_sums(self, values: Array) -> np.ndarray: ...
    def quantize_groupwise(self, W: Array, bits: int, group_size: int, profile: str) -> tuple[Array, Array, Array]: ...

    # linear-algebra primitives (the certified composites use them)
    def astype(self, a: Array, dtype: str) -> Array: ...
    def svd(self, R: Array) -> tuple[Array, Array, Array]: ...
    def solve(self, M: Array, Y: Array) -> Array: ...
    def norm(self, a: Array) -> float: ...
    def sqrt(self, a: Array) -> Array: ...
    def qr(self, a: Array) -> Array: ...
    def randn(self, shape: tuple, seed: int = 0) -> Array: ...

    # bit-exact composites (BackendBase)
    def quantize_4bit(
        self, x: Array, blocksize: int = 64, quant_type: str = "nf4", double_quant: bool = False
    ) -> FourBit: ...
    def dequantize_4bit(
        self, q: FourBit, shape: tuple, blocksize: int = 64, quant_type: str = "nf4", out_dtype: str = "float32"
    ) -> Array: ...
    def quantize_4bit_many(
        self, xs: list, blocksize: int = 64, quant_type: str = "nf4", double_quant: bool = False
    ) -> list[FourBit]: ...
    def dequantize_4bit_many(
        self, qs: list, shapes: list, blocksize: int = 64, quant_type: str = "nf4", out_dtype: str = "float32"
    ) -> list: ...
    def mean_offset(self, absmax: Array) -> np.float32: ...
    def double_quantize(
        self, absmax: Array, blocksize: int = DQ_BLOCKSIZE, offset=None
    ) -> tuple[Array, Array, np.float32]: ...
    def double_dequantize(self, qabsmax: Array, absmax2: Array, offset, blocksize: int = DQ_BLOCKSIZE) -> Array: ...
    def dequantize_groupwise(
        self, codes: Array, scales: Array, zeros: Array, group_size: int, profile: str
    ) -> Array: ...

    # certified composites (floating-point reductions or solvers: tolerances in docs/exactness.md)
    def qalora_zero_shift(
        self,
        scales: Array,
        A: Array,
        B: Array,
        alpha,
        group_size: int,
        d_in: int,
        profile: str,
        pooling: str = "average",
    ) -> Array: ...
    def qalora_forward(
        self,
        x: Array,
        codes: Array,
        scales: Array,
        zeros: Array,
        A: Array,
        B: Array,
        alpha,
        group_size: int,
        profile: str,
        pooling: str = "average",
    ) -> Array: ...
    def nf_quantize(self, x: Array, bits: int = 4, blocksize: int = 64, dq_blocksize: int | None = None) -> Array: ...
    def svd_factors(self, R: Array, rank: int) -> tuple[Array, Array]: ...
    def svd_factors_randomized(
        self, R: Array, rank: int, start: Array | None = None, oversample: int = 8, power: int = 2, seed: int = 0
    ) -> tuple[Array, Array, Array]: ...
    def loftq(
        self,
        W: Array,
        rank: int,
        num_iter: int = 1,
        bits: int = 4,
        blocksize: int = 64,
        svd: str = "exact",
        dq_blocksize: int | None = None,
        precision: str = "float64",
    ) -> dict: ...
    def lqlora(
        self,
        W: Array,
        rank: int,
        bits: int = 4,
        blocksize: int = 64,
        max_iter: int = 20,
        fisher: Array | None = None,
        svd: str = "exact",
        dq_blocksize: int | None = DQ_BLOCKSIZE,
    ) -> dict: ...
    def quailora(
        self, W: Array, Q: Array, rank: int, C: Array, max_iter: int = 100, tol: float = 1e-12, svd: str = "exact"
    ) -> dict: ...
    def allocate(self, costs, bits, sizes, budget): ...


class OpNotImplemented(NotImplementedError):
    """A primitive a (partial) backend does not provide; the conformance suite skips what needs it."""


def _not_implemented(op: str):
    def method(self, *args, **kwargs):
        raise OpNotImplemented(f"backend {self.name!r} does not implement {op}")

    method.__name__ = op
    method.__doc__ = f"Primitive `{op}` (qref.contract): not implemented by this backend."
    method.qref_missing = True  # type: ignore[attr-defined]
    return method


class BackendBase:
    """The composites, written once over a backend's primitives (see the module doc).

    Subclasses provide name, device and the primitives of `qref.contract` (conversion, the bit-exact
    primitives, the linear algebra). A primitive left out raises NotImplementedError, `implements`
    says so, and the conformance suite skips the ops that need it (a partial backend)."""

    name = "base"
    device = "cpu"

    from_numpy = _not_implemented("from_numpy")
    to_numpy = _not_implemented("to_numpy")
    quantize_blockwise = _not_implemented("quantize_blockwise")
    dequantize_blockwise = _not_implemented("dequantize_blockwise")
    pack_nibbles = _not_implemented("pack_nibbles")
    unpack_nibbles = _not_implemented("unpack_nibbles")
    exponent_sums = _not_implemented("exponent_sums")
    quantize_groupwise = _not_implemented("quantize_groupwise")
    astype = _not_implemented("astype")
    svd = _not_implemented("svd")
    solve = _not_implemented("solve")
    norm = _not_implemented("norm")
    sqrt = _not_implemented("sqrt")
    qr = _not_implemented("qr")
    randn = _not_implemented("randn")

    def __repr__(self):
        return f"<qref backend {self.name}:{self.device}>"

    def implements(self, *ops: str) -> bool:
        """Whether every named primitive is provided (composites count as provided when their
        primitives are)."""
        return not any(getattr(getattr(type(self), op, None), "qref_missing", False) for op in ops)

    def host_buffer(self, shape, dtype) -> np.ndarray:
        """An empty host array that `from_numpy` moves to the device fastest (page-locked memory for
        a CUDA backend): fill it, then hand it over."""
        return np.empty(shape, dtype)

    # ---- hooks of the shared input checks (qref.backends.checks); a device backend overrides them ----
    def is_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def all_finite(self, a) -> bool:
        return bool(np.isfinite(a).all())

    def max_int(self, a) -> int:
        return int(a.max())  # numpy, torch and CuPy arrays alike

    def require_array(self, a, name: str) -> None:
        """TypeError unless `a` is this backend's array type."""
        if not self.is_array(a):
            raise TypeError(f"{name} must be an array of the {self.name} backend, got {type(a).__name__}")

    def check_matrix_rank(self, M, rank, name: str) -> int:
        """qref.lowrank.check_matrix and check_rank on any backend's array, in their order: an array of
        this backend, 2-D, float64 or float32, not empty, finite (LAPACK's SVD may not return on an
        Inf), rank an int in [1, min(M.shape)]."""
        from .lowrank import check_rank

        self.require_array(M, name)
        shape = tuple(M.shape)
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {shape}")
        if str(M.dtype).rsplit(".", 1)[-1] not in ("float64", "float32"):
            raise TypeError(f"{name} must be float64 or float32, got {M.dtype}")
        if 0 in shape:
            raise ValueError(f"{name} is empty")
        if not self.all_finite(M):
            raise ValueError(f"{name} contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)")
        return check_rank(rank, shape)

    # ---- bit-exact composites ----
    def quantize_4bit(self, x, blocksize=64, quant_type="nf4", double_quant=False) -> FourBit:
        """Blockwise absmax with NF4/FP4, nibbles packed high-first, pad = code of 0 (fourbit.md)."""
        validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
        validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
        packed, absmax = self._packed_codes(x, quant_type, blocksize)
        if not double_quant:
            return FourBit(packed, absmax)
        qabsmax, absmax2, offset = self.double_quantize(absmax)
        return FourBit(packed, None, qabsmax, absmax2, offset)

    def _packed_codes(self, x, quant_type: str, blocksize: int):
        """quantize_4bit's packed codes (pack_nibbles, padded with the code of 0) and absmax, from
        quantize_blockwise; a backend may fuse the two."""
        codes, absmax = self.quantize_blockwise(x, quant_type, blocksize)
        return self.pack_nibbles(codes.reshape(-1), zero_code(quant_type)), absmax

    def dequantize_4bit(self, q: FourBit, shape, blocksize=64, quant_type="nf4", out_dtype="float32"):
        """code[q] * absmax per block in float32, rounded to out_dtype."""
        validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
        validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
        n = int(np.prod(shape, dtype=np.int64))
        absmax = q.absmax if q.qabsmax is None else self.double_dequantize(q.qabsmax, q.absmax2, q.offset)
        codes = self.unpack_nibbles(q.packed, n).reshape(tuple(shape))
        return self.dequantize_blockwise(codes, absmax, quant_type, blocksize, out_dtype)

    def quantize_4bit_many(self, xs, blocksize=64, quant_type="nf4", double_quant=False) -> list[FourBit]:
        """quantize_4bit of every array of xs (a whole model's weights in one call): the same states, and the
        first refused array's error, naming it (`xs[3]: ...`). See qref.batch."""
        xs = sequence(xs, "xs")
        return run_many(
            "xs", [(x,) for x in xs], lambda x: self.quantize_4bit(x, blocksize, quant_type, double_quant), self.batch
        )

    def dequantize_4bit_many(self, qs, shapes, blocksize=64, quant_type="nf4", out_dtype="float32") -> list:
        """dequantize_4bit of every state of qs to its shape in shapes, as quantize_4bit_many."""
        qs, shapes = sequence(qs, "qs"), sequence(shapes, "shapes")
        same_length(qs, shapes, "qs", "shapes")
        return run_many(
            "qs",
            list(zip(qs, shapes)),
            lambda q, shape: self.dequantize_4bit(q, shape, blocksize, quant_type, out_dtype),
            self.batch,
        )

    def batch(self):
        """A context for the calls of one batch, whose value, called after its exit, says whether a check the
        calls deferred failed (qref.batch.run_many). Here nothing is deferred."""
        return nullcontext(lambda: False)

    def mean_offset(self, absmax) -> np.float32:
        """The reference's exactly rounded mean, from the backend's integer exponent sums."""
        n = int(np.prod(tuple(absmax.shape), dtype=np.int64))
        if n == 0:
            raise ValueError("absmax is empty")
        return offset_from_exponent_sums(self.exponent_sums(absmax), n)

    def double_quantize(self, absmax, blocksize=DQ_BLOCKSIZE, offset=None):
        """(qabsmax, absmax2, offset): the centred absmax blockwise with the signed dynamic map."""
        offset = self.mean_offset(absmax) if offset is None else np.float32(validation.real(offset, "offset"))
        validation.finite(np.asarray(offset), "offset")
        qabsmax, absmax2 = self.quantize_blockwise(self.add_f32(absmax, -offset), "dynamic", blocksize)
        return qabsmax, absmax2, offset

    def double_dequantize(self, qabsmax, absmax2, offset, blocksize=DQ_BLOCKSIZE):
        centred = self.dequantize_blockwise(qabsmax, absmax2, "dynamic", blocksize, "float32")
        return self.add_f32(centred, offset)

    def add_f32(self, a, scalar):
        """a + scalar in IEEE float32, subnormals kept (a backend whose float32 arithmetic flushes them
        overrides this)."""
        with np.errstate(over="ignore"):  # an overflow to inf is refused by dequantize_4bit
            return a + self.from_numpy(np.full(1, np.float32(scalar), dtype=np.float32))

    def dequantize_groupwise(self, codes, scales, zeros, group_size, profile):
        """W~ = s (q - z) (GPTQ) or s q + z (minmax) per (row, group), in float64. The state is checked as
        qref.groupwise.check_state checks it (codes uint8 here: the op is not told the bit width)."""
        validation.one_of(profile, GROUPWISE_PROFILES, "profile")
        groups = check_layout(tuple(codes.shape), group_size, "codes")
        validation.dtype_is(str(codes.dtype), "uint8", "codes")
        check_scales_zeros(
            np.asarray(self.to_numpy(self.astype(scales, "float64"))),
            np.asarray(self.to_numpy(self.astype(zeros, "float64"))),
            codes.shape[0],
            groups,
        )
        d_out, d_in = codes.shape
        q = self.astype(codes, "float64").reshape(d_out, d_in // group_size, group_size)
        s, z = self.astype(scales, "float64")[..., None], self.astype(zeros, "float64")[..., None]
        W = s * q + z if profile == "minmax" else s * (q - z)
        return W.reshape(d_out, d_in)

    # ---- certified composites ----
    def qalora_zero_shift(self, scales, A, B, alpha, group_size, d_in, profile, pooling="average"):
        """-s c (B A) / scales (GPTQ form) or +s c (B A) (offset form), float64 (qalora.md)."""
        validation.one_of(pooling, POOLING, "pooling")
        coef = float(Fraction(alpha) / A.shape[0] * pool_factor(pooling, d_in, group_size))
        update = (self.astype(B, "float64") @ self.astype(A, "float64")) * coef
        return update if profile == "minmax" else -update / self.astype(scales, "float64")

    def qalora_forward(self, x, codes, scales, zeros, A, B, alpha, group_size, profile, pooling="average"):
        """y = x W~^T + s pool(x) A^T B^T in float64 (QA-LoRA Algorithm 1)."""
        d_in = codes.shape[1]
        x64 = self.astype(x, "float64")
        c = float(pool_factor(pooling, d_in, group_size))
        pooled = x64.reshape(*x64.shape[:-1], d_in // group_size, group_size).sum(-1) * c
        s = float(Fraction(alpha) / A.shape[0])
        W = self.dequantize_groupwise(codes, scales, zeros, group_size, profile)
        return x64 @ W.T + ((pooled @ self.astype(A, "float64").T) @ self.astype(B, "float64").T) * s

    def svd_factors(self, R, rank):
        """L = U_r sqrt(S_r), Rt = sqrt(S_r) V_r^T (Eckart-Young; lowrank.md)."""
        rank = self.check_matrix_rank(R, rank, "R")
        U, S, Vt = self.svd(R)
        root = self.sqrt(S[:rank])
        return U[:, :rank] * root[None, :], root[:, None] * Vt[:rank]

    def svd_factors_randomized(self, R, rank, start=None, oversample=8, power=2, seed=0):
        """Rank-r factors from a randomized subspace iteration (Halko, Martinsson, Tropp 2011, Alg. 4.4):
        Y = R Omega (Omega = `start`, e.g. the previous call's basis, else Gaussian), `power` steps of
        Q = qr(R qr(R^T Q)), then the exact SVD of the small Q^T R. Returns (L, Rt, basis): the split of
        svd_factors and the right basis (n x (r + oversample)) to warm-start the next call. Not exact:
        checked by the Eckart-Young gap (docs/exactness.md)."""
        rank = self.check_matrix_rank(R, rank, "R")
        return self._randomized(R, rank, start, oversample, power, seed)

    def _randomized(self, R, rank, start=None, oversample=8, power=2, seed=0):
        """svd_factors_randomized on a checked R (the solvers' residuals are finite by construction)."""
        k = min(rank + oversample, min(R.shape))
        omega = start if start is not None else self.randn((R.shape[1], k), seed)
        omega = self.astype(omega, str(R.dtype).removeprefix("torch."))  # float32 R, float32 basis
        Q = self.qr(R @ omega)
        for _ in range(power):
            Q = self.qr(R @ self.qr(R.T @ Q))
        U, S, Vt = self.svd(Q.T @ R)
        root = self.sqrt(S[:rank])
        return (Q @ U[:, :rank]) * root[None, :], root[:, None] * Vt[:rank], Vt.T

    def _factors(self, R, rank, svd, state):
        """svd_factors (svd="exact") or the randomized ones warm-started from `state["basis"]`."""
        validation.one_of(svd, ("exact", "randomized"), "svd")
        if svd == "exact":
            return self.svd_factors(R, rank)
        L, Rt, state["basis"] = self._randomized(R, rank, state.get("basis"))
        return L, Rt

    def nf_quantize(self, x, bits=4, blocksize=64, dq_blocksize=None):
        """dequant(quant(x)) with NF-k blockwise absmax in float32, the absmax optionally double-quantized
        (qref.lowrank.nf_quantize), returned as float64."""
        return self.astype(self._nf_quantize32(x, bits, blocksize, dq_blocksize), "float64")

    def _nf_quantize32(self, x, bits, blocksize, dq_blocksize):
        """nf_quantize before its widening to float64 (the values are float32 ones either way)."""
        validation.one_of(bits, NF_BITS, "bits")
        x32 = self.astype(x, "float32")
        codes, absmax = self.quantize_blockwise(x32, f"nf{bits}", blocksize)
        if dq_blocksize is not None:
            absmax = self.double_dequantize(*self.double_quantize(absmax, dq_blocksize), dq_blocksize)
        return self.dequantize_blockwise(codes, absmax, f"nf{bits}", blocksize)

    def loftq(
        self, W, rank, num_iter=1, bits=4, blocksize=64, svd="exact", dq_blocksize=None, precision="float64"
    ) -> dict:
        """LoftQ Algorithm 1 (loftq.md): Q_t = quant(W - B A), (B, A) = SVD_r(W - Q_t); svd="randomized"
        uses warm-started subspace iterations instead of full SVDs; dq_blocksize double-quantizes the
        absmax inside the quantizer (None: float32 absmax, the paper's setting); precision "float32"
        carries the residuals and factors in float32 (the quantizer reads float32 either way)."""
        rank = self.check_matrix_rank(W, rank, "W")
        num_iter = validation.positive_int(num_iter, "num_iter")
        validation.one_of(precision, ("float64", "float32"), "precision")
        W = self.astype(W, precision)
        res, state = W, {}  # type: tuple[Any, dict]
        for _ in range(num_iter):
            source = res
            Q = self.astype(self._nf_quantize32(res, bits, blocksize, dq_blocksize), precision)
            B, A = self._factors(W - Q, rank, svd, state)
            res = W - B @ A
        return {"Q": Q, "lora_A": A, "lora_B": B, "quantized_from": source, "error": self.norm(res - Q)}

    def lqlora(self, W, rank, bits=4, blocksize=64, max_iter=20, fisher=None, svd="exact", dq_blocksize=DQ_BLOCKSIZE):
        """LQ-LoRA Algorithm 1 from Q_0 = 0, best iterate kept (lqlora.md); fisher: rank-one weights. The
        quantizer double-quantizes the absmax (block dq_blocksize; None keeps float32), as
        qref.lqlora.decompose's default LQConfig does: one spec, one answer."""
        rank = self.check_matrix_rank(W, rank, "W")
        max_iter = validation.positive_int(max_iter, "max_iter")
        state: dict = {}
        W = self.astype(W, "float64")
        if fisher is not None:
            F = self.astype(fisher, "float64")
            row_w, col_w = self.sqrt(F.mean(1)), self.sqrt(F.mean(0))
            weight = self.sqrt(F)
        Q, best = W * 0.0, None  # type: tuple[Any, Any]
        errors = []
        for _ in range(max_iter):
            if fisher is None:
                L1, L2 = self._factors(W - Q, rank, svd, state)
            else:
                L1, L2 = self._factors(row_w[:, None] * (W - Q) * col_w[None, :], rank, svd, state)
                L1, L2 = L1 / row_w[:, None], L2 / col_w[None, :]
            source = W - L1 @ L2
            Q = self.nf_quantize(source, bits, blocksize, dq_blocksize)
            residual = source - Q
            errors.append(self.norm(residual if fisher is None else weight * residual))
            if best is None or errors[-1] < best[0]:
                best = (errors[-1], Q, L1, L2, source)
            if len(errors) > 1 and errors[-1] > errors[-2]:
                break
        err, Q, L1, L2, source = best
        return {"Q": Q, "L1": L1, "L2": L2, "quantized_from": source, "error": err, "errors": errors}

    def quailora(self, W, Q, rank, C, max_iter=100, tol=1e-12, svd="exact") -> dict:
        """QuAILoRA: uncalibrated SVD start, then alternating exact solves of J (quailora.md)."""
        rank = self.check_matrix_rank(W, rank, "W")
        max_iter = validation.positive_int(max_iter, "max_iter")
        if tuple(Q.shape) != tuple(W.shape):
            raise ValueError(f"Q must have W's shape {tuple(W.shape)}, got {tuple(Q.shape)}")
        R = self.astype(W, "float64") - self.astype(Q, "float64")
        C = self.astype(C, "float64")
        B, A = self._factors(R, rank, svd, {})

        def J(B, A):
            E = R - B @ A
            return float(((E @ C) * E).sum())

        history = [J(B, A)]
        for _ in range(max_iter):
            A = self.solve(B.T @ B, B.T @ R)
            B = self.solve(A @ C @ A.T, A @ C @ R.T).T
            history.append(J(B, A))
            if history[-2] - history[-1] <= tol * history[-2]:
                break
        return {"lora_A": A, "lora_B": B, "objective": history[-1], "history": history}

    def allocate(self, costs, bits, sizes, budget):
        """LQ-LoRA's bit allocation ILP: a host op (small, scipy's HiGHS) on NumPy inputs."""
        from .lqlora import allocate

        return allocate(costs, bits, sizes, budget)


@cache
def zero_code(quant_type: str) -> int:
    """The code of 0.0 in a 4-bit codebook: the pad nibble of odd lengths."""
    return int(get_codebook(quant_type).nearest(np.zeros(1, dtype=np.float32))[0])
