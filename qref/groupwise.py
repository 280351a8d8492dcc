"""Group-wise INT-k quantization of a weight (D_out, D_in), one scale and zero per (row, group) (docs/groupwise.md).

Groups are g consecutive input features, G = D_in / g of them (QA-LoRA's paper calls G "L").
Profiles (each pinned in the docs):
  gptq-asym  (default) AutoGPTQ/GPTQ-for-LLaMa RTN, QA-LoRA's setting: range [min(0, w), max(0, w)];
             an all-zero group (or one whose float32 scale underflows to 0) becomes [-1, 1];
             scale = (xmax - xmin) / (2^k - 1);
             zero = round(-xmin / scale); q = clamp(round(w / scale) + zero, 0, 2^k - 1);
             W~ = scale * (q - zero). float32 arithmetic, round half to even (torch.round).
  gptq-sym   the same with xmax = max(|xmin|, xmax), xmin = -xmax if xmin < 0, zero = 2^(k-1).
  minmax     QA-LoRA Eq. 1: alpha = (max - min) / (2^k - 1), beta = min, q = round((w - beta) / alpha),
             W~ = alpha * q + beta (a float offset); a constant group takes alpha = 1 (q = 0, W~ = beta).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from . import validation

GROUPWISE_BITS = (2, 3, 4, 8)
GROUPWISE_PROFILES = ("gptq-asym", "gptq-sym", "minmax")


@dataclass(frozen=True)
class GroupQuant:
    """Codes (D_out, D_in) uint8, scales and zeros (D_out, G). `offset_zeros`: W~ = s*q + z (minmax)
    instead of W~ = s*(q - z) (GPTQ). Merged states carry float zeros (see qalora.merge)."""

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    profile: str

    @property
    def offset_zeros(self) -> bool:
        return self.profile == "minmax"

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def with_zeros(self, zeros: np.ndarray) -> GroupQuant:
        return replace(self, zeros=zeros)


def group_view(W: np.ndarray, group_size: int) -> np.ndarray:
    """(D_out, D_in) -> (D_out, G, g), groups of consecutive input features."""
    return W.reshape(W.shape[0], W.shape[1] // group_size, group_size)


def check_layout(shape, group_size, name: str = "W") -> int:
    """Validate a (D_out, D_in) shape and group size; return G."""
    group_size = validation.positive_int(group_size, "group_size")
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (D_out, D_in), got shape {tuple(shape)}")
    if shape[1] % group_size:
        raise ValueError(f"D_in = {shape[1]} is not divisible by group_size = {group_size}")
    return shape[1] // group_size


def check_args(shape, bits, group_size, profile) -> int:
    """The arguments of quantize_groupwise besides W's values (every backend calls this after checking W
    itself, so errors come in the same order everywhere); returns G."""
    validation.one_of(bits, GROUPWISE_BITS, "bits")
    validation.one_of(profile, GROUPWISE_PROFILES, "profile")
    return check_layout(shape, group_size)


def check_scales_zeros(scales: np.ndarray, zeros: np.ndarray, rows: int, groups: int) -> None:
    """Scales and zeros of a group-wise state: shape (rows, groups), finite, scales > 0 (a scale of 0
    is the degenerate group's 2/maxq, never 0; a negative scale flips the group's weights)."""
    for name, a in (("scales", scales), ("zeros", zeros)):
        if np.shape(a) != (rows, groups):
            raise ValueError(f"{name} must have shape {(rows, groups)}, got {np.shape(a)}")
        if np.asarray(a).dtype != object:
            validation.finite(np.asarray(a, dtype=np.float64), name)
    if np.asarray(scales).dtype != object and np.asarray(scales, dtype=np.float64).min() <= 0:
        raise ValueError("scales must be positive (a negative scale flips the group's weights)")


def _finite_range(scale: np.ndarray, name: str) -> None:
    """A group whose range max - min exceeds the float32 maximum has no float32 scale: refused (the
    4-bit blockwise path handles such values; group-wise scales would be inf and the weights NaN)."""
    if not np.all(np.isfinite(scale)):
        r, g = np.argwhere(~np.isfinite(scale))[0]
        raise ValueError(
            f"{name} row {r}, group {g}: the range max - min exceeds the float32 maximum (no finite scale)"
        )


def quantize_groupwise(W, bits: int = 4, group_size: int = 32, profile: str = "gptq-asym") -> GroupQuant:
    """Round-to-nearest group-wise quantization (module doc; QA-LoRA Sec. 3.3, AutoGPTQ quantizer)."""
    W32, _ = validation.float_input(W, "W")
    check_args(W32.shape, bits, group_size, profile)
    maxq = np.float32(2**bits - 1)
    w = group_view(W32, group_size)
    if profile == "minmax":
        lo, hi = w.min(axis=2), w.max(axis=2)
        with np.errstate(over="ignore"):
            scale = ((hi - lo) / maxq).astype(np.float32)
        _finite_range(scale, "W")
        scale = np.where(scale == 0, np.float32(1), scale)
        q = np.clip(np.rint((w - lo[..., None]) / scale[..., None]), 0, maxq)
        return GroupQuant(q.astype(np.uint8).reshape(W32.shape), scale, lo, bits, group_size, profile)
    xmin = np.minimum(w.min(axis=2), np.float32(0))
    xmax = np.maximum(w.max(axis=2), np.float32(0))
    if profile == "gptq-sym":
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    # An all-zero group becomes [-1, 1] (AutoGPTQ); so does a group whose scale underflows to 0 in
    # float32 (range < maxq * 1.4e-45), where AutoGPTQ would divide by zero (qref's choice).
    with np.errstate(over="ignore"):  # a range beyond float32 is refused just below
        degenerate = ((xmin == 0) & (xmax == 0)) | ((xmax - xmin) / maxq == 0)
    xmin = np.where(degenerate, np.float32(-1), xmin)
    xmax = np.where(degenerate, np.float32(1), xmax)
    with np.errstate(over="ignore"):
        scale = ((xmax - xmin) / maxq).astype(np.float32)
    _finite_range(scale, "W")
    if profile == "gptq-sym":
        zero = np.full_like(scale, np.float32((2**bits) // 2))
    else:
        zero = np.rint(-xmin / scale).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None]) + zero[..., None], 0, maxq)
    return GroupQuant(q.astype(np.uint8).reshape(W32.shape), scale, zero, bits, group_size, profile)


def check_state(gq: GroupQuant) -> None:
    """A group-wise state a caller built or loaded: codes < 2^bits, shapes that fit the layout, scales
    and zeros as check_scales_zeros wants them."""
    validation.one_of(gq.bits, GROUPWISE_BITS, "bits")
    validation.one_of(gq.profile, GROUPWISE_PROFILES, "profile")
    codes = np.asarray(gq.codes)
    groups = check_layout(codes.shape, gq.group_size, "codes")
    validation.integer_array(codes, "codes", np.uint8, 0, 2**gq.bits - 1)
    check_scales_zeros(gq.scales, gq.zeros, codes.shape[0], groups)


def as_fractions(a) -> np.ndarray:
    """An object array of Fractions holding a's values exactly (floats are dyadic rationals)."""
    a = np.asarray(a)
    return a if a.dtype == object else np.vectorize(Fraction, otypes=[object])(a)


def dequantize_groupwise(gq: GroupQuant, exact: bool = False) -> np.ndarray:
    """W~ = s (q - z) (GPTQ) or s q + z (minmax), per (row, group), in float64 (exact for the
    float32 scales and integer zeros of a fresh quantization); with exact=True, or when scales or
    zeros are object arrays of Fractions, in exact rational arithmetic."""
    check_state(gq)
    exact = exact or gq.scales.dtype == object or gq.zeros.dtype == object
    convert = as_fractions if exact else (lambda a: a.astype(np.float64))
    s = convert(np.repeat(gq.scales, gq.group_size, axis=1))
    z = convert(np.repeat(gq.zeros, gq.group_size, axis=1))
    q = convert(gq.codes)
    return s * q + z if gq.offset_zeros else s * (q - z)
