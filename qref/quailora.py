"""QuAILoRA (Lawton et al., 2024): LoRA factors that keep the quantized model close to the original
(docs/quailora.md). Q = dequant(quant(W)) stays fixed; R = W - Q.

uncalibrated:  (B, A) = SVD_r(R), the best rank-r approximation of the quantization residual.
calibrated:    minimise J(A, B) = tr((R - B A) C (R - B A)^T) = ||X (W - Q - B A)^T||_F^2 / n,
               C = X^T X / n (+ damping * mean(diag C) * I), by alternating exact solves:
                 A <- (B^T B)^-1 B^T R                  (r x r system; C cancels when it is invertible)
                 B <- R C A^T (A C A^T)^-1              (r x r system)
               each step minimises J exactly in one factor, so J never increases.
closed form:   L* = SVD_r(R C^1/2) C^-1/2 attains min J = sum_{i > r} sigma_i(R C^1/2)^2, the
               activation-weighted SVD (CLoQ's result), used as the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation
from .lowrank import check_matrix, check_rank, svd_factors


@dataclass(frozen=True)
class QuAIResult:
    lora_A: np.ndarray  # (r, in)
    lora_B: np.ndarray  # (out, r)
    history: tuple[float, ...]  # J after the initialisation and after every A/B sweep


def second_moment(X: np.ndarray) -> np.ndarray:
    """C = X^T X / n for calibration inputs X (n, in)."""
    check_matrix(X, "X")
    return X.T @ X / X.shape[0]


def damped(C: np.ndarray, damping: float) -> np.ndarray:
    """C + damping * mean(diag C) * I; refuses a singular C without damping."""
    check_matrix(C, "C")
    if C.shape[0] != C.shape[1] or not np.allclose(C, C.T, rtol=1e-12, atol=0):
        raise ValueError(f"C must be a symmetric square matrix, got shape {C.shape}")
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    C = C + damping * np.mean(np.diag(C)) * np.eye(C.shape[0])
    eig = np.linalg.eigvalsh(C)
    if eig[0] <= eig[-1] * C.shape[0] * np.finfo(C.dtype).eps:
        raise ValueError(
            "the calibration second moment is singular (fewer independent samples than inputs?); pass damping > 0"
        )
    return C


def objective(R: np.ndarray, B: np.ndarray, A: np.ndarray, C: np.ndarray) -> float:
    """J = tr((R - BA) C (R - BA)^T)."""
    E = R - B @ A
    return float(np.sum((E @ C) * E))


def uncalibrated(W: np.ndarray, Q: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) from the rank-r SVD of W - Q (sqrt(S) to each side)."""
    check_matrix(W)
    if Q.shape != W.shape:
        raise ValueError(f"Q must have W's shape {W.shape}, got {Q.shape}")
    B, A = svd_factors(W - Q, check_rank(rank, W.shape))
    return A, B


def calibrated(
    W: np.ndarray,
    Q: np.ndarray,
    rank: int,
    C: np.ndarray,
    damping: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-12,
) -> QuAIResult:
    """Alternating exact minimisation of J from the uncalibrated start; stops when J's relative
    decrease over a sweep is below tol."""
    A, B = uncalibrated(W, Q, rank)
    if C.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"C must be ({W.shape[1]}, {W.shape[1]}), got {C.shape}")
    C = damped(C, damping)
    max_iter = validation.positive_int(max_iter, "max_iter")
    R = W - Q
    history = [objective(R, B, A, C)]
    for _ in range(max_iter):
        A = np.linalg.solve(B.T @ B, B.T @ R)
        B = np.linalg.solve(A @ C @ A.T, A @ C @ R.T).T
        history.append(objective(R, B, A, C))
        if history[-2] - history[-1] <= tol * history[-2]:
            break
    return QuAIResult(A, B, tuple(history))


def closed_form(W: np.ndarray, Q: np.ndarray, rank: int, C: np.ndarray, damping: float = 0.0):
    """The optimum of J over rank-r B A: (A, B, J*), via the SVD of R C^1/2."""
    check_matrix(W)
    rank = check_rank(rank, W.shape)
    C = damped(C, damping)
    lam, V = np.linalg.eigh(C)
    root, inv_root = (V * np.sqrt(lam)) @ V.T, (V / np.sqrt(lam)) @ V.T
    M = (W - Q) @ root
    B, At = svd_factors(M, rank)
    optimum = float((np.linalg.svd(M, compute_uv=False)[rank:] ** 2).sum())
    return At @ inv_root, B, optimum
