"""PEFT's LoftQ as a profile: what `peft.utils.loftq_utils.loftq_init` returns (docs/profiles.md).

Source: PEFT 0.21.2, `peft/utils/loftq_utils.py` (`loftq_init`, `_low_rank_decomposition`).
Differences from qref.loftq's general form, all conventions rather than arithmetic:
1. the weight is cast to float32 first; every step runs in float32;
2. the quantizer is bitsandbytes' `Params4bit(..., compress_statistics=False, quant_type="nf4")`,
   block 64, then `dequantize_4bit`: qref.quantize_4bit / dequantize_4bit in float32;
3. the split is L = U sqrt(S)[:, :r], R = sqrt(S)[:r] V^T (torch.linalg.svd, full_matrices=False);
4. returned: (Q_T cast back to the weight's format, lora_A = R (r x in), lora_B = L (out x r));
   the residual is not refreshed after the last SVD.
Only num_bits=4 is profiled (PEFT's 8-bit path goes through bitsandbytes' int8 vector-wise format).

What can match bit for bit is Q_1 = dequant(quant(W)); after one SVD the factors depend on the SVD
implementation, so PEFT's output is checked by certificates (docs/exactness.md): B A is the best
rank-r approximation of W - Q_T (Eckart-Young), Q_T is a fixed point of the quantizer, and the
objective ||W - Q_T - B A||_F agrees with the profile's.
"""

from __future__ import annotations

import numpy as np

from .. import validation
from ..dtypes import cast_float32
from ..fourbit import dequantize_4bit, quantize_4bit
from ..loftq import LoftQResult, loftq
from ..lowrank import check_rank

NAME = "peft"
VERSION = "0.21.2"
BLOCKSIZE = 64


def quantize_dequantize(x32: np.ndarray) -> np.ndarray:
    """Params4bit(x, compress_statistics=False, quant_type="nf4") then dequantize_4bit, float32."""
    packed, state = quantize_4bit(x32, BLOCKSIZE, "nf4")
    return dequantize_4bit(packed, state)


def loftq_init(weight, num_bits: int, reduced_rank: int, num_iter: int = 1) -> tuple:
    """(dequantized weight in the input format, lora_A, lora_B) as PEFT's loftq_init returns them."""
    validation.one_of(num_bits, (4,), "num_bits (PEFT's 8-bit path is not profiled)")
    w32, fmt = validation.float_input(weight, "weight")
    if w32.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {w32.shape}")
    check_rank(reduced_rank, w32.shape)
    result = run(w32, reduced_rank, num_iter)
    return cast_float32(result.Q, fmt), result.lora_A, result.lora_B


def run(w32: np.ndarray, rank: int, num_iter: int) -> LoftQResult:
    """qref.loftq in float32 with PEFT's quantizer (the full result, errors included)."""
    return loftq(np.ascontiguousarray(w32, dtype=np.float32), rank, num_iter, quantizer=quantize_dequantize)


def eckart_young_gap(W32: np.ndarray, Q: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """Certificate for any (Q, A, B): (||R - B A||_F - sqrt(sum_{i>r} s_i(R)^2)) / ||R||_F with
    R = W - Q, in float64; 0 for the best rank-r approximation, a few 1e-7 in float32."""
    R = W32.astype(np.float64) - Q.astype(np.float64)
    s = np.linalg.svd(R, compute_uv=False)
    best = np.sqrt(np.sum(s[A.shape[0] :] ** 2))
    got = np.linalg.norm(R - B.astype(np.float64) @ A.astype(np.float64))
    return float((got - best) / max(np.linalg.norm(R), np.finfo(np.float64).tiny))


def fixed_point_fraction(Q: np.ndarray) -> float:
    """Fraction of entries that move when Q is quantized again (0 for a dequantized NF4 weight)."""
    q32 = np.asarray(Q, dtype=np.float32)
    return float(np.mean(quantize_dequantize(q32) != q32))
