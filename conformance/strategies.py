"""hypothesis strategies that hunt the decision points of the reference; importable by third parties.

    from qref.conformance import strategies as qs
    @given(qs.hard_inputs("nf4", 64))  ...

Every strategy returns NumPy data (bfloat16 as qref.BFloat16Array); convert with a backend's
`from_numpy`. Blocks are drawn from kinds aimed at one decision point each (see BLOCK_KINDS).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import BLOCKSIZES_4BIT
from qref.codebooks import get_codebook
from qref.dtypes import BFloat16Array
from qref.groupwise import GROUPWISE_BITS, GROUPWISE_PROFILES

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Block kinds: one decision point each.
BLOCK_KINDS = (
    "random",
    "zero",
    "single-nonzero",
    "signed-zeros",
    "midpoints",
    "midpoints+-1ulp",
    "reciprocal-vs-division",
    "subnormal",
    "largest-finite",
)

blocksizes = st.sampled_from(BLOCKSIZES_4BIT)
small_blocksizes = st.sampled_from((32, 64, 128))
quant_types = st.sampled_from(("nf4", "fp4"))
formats = st.sampled_from(("float32", "float16", "bfloat16"))


def _ulps(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x moved by k ulps (k in -2..2) in float32."""
    bits = x.astype(np.float32).view(np.int32).astype(np.int64)
    sign = np.where(x < 0, -1, 1)
    moved = bits + sign * k
    return np.where(x == 0, x, moved.astype(np.int32).view(np.float32)).astype(np.float32)


@st.composite
def block(draw, codebook: str, size: int) -> np.ndarray:
    """One block (float32) of the drawn kind; the kind name is recorded in hypothesis' notes."""
    kind = draw(st.sampled_from(BLOCK_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":  # normals at a random decade, or raw bit patterns (every exponent)
        if draw(st.booleans()):
            return (rng.standard_normal(size) * 10.0 ** draw(st.integers(-30, 30))).astype(np.float32)
        raw = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32).view(np.float32)
        return np.where(np.isfinite(raw), raw, np.float32(0)).astype(np.float32)
    if kind == "zero":
        return np.zeros(size, np.float32)
    if kind == "single-nonzero":
        out = np.zeros(size, np.float32)
        out[draw(st.integers(0, size - 1))] = draw(finite32.filter(lambda v: v != 0))
        return out
    if kind == "signed-zeros":
        return rng.choice(np.array([0.0, -0.0, 0.5, -0.5], np.float32), size)
    if kind == "subnormal":
        return (rng.standard_normal(size) * 1e-40).astype(np.float32)
    if kind == "largest-finite":
        return (rng.uniform(-1, 1, size) * FLOAT32_MAX).astype(np.float32)
    mids = get_codebook(codebook).midpoints
    if kind in ("midpoints", "midpoints+-1ulp"):
        # absmax a power of two: x / absmax is exact, so the scaled value sits on (or next to) a midpoint
        scale = np.float32(2.0 ** draw(st.integers(-20, 20)))
        vals = rng.choice(mids, size) * rng.choice(np.array([1, -1], np.float32), size)
        if kind == "midpoints+-1ulp":
            vals = _ulps(vals, rng.integers(-1, 2, size))
        vals = np.clip(vals, -1, 1).astype(np.float32) * scale
        vals[draw(st.integers(0, size - 1))] = scale * draw(st.sampled_from([1, -1]))
        return vals.astype(np.float32)
    # reciprocal-vs-division: absmax a not a power of two; values m*a and neighbours, where
    # x * (1/a) and x / a can round to opposite sides of a midpoint
    a = np.float32(draw(st.floats(0.5, 8.0, width=32)))
    vals = _ulps((rng.choice(mids, size).astype(np.float64) * a).astype(np.float32), rng.integers(-2, 3, size))
    vals = np.clip(vals, -a, a).astype(np.float32)
    vals[0] = a
    return vals


def as_format(x32: np.ndarray, fmt: str):
    """float32 values rounded to fmt, non-finite results (fp16 overflow) replaced by the format's max."""
    if fmt == "float32":
        return x32.astype(np.float32)
    if fmt == "float16":
        return np.clip(x32, -65504, 65504).astype(np.float16)
    b = BFloat16Array.from_float32(x32)
    ok = np.isfinite(b.to_float32())
    return BFloat16Array(np.where(ok, b.bits, np.uint16(0x7F7F) | (b.bits & np.uint16(0x8000))).astype(np.uint16))


@st.composite
def hard_inputs(draw, codebook: str, blocksize: int, max_blocks: int = 4, fmt: str | None = None):
    """1 to max_blocks blocks of hard kinds plus an optional tail (odd lengths too), in any format."""
    nblocks = draw(st.integers(0, max_blocks))
    tail = draw(st.integers(0 if nblocks else 1, blocksize - 1))
    parts = [draw(block(codebook, blocksize)) for _ in range(nblocks)]
    if tail:
        parts.append(draw(block(codebook, tail)))
    x = np.concatenate(parts).astype(np.float32)
    shape = draw(st.sampled_from([(x.size,), (1, x.size)] + ([(2, x.size // 2)] if x.size % 2 == 0 else [])))
    return as_format(x.reshape(shape), fmt or draw(formats))


@st.composite
def float_arrays(draw, max_size=600, formats=("float32", "float16", "bfloat16")):
    """Finite arrays of any accepted format, with zeros and signed zeros mixed in."""
    fmt = draw(st.sampled_from(formats))
    n = draw(st.integers(1, max_size))
    elements = st.one_of(finite32, st.sampled_from([0.0, -0.0, 1.0, -1.0]))
    return as_format(draw(hnp.arrays(np.float32, n, elements=elements)), fmt)


@st.composite
def group_weights(draw, group_size: int, bits: int, max_rows: int = 6, max_groups: int = 4) -> np.ndarray:
    """Weights (D_out, G*g) float32 whose groups are drawn from: random, all-zero, constant, one sign,
    half-integer multiples of a power-of-two scale (round-half-even ties), subnormal."""
    rows, groups = draw(st.integers(1, max_rows)), draw(st.integers(1, max_groups))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    maxq = 2**bits - 1
    W = (rng.standard_normal((rows, groups, group_size)) * 0.02).astype(np.float32)
    for r in range(rows):
        for g in range(groups):
            kind = draw(
                st.sampled_from(
                    ("random", "zero", "constant", "positive", "negative", "ties", "subnormal", "underflow")
                )
            )
            if kind == "zero":
                W[r, g] = 0
            elif kind == "constant":
                W[r, g] = np.float32(draw(st.floats(-4, 4, width=32)))
            elif kind == "positive":
                W[r, g] = np.abs(W[r, g])
            elif kind == "negative":
                W[r, g] = -np.abs(W[r, g])
            elif kind == "subnormal":
                W[r, g] = (rng.standard_normal(group_size) * 1e-42).astype(np.float32)
            elif kind == "underflow":  # a range of a few subnormal steps: (xmax - xmin) / maxq underflows to 0
                W[r, g] = (rng.integers(-3, 4, group_size) * np.float32(1.4e-45)).astype(np.float32)
            elif kind == "ties":  # xmin = -j 2^e, xmax = (maxq - j) 2^e: scale 2^e, values on k/2 * 2^e
                e, j = draw(st.integers(-12, 4)), draw(st.integers(0, maxq))
                vals = rng.integers(-2 * j, 2 * (maxq - j) + 1, group_size).astype(np.float32) / 2
                vals[0], vals[-1] = -j, maxq - j
                W[r, g] = vals * np.float32(2.0**e)
    return W.reshape(rows, groups * group_size)


groupwise_bits = st.sampled_from(GROUPWISE_BITS)
groupwise_profiles = st.sampled_from(GROUPWISE_PROFILES)
group_sizes = st.sampled_from((32, 64, 128))


@st.composite
def matrices(draw, max_side: int = 24, dtype=np.float64):
    """A (m, n) matrix of normals scaled by a random decade, with a random rank r in 1..min(m, n)."""
    m, n = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(("full", "low-rank", "decaying")))
    R = rng.standard_normal((m, n))
    if kind == "low-rank":
        k = draw(st.integers(1, min(m, n)))
        R = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    elif kind == "decaying":
        R = R * (0.5 ** np.arange(n))[None, :]
    return (R * 10.0 ** draw(st.integers(-3, 3))).astype(dtype), draw(st.integers(1, min(m, n)))


@st.composite
def whole_block_inputs(draw, codebook: str = "nf4", blocksize: int = 64, max_blocks: int = 8):
    """(x, scaler_block_size) for libraries without tail blocks (torchao): 1..max_blocks hard blocks,
    1-D or 2-D, any format, and a scaler block size that divides the block count."""
    nblocks = draw(st.integers(1, max_blocks))
    x = np.concatenate([draw(block(codebook, blocksize)) for _ in range(nblocks)]).astype(np.float32)
    rows = draw(st.sampled_from([1, nblocks]))
    x = x.reshape(-1) if rows == 1 else x.reshape(rows, -1)
    sbs = draw(st.sampled_from([d for d in range(1, nblocks + 1) if nblocks % d == 0]))
    return as_format(x, draw(formats)), sbs


# ---- double quantization: absmax vectors that cross the second level's blocks, constructed means ----
DQ_KINDS = ("random", "spread", "near-constant", "near-max", "tiny", "adversarial-mean")


def adversarial_mean(scale_exp: int = 0, extra: int = 0) -> np.ndarray:
    """absmax values whose exact mean lies a hair above a float32 midpoint, so that every shortcut
    (float32 or float64 running sums, rounding the sum to float32 first) rounds it differently:
    [4, 2^-22, 2^-52 x 3, 0 ...] (8 + 8 extra values): the exact sum is 4 + 2^-22 + 2^-50 (to float64),
    the mean 0.5 + 2^-25 + 2^-53 rounds up; a running float64 sum loses the 2^-52s and ties to even."""
    v = np.zeros(8 + 8 * extra, np.float32)
    v[:5] = [4.0, 2.0**-22, 2.0**-52, 2.0**-52, 2.0**-52]
    return (v * np.float32(2.0**scale_exp)).astype(np.float32)


@st.composite
def dq_absmax(draw, max_size: int = 1100) -> np.ndarray:
    """A first-level absmax vector (float32, >= 0) of 1 to max_size values: sizes cross the 256-block
    of the second level and leave tails; kinds aim at the mean, the centring, the float32 maximum."""
    kind = draw(st.sampled_from(DQ_KINDS))
    if kind == "adversarial-mean":
        v = adversarial_mean(draw(st.integers(-60, 60)), draw(st.integers(0, 3)))
        return (
            v[np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(v.size)] if draw(st.booleans()) else v
        )
    n = (
        draw(st.sampled_from((1, 2, 255, 256, 257, 511, 513, 768, 1024)))
        if draw(st.booleans())
        else draw(st.integers(1, max_size))
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        v = np.abs(rng.standard_normal(n)) * 10.0 ** draw(st.integers(-30, 30))
    elif kind == "spread":
        v = 10.0 ** rng.uniform(-38, 38, n)
    elif kind == "near-constant":
        v = np.full(n, 10.0 ** draw(st.integers(-5, 5))) * (1 + rng.integers(-2, 3, n) * 2.0**-23)
    elif kind == "near-max":
        v = FLOAT32_MAX * rng.choice(np.array([0.0, 0.5, 0.99, 1.0]), n)
    else:
        v = np.abs(rng.standard_normal(n)) * 1e-40
    return np.minimum(v, FLOAT32_MAX).astype(np.float32)


def double_rounding_block(codebook: str, fmt: str, size: int = 64) -> np.ndarray | None:
    """A block whose dequantized value code[q] * absmax rounds differently through float32 (the spec:
    float32 product, then round to fmt) than in one step: the float32 product lies exactly on a
    midpoint of fmt while the exact product does not. None when the search finds no such absmax."""
    cb = get_codebook(codebook)
    inner = cb.values[(np.abs(cb.values) < 1) & (cb.values != 0)]
    v = np.float32(inner[np.argmax(np.abs(inner))])  # the largest code value below 1 in magnitude
    bits = 1 + np.arange(2**20, dtype=np.uint32)
    a = (np.uint32(0x3F800000) + bits).view(np.float32)  # absmax values just above 1
    p32 = (v * a).astype(np.float32)
    exact = v.astype(np.float64) * a.astype(np.float64)
    # the float32 product exactly on a midpoint of fmt (bfloat16 keeps 8 significand bits of float32's 24,
    # float16 11 in its normal range), reached by rounding (the exact product is not that midpoint)
    lost_bits = 16 if fmt == "bfloat16" else 13
    lost = p32.view(np.uint32) & np.uint32((1 << lost_bits) - 1)
    tie = (lost == (1 << (lost_bits - 1))) & (exact != p32.astype(np.float64))
    ties_up = ((p32.view(np.uint32) >> np.uint32(lost_bits)) & np.uint32(1)) == 1  # to even: up when odd
    hit = tie & (ties_up != (exact > p32.astype(np.float64)))  # one-step rounding would go the other way
    idx = np.flatnonzero(hit)
    if idx.size == 0:
        return None
    block = np.zeros(size, np.float32)
    block[0] = a[idx[0]]
    block[1:] = a[idx[0]] * v  # quantizes to v's code
    return block
