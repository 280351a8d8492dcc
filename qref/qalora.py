"""QA-LoRA (Xu et al., ICLR 2024): pooled adapter on a group-wise quantized base, and its exact merge
(docs/qalora.md).

    forward(x) = x W~^T + s * B A pool(x),   s = alpha / r,   pool(x)_k = c * sum_{i in group k} x_i
    A: (r, G), B: (D_out, r).  c = 1/g ("average": official code, AvgPool1d), 1 ("sum": paper's
    Algorithm 1), G/g ("peft": PEFT's QALoraLinearVariant).

The adapter equals the dense update dW[j, i] = s c (B A)[j, k(i)], constant within a group, so it
folds into the zeros without touching the codes:
    GPTQ form  W~ = s_jk (q - z_jk):  z'_jk = z_jk - s c (B A)_jk / s_jk
    offset form W~ = s_jk q + b_jk:   b'_jk = b_jk + s c (B A)_jk
All arithmetic here is generic: float64 for float inputs, exact for object arrays of Fractions.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from . import validation
from .groupwise import (
    GroupQuant,
    check_layout,
    dequantize_groupwise,
    quantize_groupwise,
)
from .groupwise import as_fractions as exact

POOLING = ("average", "sum", "peft")
MERGED_ZEROS_DTYPES = ("float64", "float32", "float16", "exact")


def pool_factor(pooling: str, d_in: int, group_size: int) -> Fraction:
    """c: the factor on each group's sum (average 1/g, sum 1, peft G/g)."""
    validation.one_of(pooling, POOLING, "pooling")
    groups = d_in // group_size
    return {"average": Fraction(1, group_size), "sum": Fraction(1), "peft": Fraction(groups, group_size)}[pooling]


def _numeric(*arrays) -> bool:
    """True unless some input is an exact (object) array: then keep Fractions throughout."""
    return all(np.asarray(a).dtype != object for a in arrays)


def pool(x: np.ndarray, group_size: int, pooling: str = "average") -> np.ndarray:
    """pool(x)_k = c * sum of x over input group k; x (..., D_in) -> (..., G)."""
    x = np.asarray(x)
    if x.shape[-1] % group_size:
        raise ValueError(f"x's last dimension {x.shape[-1]} is not divisible by group_size {group_size}")
    c = pool_factor(pooling, x.shape[-1], group_size)
    sums = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size).sum(axis=-1)
    return sums * (float(c) if _numeric(x) else c)


def check_adapter(gq: GroupQuant, A: np.ndarray, B: np.ndarray) -> int:
    """Validate A (r, G) and B (D_out, r) against the base; return r."""
    d_out, d_in = gq.shape
    groups = check_layout(gq.shape, gq.group_size)
    A, B = np.asarray(A), np.asarray(B)
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"A and B must be 2-D, got shapes {A.shape} and {B.shape}")
    r = A.shape[0]
    if r < 1 or r > min(d_out, groups):
        raise ValueError(f"rank r = {r} must be in [1, min(D_out, G)] = [1, {min(d_out, groups)}]")
    if A.shape != (r, groups):
        raise ValueError(f"A must have shape (r, G) = ({r}, {groups}), got {A.shape}")
    if B.shape != (d_out, r):
        raise ValueError(f"B must have shape (D_out, r) = ({d_out}, {r}), got {B.shape}")
    for name, arr in (("A", A), ("B", B)):
        if arr.dtype != object:
            if arr.dtype.kind != "f":
                raise TypeError(f"{name} must be a float array (or Fractions), got {arr.dtype}")
            validation.finite(arr, name)
    return r


def adapter_scale(alpha, r: int):
    """s = alpha / r (LoRA's scaling)."""
    if not isinstance(alpha, Fraction):
        validation.real(alpha, "alpha")
    return Fraction(alpha) / r if isinstance(alpha, (int, Fraction)) else float(alpha) / r


def _check_x(x, d_in: int) -> np.ndarray:
    """Activations (..., D_in): a float16/32/64 array (or Fractions, object dtype), finite, not empty."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != object and x.dtype.name not in ("float16", "float32", "float64"):
        raise TypeError(f"x must be float16, float32 or float64 (or Fractions), got {x.dtype}")
    if x.ndim == 0 or x.size == 0 or x.shape[-1] != d_in:
        raise ValueError(f"x must have shape (..., {d_in}) and at least one row, got {x.shape}")
    if x.dtype != object:
        validation.finite(x, "x")
    return x


def forward(x, gq: GroupQuant, A, B, alpha, pooling: str = "average") -> np.ndarray:
    """y = x W~^T + s (pool(x) A^T) B^T (QA-LoRA Algorithm 1), unmerged."""
    r = check_adapter(gq, A, B)
    s = adapter_scale(alpha, r)
    x = _check_x(x, gq.shape[1])
    numeric = _numeric(x, A, B, gq.scales, gq.zeros)
    if numeric:
        x, A, B, s = x.astype(np.float64), np.asarray(A, np.float64), np.asarray(B, np.float64), float(s)
    else:
        x, A, B, s = exact(x), exact(A), exact(B), Fraction(s)
    base = x @ dequantize_groupwise(gq, exact=not numeric).T
    return base + s * ((pool(x, gq.group_size, pooling) @ A.T) @ B.T)


def merged_forward(x, merged: GroupQuant) -> np.ndarray:
    """y = x W~'^T with the merged zeros: the deployed layer, no adapter."""
    numeric = _numeric(x, merged.zeros, merged.scales)
    x = np.asarray(x, np.float64) if numeric else exact(x)
    return x @ dequantize_groupwise(merged, exact=not numeric).T


def zero_shift(gq: GroupQuant, A, B, alpha, pooling: str = "average") -> np.ndarray:
    """The change of the zeros, (D_out, G): -s c (BA) / scale (GPTQ form) or +s c (BA) (offset form)."""
    r = check_adapter(gq, A, B)
    c = pool_factor(pooling, gq.shape[1], gq.group_size)
    s = adapter_scale(alpha, r)
    if not _numeric(A, B, gq.scales):
        BA = exact(B) @ exact(A)
        scales, coef = exact(gq.scales), Fraction(s) * c  # exact rationals
        update = coef * BA
        return update if gq.offset_zeros else -update / scales
    else:
        BA = np.asarray(B, np.float64) @ np.asarray(A, np.float64)
        scales, fcoef = gq.scales.astype(np.float64), float(s) * float(c)
        update = fcoef * BA
        return update if gq.offset_zeros else -update / scales


def merge(
    gq: GroupQuant, A, B, alpha, pooling: str = "average", zeros_dtype: str = "float64", lossy_ok: bool = False
) -> GroupQuant:
    """Fold the adapter into the zeros; the codes stay. zeros_dtype float16 loses the adapter's effect
    (docs/qalora.md), so it needs lossy_ok=True; "exact" keeps Fractions."""
    validation.one_of(zeros_dtype, MERGED_ZEROS_DTYPES, "zeros_dtype")
    if zeros_dtype == "float16" and not lossy_ok:
        raise ValueError(
            "float16 merged zeros lose up to tens of percent of the adapter's effect; "
            "pass lossy_ok=True to measure that, or keep float32/float64"
        )
    shift = zero_shift(gq, A, B, alpha, pooling)
    if zeros_dtype == "exact":
        return gq.with_zeros(exact(gq.zeros) + exact(shift))
    return gq.with_zeros((np.asarray(gq.zeros, np.float64) + np.asarray(shift, np.float64)).astype(zeros_dtype))


def merge_dense_then_quantize(gq: GroupQuant, A, B, alpha, pooling: str = "average") -> GroupQuant:
    """QLoRA-style baseline: W' = W~ + s c (BA) expanded densely, rounded to float32, then quantized
    again with the same bits, group size and profile (post-training quantization)."""
    shift = zero_shift(gq, A, B, alpha, pooling)
    dense = np.asarray(dequantize_groupwise(gq.with_zeros(gq.zeros.astype(np.float64) + shift)), np.float64)
    return quantize_groupwise(dense.astype(np.float32), gq.bits, gq.group_size, gq.profile)
