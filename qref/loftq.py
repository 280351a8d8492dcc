"""LoftQ (Li et al., ICLR 2024, Algorithm 1) with PEFT's conventions (docs/loftq.md).

    res = W
    for t = 1..T:  Q_t = dequant(quant(res)),  (L, R) = rank-r SVD of W - Q_t,  res = W - L R
Returned as PEFT's `loftq_init` returns it: (Q_T, lora_A = R (r x in), lora_B = L (out x r)),
the singular values split sqrt(S) to each side. The quantizer is NF4, block 64, no double
quantization (PEFT's 4-bit setting), computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from . import validation
from .lowrank import check_matrix, check_rank, nf_quantize, svd_factors


@dataclass(frozen=True)
class LoftQResult:
    Q: np.ndarray  # dequantized base weight (out, in)
    lora_A: np.ndarray  # (r, in)
    lora_B: np.ndarray  # (out, r)
    errors: tuple[float, ...]  # ||W - Q_t - B_t A_t||_F after each step
    quantized_from: np.ndarray  # the matrix whose quantization is Q (for storing its codes)


def loftq(
    W: np.ndarray, rank: int, num_iter: int = 1, bits: int = 4, blocksize: int = 64, quantizer=None
) -> LoftQResult:
    """LoftQ Algorithm 1; `quantizer(x) -> dequant(quant(x))` overrides the NF-k default."""
    check_matrix(W)
    rank = check_rank(rank, W.shape)
    num_iter = validation.positive_int(num_iter, "num_iter")
    quantize = quantizer or partial(nf_quantize, bits=bits, blocksize=blocksize)
    res, errors = W, []
    for _ in range(num_iter):
        source = res
        Q = quantize(res).astype(W.dtype)
        B, A = svd_factors(W - Q, rank)
        res = W - B @ A
        errors.append(float(np.linalg.norm(res - Q)))
    return LoftQResult(Q, A, B, tuple(errors), source)
