"""LQ-LoRA (Guo, Greengard, Xing, Kim; ICLR 2024): W ~ Q + L1 L2 (docs/lqlora.md).

decompose:  Q_0 = 0;  t = 1, 2, ...:  L1 L2 = SVD_r(W - Q_{t-1}) (weighted if a Fisher is given),
            Q_t = NF-k(W - L1 L2) with double-quantized absmax; stop at the first step whose
            (weighted) error exceeds the previous one, and return the best iterate.
Fisher:     F (same shape as W, >= 0) is reduced to row and column weights
            d_r = sqrt(mean_j F_ij), d_c = sqrt(mean_i F_ij) (the paper's code, "two-sided"), and the
            low-rank step minimises ||diag(d_r)(W - Q - L1 L2)diag(d_c)||_F in closed form.
allocate:   one quantization configuration per matrix minimising the total (weighted) squared error
            subject to an average bits-per-parameter budget: a 0/1 integer linear program (HiGHS).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from . import validation
from .lowrank import (
    NF_BITS,
    check_matrix,
    check_rank,
    nf_quantize,
    svd_factors,
    weighted_svd_factors,
)
from .storage import StorageConfig, bits_per_parameter


@dataclass(frozen=True)
class LQConfig:
    """NF-k bits, first-level block B0, second-level block B1 (8-bit absmax, float32 second level);
    dq_blocksize None keeps the absmax in float32 (no second level)."""

    bits: int = 4
    blocksize: int = 64
    dq_blocksize: int | None = 256

    def __post_init__(self):
        validation.one_of(self.bits, NF_BITS, "bits")
        validation.positive_int(self.blocksize, "blocksize")
        if self.dq_blocksize is not None:
            validation.positive_int(self.dq_blocksize, "dq_blocksize")

    def storage(self) -> StorageConfig:
        if self.dq_blocksize is None:
            return StorageConfig(self.bits, self.blocksize)
        return StorageConfig(self.bits, self.blocksize, 8, self.dq_blocksize, 32)

    def bits_per_parameter(self) -> Fraction:
        """b0 + 8/B0 + 32/(B0 B1) (LQ-LoRA Sec. 3.1)."""
        return bits_per_parameter(self.storage())

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return nf_quantize(x, self.bits, self.blocksize, self.dq_blocksize)


@dataclass(frozen=True)
class LQResult:
    Q: np.ndarray
    L1: np.ndarray  # (out, r)
    L2: np.ndarray  # (r, in)
    errors: tuple[float, ...]  # (weighted) Frobenius error of every iterate
    best: int  # index of the returned iterate
    quantized_from: np.ndarray  # W - L1 L2 of the returned iterate: Q is its quantization


def fisher_weights(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column weights sqrt(mean_j F_ij), sqrt(mean_i F_ij) of a diagonal Fisher F."""
    check_matrix(F, "fisher")
    if (F < 0).any():
        raise ValueError("fisher must be non-negative")
    row, col = np.sqrt(F.mean(axis=1)), np.sqrt(F.mean(axis=0))
    if (row == 0).any() or (col == 0).any():
        raise ValueError("fisher has an all-zero row or column: its weighted SVD is undefined")
    return row, col


def decompose(
    W: np.ndarray,
    rank: int,
    config: LQConfig = LQConfig(),
    max_iter: int = 20,
    fisher: np.ndarray | None = None,
    Q_init: np.ndarray | None = None,
) -> LQResult:
    """The iterative low-rank plus quantized decomposition (LQ-LoRA Algorithm 1); Q_init replaces
    the paper's start Q_0 = 0."""
    check_matrix(W)
    rank = check_rank(rank, W.shape)
    max_iter = validation.positive_int(max_iter, "max_iter")
    if fisher is not None:
        if fisher.shape != W.shape:
            raise ValueError(f"fisher must have W's shape {W.shape}, got {fisher.shape}")
        row_w, col_w = fisher_weights(fisher)
        weight = np.sqrt(fisher)
    Q = np.zeros_like(W) if Q_init is None else check_matrix(Q_init, "Q_init")
    if Q.shape != W.shape:
        raise ValueError(f"Q_init must have W's shape {W.shape}, got {Q.shape}")
    iterates, errors = [], []
    for _ in range(max_iter):
        if fisher is None:
            L1, L2 = svd_factors(W - Q, rank)
        else:
            L1, L2 = weighted_svd_factors(W - Q, row_w, col_w, rank)
        Q = config.quantize(W - L1 @ L2)
        residual = W - Q - L1 @ L2
        errors.append(float(np.linalg.norm(residual if fisher is None else weight * residual)))
        iterates.append((Q, L1, L2))
        if len(errors) > 1 and errors[-1] > errors[-2]:
            break
    best = int(np.argmin(errors))
    Q, L1, L2 = iterates[best]
    return LQResult(Q, L1, L2, tuple(errors), best, W - L1 @ L2)


@dataclass(frozen=True)
class Allocation:
    choice: np.ndarray  # index of the chosen configuration per matrix
    bits_per_parameter: float  # achieved average
    objective: float  # total cost of the choice


def allocate(costs: np.ndarray, bits: np.ndarray, sizes: np.ndarray, budget: float) -> Allocation:
    """min sum_i cost[i, c_i] s.t. sum_i sizes_i bits[i, c_i] <= budget * sum_i sizes_i, one c_i per
    matrix; a 0/1 ILP solved by scipy.optimize.milp (HiGHS). `bits[i, c]` is bits per parameter."""
    costs, bits, sizes = (np.asarray(a, dtype=np.float64) for a in (costs, bits, sizes))
    if costs.ndim != 2 or bits.shape != costs.shape or sizes.shape != (costs.shape[0],):
        raise ValueError(
            f"costs and bits must be (matrices, configs) and sizes (matrices,); got "
            f"{costs.shape}, {bits.shape}, {sizes.shape}"
        )
    for name, a in (("costs", costs), ("bits", bits), ("sizes", sizes)):
        validation.finite(a, name)
    if sizes.size and sizes.min() <= 0:
        raise ValueError(f"sizes must be positive parameter counts, got {sizes.min()}")
    if bits.size and bits.min() <= 0:
        raise ValueError(f"bits must be positive bits per parameter, got {bits.min()}")
    budget = validation.real(budget, "budget")
    cheapest = float((sizes * bits.min(axis=1)).sum() / sizes.sum())
    if budget < cheapest:
        raise ValueError(
            f"budget {budget} bits/parameter is below the cheapest assignment ({cheapest:.6g}): infeasible"
        )
    m, k = costs.shape
    one_each = np.kron(np.eye(m), np.ones(k))
    within_budget = (sizes[:, None] * bits).reshape(1, -1)
    result = milp(
        c=costs.reshape(-1),
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(within_budget, -np.inf, budget * sizes.sum())],
        integrality=np.ones(m * k),
        bounds=Bounds(0, 1),
    )
    if not result.success:
        raise ValueError(f"the allocation ILP failed: {result.message}")
    choice = np.round(result.x).reshape(m, k).argmax(axis=1)
    achieved = float((sizes * bits[np.arange(m), choice]).sum() / sizes.sum())
    return Allocation(choice, achieved, float(costs[np.arange(m), choice].sum()))
