"""Low-rank pieces shared by the initialisers: truncated SVD factors, weighted SVD, the NF-k quantizer
they all call (docs/initialisers.md).
"""

from __future__ import annotations

import numpy as np

from . import validation
from .blockwise import dequantize_blockwise, quantize_blockwise
from .codebooks import get_codebook
from .double_quant import double_dequantize, double_quantize

NF_BITS = (2, 3, 4, 8)


def check_matrix(W, name: str = "W", dtypes=(np.float64, np.float32)) -> np.ndarray:
    if not isinstance(W, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(W).__name__}")
    if W.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {W.shape}")
    if W.dtype not in dtypes:
        raise TypeError(f"{name} must be float64 or float32, got {W.dtype}")
    if W.size == 0:
        raise ValueError(f"{name} is empty")
    validation.finite(W, name)
    return W


def check_rank(rank, shape) -> int:
    rank = validation.positive_int(rank, "rank")
    if rank > min(shape):
        raise ValueError(f"rank {rank} exceeds min{tuple(shape)} = {min(shape)}")
    return rank


def svd_factors(R: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Eckart-Young: L = U_r sqrt(S_r), Rt = sqrt(S_r) V_r^T, so L Rt is the best rank-r approximation
    of R in Frobenius norm (the split PEFT's LoftQ and LQ-LoRA use)."""
    U, S, Vt = np.linalg.svd(R, full_matrices=False)
    root = np.sqrt(S[:rank])
    return U[:, :rank] * root, root[:, None] * Vt[:rank]


def weighted_svd_factors(R: np.ndarray, row_w: np.ndarray, col_w: np.ndarray, rank: int):
    """argmin over rank r of ||diag(d_r) (R - L Rt) diag(d_c)||_F, closed form: the SVD of the scaled
    matrix, unscaled (LQ-LoRA Sec. 3.3 with a rank-one Fisher)."""
    L, Rt = svd_factors(row_w[:, None] * R * col_w[None, :], rank)
    return L / row_w[:, None], Rt / col_w[None, :]


def nf_quantize(x: np.ndarray, bits: int = 4, blocksize: int = 64, dq_blocksize: int | None = None) -> np.ndarray:
    """dequant(quant(x)) with NF-k blockwise absmax quantization in float32 (blockwise.md), the absmax
    optionally double-quantized (8-bit dynamic map, block dq_blocksize); returned in x's dtype."""
    validation.one_of(bits, NF_BITS, "bits")
    codebook = get_codebook(f"nf{bits}")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    codes, absmax = quantize_blockwise(x32, codebook, blocksize)
    if dq_blocksize is not None:
        absmax = double_dequantize(double_quantize(absmax, dq_blocksize))
    return dequantize_blockwise(codes, absmax, codebook, blocksize).astype(x.dtype)
