"""Codebooks: NF-k quantile maps, FP4, INT-k grids and the 8-bit dynamic map (docs/codebooks.md).

A codebook is a float32 table indexed by the stored code. Every table here is built by the
published construction and reproduces bitsandbytes' float32 values bit for bit, including the
float32 rounding of the intermediate linspace (see `linspace_f32`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy.stats import norm

#: QLoRA's offset for NF4, the literal bitsandbytes uses: 1 - delta, delta = (1/30 + 1/32) / 2.
NF4_OFFSET = 0.9677083


@dataclass(frozen=True)
class Codebook:
    """A code table (float32, in code-index order) and the derived nearest-code search data."""

    name: str
    values: np.ndarray
    order: np.ndarray = field(init=False, repr=False)
    midpoints: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        if values.ndim != 1 or not 2 <= values.size <= 256:
            raise ValueError(f"codebook values must be 1-D with 2..256 entries, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("codebook values must be finite")
        values.setflags(write=False)
        # Stable sort: among equal values (FP4's +0 and -0) the lower index comes first.
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        # Midpoints in float32, as bitsandbytes computes them: (c[i] + c[i+1]) / 2.
        midpoints = ((ordered[:-1] + ordered[1:]) / np.float32(2)).astype(np.float32)
        for arr in (order, midpoints):
            arr.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "midpoints", midpoints)

    @property
    def size(self) -> int:
        return int(self.values.size)

    def nearest(self, scaled: np.ndarray) -> np.ndarray:
        """Index of the nearest code: position = #{j : m_j < s} over the sorted midpoints m_j, so a
        value exactly on a midpoint takes the lower code (torch.bucketize with right=False)."""
        scaled = np.asarray(scaled, dtype=np.float32)
        if self.size <= 16:  # the count itself: one comparison pass per midpoint
            position: np.ndarray = np.zeros(scaled.shape, dtype=np.uint8)
            above = np.empty(scaled.shape, dtype=bool)
            for m in self.midpoints:
                np.greater(scaled, m, out=above)
                position += above.view(np.uint8)
        else:  # the same count by binary search, cheaper for 256 midpoints
            position = np.searchsorted(self.midpoints, scaled, side="left")
        return np.take(self.order.astype(np.uint8), position)

    def __eq__(self, other):
        return isinstance(other, Codebook) and self.values.tobytes() == other.values.tobytes()

    def __hash__(self):
        return hash(self.values.tobytes())


def linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """float32 linspace as PyTorch computes it: step in float32, first half fma(step, i, start),
    second half fma(-step, num-1-i, stop), each rounded once to float32."""
    a, b = np.float32(start), np.float32(stop)
    step = np.float32((b - a) / np.float32(num - 1))
    i = np.arange(num, dtype=np.float64)
    # float64 holds step*i and the sum exactly here, so one cast to float32 equals the fused result.
    first = np.float64(a) + np.float64(step) * i
    second = np.float64(b) - np.float64(step) * (num - 1 - i)
    return np.where(np.arange(num) < num // 2, first, second).astype(np.float32)


def normal_map(bits: int = 4, offset: float = NF4_OFFSET, use_extra_value: bool = True) -> np.ndarray:
    """NF-k values (QLoRA Sec. 3, Eq. 4): normal quantiles at evenly spaced probabilities, plus 0.

    Asymmetric (use_extra_value): 2^(k-1) positive and 2^(k-1)-1 negative quantiles and an exact
    zero, 2^k values. Symmetric: 2^(k-1)-1 on each side and zero, 2^k - 1 values. Sorted ascending,
    divided by the largest value in float32.
    """
    half = 2 ** (bits - 1)
    positive = norm.ppf(linspace_f32(offset, 0.5, half + 1 if use_extra_value else half)[:-1].astype(np.float64))
    negative = -norm.ppf(linspace_f32(offset, 0.5, half)[:-1].astype(np.float64))
    values = np.sort(np.concatenate([positive, [0.0], negative]).astype(np.float32))
    return (values / values.max()).astype(np.float32)


def nf_offset(bits: int) -> float:
    """QLoRA's offset generalised to k bits: 1 - (1/(2(2^k-1)) + 1/(2*2^k)) / 2; NF4 keeps its literal."""
    if bits == 4:
        return NF4_OFFSET
    return 1.0 - 0.5 * (1.0 / (2 * (2**bits - 1)) + 1.0 / (2 * 2**bits))


def fp4_values() -> np.ndarray:
    """bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2) in index order, divided by 12.

    Code 8 (sign bit set, magnitude 0) holds +0.0, not -0.0: bitsandbytes writes it as the
    Python integer -0, which is 0."""
    raw = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=np.float32)
    return (raw / np.abs(raw).max()).astype(np.float32)


def int_values(bits: int, symmetric: bool = True) -> np.ndarray:
    """INT-k on [-1, 1]: symmetric j/(2^(k-1)-1) for |j| <= 2^(k-1)-1 (2^k - 1 codes, 0 exact);
    asymmetric (2j - (2^k - 1))/(2^k - 1) for j = 0..2^k-1 (2^k codes, no exact 0)."""
    if symmetric:
        m = 2 ** (bits - 1) - 1
        return (np.arange(-m, m + 1, dtype=np.float64) / m).astype(np.float32)
    m = 2**bits - 1
    return ((2 * np.arange(m + 1, dtype=np.float64) - m) / m).astype(np.float32)


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """Dettmers' dynamic tree map (8-bit Optimizers, Sec. 2.3): for each exponent e, the midpoints of a
    float32 linspace(0.1, 1) scaled by 10^(e - E + 1) in float32, both signs if signed, plus 0 and 1,
    zero-padded to 2^total_bits and sorted."""
    non_sign_bits = total_bits - 1

    def segment(items: int, scale: float) -> list[np.ndarray]:
        bounds = linspace_f32(0.1, 1.0, items)
        means = ((bounds[:-1] + bounds[1:]) / np.float32(2)).astype(np.float32)
        scaled = (means * np.float32(scale)).astype(np.float32)
        return [scaled, -scaled] if signed else [scaled]

    parts = []
    for i in range(max_exponent_bits):
        items = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
        parts += segment(items, 10.0 ** (i - max_exponent_bits + 1))
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    if extra > 0:  # exponent bits all zero and no indicator bit: one more segment at the top decade
        parts += segment(extra + 1, 1.0)
    values = np.concatenate(parts + [np.array([0.0, 1.0], dtype=np.float32)])
    values = np.concatenate([values, np.zeros(2**total_bits - values.size, dtype=np.float32)])
    return np.sort(values).astype(np.float32)


_BUILDERS = {
    "nf4": lambda: normal_map(4),
    "nf4-symmetric": lambda: normal_map(4, use_extra_value=False),
    "nf2": lambda: normal_map(2, nf_offset(2)),
    "nf3": lambda: normal_map(3, nf_offset(3)),
    "nf8": lambda: normal_map(8, nf_offset(8)),
    "fp4": fp4_values,
    "int2": lambda: int_values(2),
    "int3": lambda: int_values(3),
    "int4": lambda: int_values(4),
    "int8": lambda: int_values(8),
    "int4-asymmetric": lambda: int_values(4, symmetric=False),
    "dynamic": lambda: dynamic_map(signed=True),
    "dynamic-unsigned": lambda: dynamic_map(signed=False),
}

#: Names accepted by `get_codebook`.
CODEBOOK_NAMES = tuple(_BUILDERS)


def get_codebook(name: str) -> Codebook:
    """The named codebook (see `CODEBOOK_NAMES`); anything else, a non-string included, is a ValueError."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown codebook {name!r}; known: {', '.join(CODEBOOK_NAMES)}")
    return _build(name)


@cache
def _build(name: str) -> Codebook:
    return Codebook(name, _BUILDERS[name]())
