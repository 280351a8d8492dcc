"""A fixed, seeded battery of inputs that visit every decision point of blockwise 4-bit quantization.

Each case is (name, x) with x a float32/float16 array or a qref.BFloat16Array. The names say which
decision point a case is aimed at; `cases()` yields them in a stable order, so two runs compare
the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from qref.codebooks import get_codebook
from qref.dtypes import BFloat16Array

FORMATS = ("float32", "float16", "bfloat16")


def as_format(x32: np.ndarray, fmt: str):
    """float32 values rounded to fmt (bfloat16 as BFloat16Array)."""
    if fmt == "float32":
        return x32.astype(np.float32)
    if fmt == "float16":
        return x32.astype(np.float16)
    return BFloat16Array.from_float32(x32.astype(np.float32))


def midpoint_block(quant_type: str, blocksize: int, nudge: int = 0) -> np.ndarray:
    """A block with absmax exactly 1 whose other values lie on the codebook's midpoints (+- nudge ulps)."""
    mids = get_codebook(quant_type).midpoints
    vals = mids if nudge == 0 else np.nextafter(mids, np.float32(np.sign(nudge) * np.inf)).astype(np.float32)
    block = np.resize(vals, blocksize).astype(np.float32)
    block[0] = 1.0
    return block


def reciprocal_vs_division(quant_type: str, blocksize: int, seed: int = 0, limit: int = 64) -> np.ndarray:
    """Values whose code differs between x * (1/a) and x / a: they separate the two scaling rules."""
    rng = np.random.default_rng(seed)
    cb = get_codebook(quant_type)
    found = []
    for _ in range(200):
        a = np.float32(rng.uniform(0.5, 8.0))
        x = (cb.midpoints.astype(np.float64) * a).astype(np.float32)
        for k in range(-3, 4):
            xk = x
            for _ in range(abs(k)):
                xk = np.nextafter(xk, np.float32(np.sign(k) * np.inf)).astype(np.float32)
            by_mul = cb.nearest(np.clip(xk * (np.float32(1) / a), -1, 1))
            by_div = cb.nearest(np.clip(xk / a, -1, 1))
            found += [(a, v) for v in xk[by_mul != by_div]]
        if len(found) >= limit:
            break
    a, vals = found[0][0], np.array([v for aa, v in found if aa == found[0][0]], dtype=np.float32)
    block = np.resize(vals, blocksize).astype(np.float32)
    block[0] = a  # absmax of the block
    return block


def cases(quant_type: str, blocksize: int, seed: int = 0) -> Iterator[tuple[str, object]]:
    """Named inputs for one (quant_type, blocksize); every float format for the random ones."""
    rng = np.random.default_rng([seed, blocksize, quant_type == "fp4"])
    for fmt in FORMATS:
        yield f"normal-2d/{fmt}", as_format(rng.standard_normal((16, 4 * blocksize)).astype(np.float32), fmt)
        yield f"tail+odd/{fmt}", as_format(rng.standard_normal(3 * blocksize + 7).astype(np.float32), fmt)
        heavy = rng.standard_t(2, size=(8, blocksize + 5)).astype(np.float32)
        yield f"heavy-tails/{fmt}", as_format(heavy, fmt)
    zero = rng.standard_normal(4 * blocksize + 3).astype(np.float32)
    zero[blocksize : 2 * blocksize] = 0.0
    zero[-3:] = 0.0
    yield "zero-block+zero-tail", zero
    yield "all-zero", np.zeros(2 * blocksize, dtype=np.float32)
    one = np.zeros(blocksize + 1, dtype=np.float32)
    one[3] = -2.5
    yield "single-nonzero", one
    yield "signed-zeros", np.resize(np.array([0.0, -0.0, 1.0, -1.0], dtype=np.float32), blocksize + 2)
    yield "single-element", np.array([0.37], dtype=np.float32)
    for nudge, label in ((0, "on"), (-1, "below"), (1, "above")):
        block = midpoint_block(quant_type, blocksize, nudge)
        yield f"midpoints-{label}/full+tail", np.concatenate([block, block[: blocksize // 2 + 1]])
    rvd = reciprocal_vs_division(quant_type, blocksize, seed)
    yield "reciprocal-vs-division/full+tail", np.concatenate([rvd, rvd[: blocksize - 1]])
    tiny = (rng.standard_normal(blocksize + 9) * 1e-39).astype(np.float32)  # subnormal absmax
    yield "subnormal", tiny
    big = (rng.uniform(-1, 1, blocksize * 2 + 1) * np.finfo(np.float32).max).astype(np.float32)
    yield "largest-finite", big


def groupwise_cases(group_size: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Named float32 weights (D_out, D_in) for group-wise quantization, aimed at its decision points."""
    rng = np.random.default_rng([seed, group_size])
    d_in = 8 * group_size
    base = (rng.standard_normal((32, d_in)) * 0.02).astype(np.float32)
    yield "normal", base
    yield "heavy-tails", (rng.standard_t(2, size=(32, d_in)) * 0.02).astype(np.float32)
    edge = base.copy()
    edge[:, :group_size] = 0.0  # all-zero groups
    edge[:4, group_size : 2 * group_size] = np.abs(edge[:4, group_size : 2 * group_size])  # no negative value
    edge[4:8, 2 * group_size : 3 * group_size] = -np.abs(edge[4:8, 2 * group_size : 3 * group_size])  # no positive
    edge[8:12, 3 * group_size : 4 * group_size] = 0.5  # constant non-zero groups
    yield "edge-groups", edge
    ties = np.resize(np.arange(-8, 8, dtype=np.float32) + 0.5, (32, d_in)).astype(np.float32)
    yield "half-integers", ties  # w / scale lands on .5 for many scales: round half to even
    yield "subnormal-groups", (rng.standard_normal((32, d_in)) * 1e-44).astype(np.float32)
    # Group ranges from 1e-7 to 1e-1 (geometric, one per group): the libraries' small-range guards
    # (torchao's scale floor 1e-6, HQQ's near-constant range 1e-4) fall inside.
    widths = np.geomspace(1e-7, 1e-1, 32 * 8).astype(np.float32).reshape(32, 8, 1)
    offsets = rng.standard_normal((32, 8, 1)).astype(np.float32) * np.float32(0.05)
    unit = rng.uniform(0, 1, (32, 8, group_size)).astype(np.float32)
    unit[..., 0], unit[..., 1] = 0, 1
    yield "narrow-groups", (offsets + widths * unit).reshape(32, d_in).astype(np.float32)
