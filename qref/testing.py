"""Function-level checks for kernel authors: hold one function to the reference, inside any pytest.

    from qref.testing import check_quantize_4bit, check_dequantize_4bit

    def test_my_kernel():
        check_dequantize_4bit(my_dequantize, quant_type="nf4", blocksize=64, array="torch")

No backend is registered and no global hypothesis setting changes. Each check drives `fn` with the
battery of the decision points (qref.conformance.battery: midpoint ties, zero blocks, tails, subnormal
and largest absmax, ...) and then with the suite's hypothesis strategies, compares bit for bit with
the reference, and on a mismatch raises AssertionError naming the case, the first differing element
(index, expected, got, their bits) and the smallest failing input found: hypothesis' shrunk example,
or for a battery case the single block that fails alone (docs/testing.md).

Conventions (float32 input; `array="torch"` passes torch tensors on `device`, results are read back
with `.cpu()`):
  quantize:    fn(x) -> (packed, absmax). x float32, 1-D or 2-D; packed: the ceil(n/2) bytes of
               bitsandbytes' layout (first element in the high nibble, pad code = code of 0), any
               shape; absmax: float32, one per block of `blocksize` consecutive elements.
  dequantize:  fn(packed, absmax, shape) -> float32 array of `shape`.
"""

from __future__ import annotations

import numpy as np

from .blockwise import dequantize_blockwise
from .codebooks import get_codebook
from .dtypes import FLOAT_FORMATS, as_float32, round_to
from .fourbit import quantize_4bit
from .packing import pack_nibbles, unpack_nibbles
from .testing_core import (
    ARRAYS,
    _back,
    _block_shrink,
    _check_layout,
    _first_difference,
    _float32_battery,
    _run,
    _to,
)
from .testing_forward import check_linear_4bit, check_qalora_forward
from .validation import one_of

__all__ = [
    "check_quantize_4bit",
    "check_dequantize_4bit",
    "check_groupwise",
    "check_linear_4bit",
    "check_qalora_forward",
]


def check_quantize_4bit(
    fn,
    quant_type: str = "nf4",
    blocksize: int = 64,
    max_examples: int = 200,
    array: str = "numpy",
    device="cpu",
    allow: tuple[str, ...] = (),
) -> None:
    """AssertionError unless fn(x) -> (packed, absmax) equals qref.quantize_4bit bit for bit (up to
    the absmax divergences named in `allow`, e.g. "flush-to-zero")."""
    _check_layout(quant_type, blocksize, array)
    from .conformance.strategies import hard_inputs

    def compare(x: np.ndarray) -> str | None:
        packed, state = quantize_4bit(x, blocksize, quant_type)
        got_packed, got_absmax = fn(_to(x, array, device))
        return _first_difference("absmax", state.absmax, _back(got_absmax), allow) or _first_difference(
            "packed", packed.reshape(-1), _back(got_packed).reshape(-1)
        )

    _run(
        f"check_quantize_4bit({quant_type}, blocksize {blocksize})",
        compare,
        _float32_battery(quant_type, blocksize),
        hard_inputs(quant_type, blocksize, fmt="float32"),
        max_examples,
        _block_shrink(blocksize),
    )


def check_dequantize_4bit(
    fn,
    quant_type: str = "nf4",
    blocksize: int = 64,
    max_examples: int = 200,
    array: str = "numpy",
    device="cpu",
    out_dtype: str = "float32",
    allow: tuple[str, ...] = (),
) -> None:
    """AssertionError unless fn(packed, absmax, shape) equals the reference's dequantization bit for bit:
    every code (all 16, in both nibbles) and absmax values from the battery and from hypothesis; with
    out_dtype "bfloat16" or "float16", code[q] * absmax in float32 rounded once to it (the values are
    compared in float32, so fn may return either). `allow` names known divergences to tolerate (e.g.
    ("flush-to-zero",) for a kernel that flushes subnormal results): any other difference fails."""
    _check_layout(quant_type, blocksize, array)
    one_of(out_dtype, FLOAT_FORMATS, "out_dtype")
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    from .conformance.strategies import hard_inputs

    codebook = get_codebook(quant_type)

    def compare(data) -> str | None:
        packed, absmax, n = data
        codes = unpack_nibbles(packed, n)
        want = round_to(dequantize_blockwise(codes, absmax, codebook, blocksize), out_dtype)
        got = fn(_to(packed, array, device), _to(absmax, array, device), (n,))
        return _first_difference("dequantized", want, as_float32(_back(got)), allow)

    def from_x(x: np.ndarray):
        packed, state = quantize_4bit(x, blocksize, quant_type)
        return packed.reshape(-1), state.absmax, x.size

    battery = ((case, from_x(x)) for case, x in _float32_battery(quant_type, blocksize))
    finite_absmax = st.floats(0, float(np.finfo(np.float32).max), width=32)

    @st.composite
    def raw_states(draw):
        n = draw(st.integers(1, 4 * blocksize + 3))
        packed = draw(hnp.arrays(np.uint8, (n + 1) // 2))
        absmax = draw(hnp.arrays(np.float32, -(-n // blocksize), elements=finite_absmax))
        return packed, absmax, n

    def shrink(data, compare):
        packed, absmax, n = data
        codes = unpack_nibbles(packed, n)
        for b in range(absmax.size):  # one block alone, its bytes re-aligned to a byte boundary
            lo, hi = b * blocksize, min(n, (b + 1) * blocksize)
            small = (pack_nibbles(codes[lo:hi]).reshape(-1), absmax[b : b + 1].copy(), hi - lo)
            if compare(small) is not None:
                return small
        return data

    _run(
        f"check_dequantize_4bit({quant_type}, blocksize {blocksize})",
        compare,
        battery,
        st.one_of(raw_states(), hard_inputs(quant_type, blocksize, fmt="float32").map(from_x)),
        max_examples,
        shrink,
    )


def check_groupwise(
    fn,
    bits: int = 4,
    group_size: int = 32,
    profile: str = "gptq-asym",
    max_examples: int = 200,
    array: str = "numpy",
    device="cpu",
) -> None:
    """AssertionError unless fn(W) -> (codes, scales, zeros), W float32 (D_out, D_in), equals
    qref.quantize_groupwise(W, bits, group_size, profile) bit for bit: codes (D_out, D_in) as
    integers, scales and zeros (D_out, G) as float32 (the GPTQ zero point is an integer-valued float)."""
    from .groupwise import GROUPWISE_BITS, GROUPWISE_PROFILES, quantize_groupwise

    one_of(bits, GROUPWISE_BITS, "bits")
    one_of(profile, GROUPWISE_PROFILES, "profile")
    one_of(array, ARRAYS, "array")
    from .conformance.battery import groupwise_cases
    from .conformance.strategies import group_weights

    def compare(W: np.ndarray) -> str | None:
        ref = quantize_groupwise(W, bits, group_size, profile)
        codes, scales, zeros = (_back(a) for a in fn(_to(W, array, device)))
        return (
            _first_difference("codes", ref.codes.astype(np.int64), np.asarray(codes).astype(np.int64))
            or _first_difference("scales", ref.scales.astype(np.float32), scales)
            or _first_difference("zeros", ref.zeros.astype(np.float32), zeros)
        )

    def shrink(W: np.ndarray, compare):
        for r in range(W.shape[0]):  # one row, then one group of it
            row = W[r : r + 1].copy()
            if compare(row) is not None:
                for g in range(0, W.shape[1], group_size):
                    if compare(row[:, g : g + group_size].copy()) is not None:
                        return row[:, g : g + group_size].copy()
                return row
        return W

    _run(
        f"check_groupwise({bits} bits, group {group_size}, {profile})",
        compare,
        groupwise_cases(group_size),
        group_weights(group_size, bits),
        max_examples,
        shrink,
    )
