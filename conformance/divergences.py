"""Known divergence classes: a mismatch is *explained* when one of these names its decision point.

Each classifier gets the two outputs and the indices where their bits differ and returns a short
explanation when every difference belongs to its class, else None. docs/known-divergences.md
lists each class with a minimal example and its numerical size.
"""
from __future__ import annotations

import numpy as np


def signed_zero(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> str | None:
    """Both sides are zero and differ only in sign (e.g. FP4 code 8 in bitsandbytes' CPU kernel)."""
    a, b = ours.ravel()[idx], theirs.ravel()[idx]
    if np.all(a == 0) and np.all(b == 0):
        return "sign of zero: +0.0 vs -0.0 (numerically equal)"
    return None


def reduction_order(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, max_ulps: int = 8, **_) -> str | None:
    """float32 scalars a few ulp apart: a different summation order of the same mean."""
    a = np.asarray(ours, np.float32).ravel()[idx].view(np.int32).astype(np.int64)
    b = np.asarray(theirs, np.float32).ravel()[idx].view(np.int32).astype(np.int64)
    ulps = int(np.abs(a - b).max())
    if ulps <= max_ulps:
        return f"float32 mean, other reduction order: {ulps} ulp"
    return None


def farther_code(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, scaled=None, table=None, **_) -> str | None:
    """Their code is strictly farther from the scaled value than ours (or the value is 0/0):
    their search is not round-to-nearest; ours is."""
    if scaled is None or table is None:
        return None
    s = scaled.ravel()[idx].astype(np.float64)
    d_ours = np.abs(s - table[ours.ravel()[idx]])
    d_theirs = np.abs(s - table[theirs.ravel()[idx]])
    zero_block = s == 0  # bitsandbytes' C kernel divides 0/0 and takes code 0
    if np.all((d_theirs > d_ours) | zero_block):
        return "their 8-bit search chose a farther code, or divided 0/0 in a zero block"
    return None


def overflowed_mean(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> str | None:
    """Their float32 mean overflowed to inf (a float32 running sum past 3.4e38); ours is finite."""
    if np.all(np.isfinite(ours.ravel()[idx])) and not np.all(np.isfinite(theirs.ravel()[idx])):
        return "float32 sum of absmax overflows to inf in bitsandbytes; qref's exact mean is finite"
    return None


def floored_tail(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> str | None:
    """Tail-block absmax below 1e-38: the reference stores the floor float32(1e-38) (as bitsandbytes'
    PyTorch kernel does); theirs stores the raw value (0 for a zero tail)."""
    if np.all(ours.ravel()[idx] == np.float32(1e-38)) and np.all(theirs.ravel()[idx] < np.float32(1e-38)):
        return "tail absmax below 1e-38 stored raw here, floored to float32(1e-38) in the reference"
    return None


def nan_from_zero_scale(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, scales=None, **_) -> str | None:
    """Every difference lies in a row where AutoGPTQ's scale underflowed to 0 in float32 (a group
    range below maxq * 1.4e-45) and it divided by zero; qref treats such a group as all-zero."""
    if scales is None or ours.ndim != 2:
        return None
    rows_with_zero_scale = (np.asarray(scales) == 0).any(axis=1)
    if np.all(rows_with_zero_scale[idx // ours.shape[1]]):
        return "group range underflows: their scale is 0 and codes/zeros NaN; qref uses [-1, 1]"
    return None
