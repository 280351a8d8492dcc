"""The quantized linear forward as a certified reference op: y = x W~^T (docs/linear.md).

W~ is the dequantized weight exactly as the reference produces it (4-bit NF4/FP4 with any absmax
layout, or group-wise INT-k), rounded to the kernel's compute format; a kernel is free to choose its
summation order, blocking and fused multiply-adds. The contract (what bitsandbytes' matmul_4bit and
gemv_4bit, and fused dequantize-GEMM kernels, do):

1. the weight is W~ rounded to the compute format (float16, bfloat16 or float32), the input x is in
   that format (a kernel that rounds x differently is outside the contract);
2. every product x_i W~_ji is formed exactly or rounded once, and the products are summed in
   `accumulate` format (float32 by default) in any order;
3. the result is rounded once to the output format.

Then, with u the unit roundoff of each format and n = D_in (Higham, Accuracy and Stability of
Numerical Algorithms, 2nd ed., Thm. 3.5 / Eq. 3.13, for any summation order):

    |y_kernel - y| <= gamma_n(u_acc) (|x| |W~|^T) (1 + u_out) + u_out |y| + tiny
    gamma_n(u) = n u / (1 - n u)

where y is the exact product of the rounded operands and `tiny` covers the subnormal range
(n * 2^-149 per accumulated float32 term, the output format's smallest subnormal). The reference
computes y in float64; its own error, gamma_n(2^-53) |x| |W~|^T, is added to the bound, so the bound
is rigorous for the float64 evaluation too. A difference beyond the bound is a kernel fault (a wrong
code, scale, group, layout or accumulation format), never rounding.
"""

from __future__ import annotations

import numpy as np

from . import validation
from .dtypes import FLOAT_FORMATS, as_float32, round_to

#: Unit roundoff (half an ulp of 1) of each format.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
#: Smallest positive subnormal of each format (an absolute floor per rounding).
TINY = {"float64": 2.0**-1074, "float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
ACCUMULATE = ("float32", "float64", "float16")


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u); refused where n u >= 1 (no bound)."""
    if n * u >= 1:
        raise ValueError(f"n u = {n * u:g} >= 1: no rounding-error bound for {n} terms at u = {u:g}")
    return n * u / (1 - n * u)


def _operand(a, name: str, fmt: str) -> np.ndarray:
    """An operand widened to float64 after rounding it to the compute format (clause 1)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float64:
        a = a.astype(np.float32)
    a32, _ = validation.float_input(a, name)
    return round_to(a32, fmt).astype(np.float64)


def _matmul(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """a @ b in float64, or exactly (Fractions) and then rounded once to float64: the same bits on
    every machine, whatever its BLAS sums in which order."""
    if not exact:
        return a @ b
    from .groupwise import as_fractions

    return np.vectorize(float, otypes=[np.float64])(as_fractions(a) @ as_fractions(b))


def linear(
    x,
    W_tilde,
    compute: str = "bfloat16",
    accumulate: str = "float32",
    out: str | None = None,
    exact: bool = False,
    products: str | None = None,
):
    """(y, bound): y = x W~^T of the operands rounded to `compute`, in float64, and the largest
    |y_kernel - y| the contract allows (module doc), both float64 of shape (..., D_out). With
    `exact`, the products are formed in rational arithmetic and rounded once (reproducible bits).
    `products`: a format each product x_i W~_ji is rounded to before the sum (clause 2 with a
    product rounding coarser than the accumulator's): the bound gains u_products |x| |W~|^T."""
    validation.one_of(compute, FLOAT_FORMATS, "compute")
    validation.one_of(accumulate, ACCUMULATE, "accumulate")
    out = compute if out is None else out
    validation.one_of(out, FLOAT_FORMATS, "out")
    x64 = _operand(x, "x", compute)
    w64 = _operand(W_tilde, "W_tilde", compute)
    if w64.ndim != 2 or x64.shape[-1] != w64.shape[1]:
        raise ValueError(f"x {x64.shape} and W~ {w64.shape} do not chain: need x (..., D_in) and W~ (D_out, D_in)")
    n = w64.shape[1]
    y = _matmul(x64, w64.T, exact)
    magnitude = _matmul(np.abs(x64), np.abs(w64).T, exact)
    u_acc, u_out = UNIT_ROUNDOFF[accumulate], UNIT_ROUNDOFF[out]
    bound = (gamma(n, u_acc) + gamma(n, UNIT_ROUNDOFF["float64"])) * magnitude * (1 + u_out) + u_out * np.abs(y)
    bound += n * TINY[accumulate] + TINY[out]
    if products is not None:
        bound += UNIT_ROUNDOFF[validation.one_of(products, FLOAT_FORMATS, "products")] * magnitude
    return y, bound


#: How a 4-bit kernel forms W~ and its products (the contract, or a named library kernel's own rule).
KERNELS_4BIT = ("reference", "bnb-cuda-inference")


def dequantize_16bit_operands(packed, state, compute: str) -> np.ndarray:
    """W~ as bitsandbytes' CUDA 4-bit inference kernel forms it (bitsandbytes 0.50.2, the kernel
    behind matmul_4bit without gradients and gemv_4bit): RN_c(RN_c(code[q]) * RN_c(absmax)), the code
    value and the absmax rounded to the compute format c before a product in c."""
    from dataclasses import replace

    from .fourbit import dequantize_4bit

    absmax = state.absmax_float32()
    unit = replace(state, absmax=np.ones_like(absmax, dtype=np.float32), nested=None)
    codes = dequantize_4bit(packed, unit, "float32")  # code[q] * 1
    per_element = np.repeat(absmax, state.blocksize)[: codes.size].reshape(codes.shape)
    return round_to(round_to(codes, compute) * round_to(per_element, compute), compute)


def linear_4bit(
    x, packed, state, compute: str = "bfloat16", accumulate: str = "float32", out=None, kernel: str = "reference"
):
    """`linear` with W~ = dequantize_4bit(packed, state) in the compute format (bitsandbytes'
    matmul_4bit with gradients: dequantize to the input's dtype, then a GEMM). kernel
    "bnb-cuda-inference": bitsandbytes' CUDA inference kernel instead, W~ from
    `dequantize_16bit_operands` and each product x_i W~_ji rounded to the compute format before the
    float32 sum (the bound gains u_c |x| |W~|^T)."""
    from .fourbit import dequantize_4bit

    validation.one_of(kernel, KERNELS_4BIT, "kernel")
    if kernel == "reference":
        return linear(x, dequantize_4bit(packed, state, out_dtype=compute), compute, accumulate, out)
    validation.one_of(compute, ("float16", "bfloat16"), "compute (the inference kernel's formats)")
    return linear(x, dequantize_16bit_operands(packed, state, compute), compute, accumulate, out, products=compute)


def check_linear(y_kernel, y, bound) -> tuple[bool, int, float]:
    """(within, first flat index beyond the bound or -1, largest |diff| / bound) for a kernel's
    output (any accepted float array; a NaN or Inf is beyond any bound)."""
    yk = np.asarray(y_kernel if isinstance(y_kernel, np.ndarray) else as_float32(y_kernel), dtype=np.float64)
    if yk.shape != np.shape(y):
        raise ValueError(f"the kernel's output has shape {yk.shape}, the reference's {np.shape(y)}")
    with np.errstate(invalid="ignore"):
        excess = np.abs(yk - y) / bound
    excess = np.where(np.isfinite(yk), excess, np.inf).ravel()
    beyond = np.flatnonzero(excess > 1)
    return beyond.size == 0, int(beyond[0]) if beyond.size else -1, float(excess.max(initial=0.0))


def qalora_linear(
    x, gq, A, B, scaling: float, pooling: str = "peft", accumulate: str = "float32", out="float32", exact=False
):
    """(y, bound) for QA-LoRA's unmerged forward y = x W~^T + scaling (pool(x) A^T) B^T on float32
    operands (qref.qalora.forward with alpha = scaling r), and the largest |y_kernel - y| a kernel
    may show that forms the base product and the adapter chain (pool: g terms, A: G terms, B: r
    terms, then the scaling and the sum) in `accumulate` format in any order: the base term's bound
    (above) plus gamma_{g + G + r + 3}(u) scaling c (sum_group |x| |A|^T) |B|^T."""
    from fractions import Fraction

    from .groupwise import as_fractions, dequantize_groupwise
    from .qalora import check_adapter, forward, pool

    r = check_adapter(gq, A, B)
    W64 = dequantize_groupwise(gq)
    if not np.array_equal(W64.astype(np.float32), W64):
        raise ValueError("W~ is not exact in float32 (scales beyond float32?): no float32 operand to certify")
    y_base, bound = linear(np.asarray(x, np.float32), W64.astype(np.float32), "float32", accumulate, out, exact)
    # exact: the same products in rationals (forward and pool keep Fractions), rounded once at the end
    cast = as_fractions if exact else (lambda a: np.asarray(a, np.float64))
    s = Fraction(float(scaling)) if exact else float(scaling)
    x64 = np.asarray(x, np.float32).astype(np.float64)
    y = forward(cast(x64), gq, cast(A), cast(B), s * r, pooling)
    chain = abs(s) * ((pool(cast(np.abs(x64)), gq.group_size, pooling) @ cast(np.abs(A)).T) @ cast(np.abs(B)).T)
    if exact:
        y, chain = (np.vectorize(float, otypes=[np.float64])(a) for a in (y, chain))
    groups = gq.shape[1] // gq.group_size
    terms = gq.group_size + groups + r + 3
    u_acc = UNIT_ROUNDOFF[accumulate]
    bound = bound + (gamma(terms, u_acc) + gamma(terms, UNIT_ROUNDOFF["float64"])) * chain * (1 + UNIT_ROUNDOFF[out])
    return y, bound + UNIT_ROUNDOFF[out] * np.abs(y - y_base)
