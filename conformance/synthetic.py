"""Generated LLM-like weights and activations (no downloads): heavy tails, outlier channels, a
decaying spectrum; used by tests, `qref check` batteries and the docs' comparison page."""

from __future__ import annotations

import numpy as np


def llm_like_weight(d_out: int, d_in: int, seed: int = 0, outlier_channels: int = 4) -> np.ndarray:
    """Low-rank structure (power-law spectrum) + Student-t(4) noise, a few input channels x8; float64."""
    rng = np.random.default_rng(seed)
    k = min(d_out, d_in)
    U, _ = np.linalg.qr(rng.standard_normal((d_out, k)))
    V, _ = np.linalg.qr(rng.standard_normal((d_in, k)))
    spectrum = 1.0 / (1.0 + np.arange(k)) ** 0.8
    W = (U * spectrum) @ V.T * np.sqrt(d_in) * 0.02
    W += rng.standard_t(4, size=(d_out, d_in)) * 0.01
    W[:, rng.choice(d_in, size=min(outlier_channels, d_in), replace=False)] *= 8.0
    return W


def calibration_inputs(n: int, d_in: int, seed: int = 0, outlier_features: int = 4) -> np.ndarray:
    """Correlated activations with a few large-magnitude feature channels; float64 (n, d_in)."""
    rng = np.random.default_rng(seed + 1000)
    mix = rng.standard_normal((d_in, d_in)) / np.sqrt(d_in)
    X = rng.standard_normal((n, d_in)) @ (np.eye(d_in) + 0.5 * mix)
    X[:, rng.choice(d_in, size=min(outlier_features, d_in), replace=False)] *= 10.0
    return X


def diagonal_fisher(X: np.ndarray, d_out: int, seed: int = 0) -> np.ndarray:
    """A positive diagonal-Fisher surrogate E[g^2] = E[delta^2] E[x^2] for a linear layer (out, in)."""
    rng = np.random.default_rng(seed + 2000)
    out_scale = rng.gamma(2.0, 1.0, size=d_out)
    return np.outer(out_scale, (X**2).mean(axis=0))
