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

from collections.abc import Callable
from typing import Any

import numpy as np

from . import interop
from .blockwise import dequantize_blockwise
from .codebooks import get_codebook
from .fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT, quantize_4bit
from .packing import pack_nibbles, unpack_nibbles
from .validation import one_of

ARRAYS = ("numpy", "torch")


class _Mismatch(AssertionError):
    pass


def _to(a: np.ndarray, array: str, device: str):
    return a.copy() if array == "numpy" else interop.to_torch(a, device)


def _back(a) -> np.ndarray:
    return interop.to_numpy(a) if hasattr(a, "detach") else np.asarray(a)


def _first_difference(what: str, want: np.ndarray, got: np.ndarray) -> str | None:
    """None when equal bit for bit (shape, dtype size and bytes), else a line naming the first difference."""
    got = np.asarray(got)
    if got.size != want.size:
        return f"{what}: {got.size} elements, expected {want.size}"
    if got.dtype.itemsize != want.dtype.itemsize or got.dtype.kind != want.dtype.kind:
        return f"{what}: dtype {got.dtype}, expected {want.dtype}"
    w, g = np.ascontiguousarray(want.reshape(-1)), np.ascontiguousarray(got.reshape(-1))
    bits = f"u{want.dtype.itemsize}"
    diff = np.flatnonzero(w.view(bits) != np.ascontiguousarray(g).view(bits))
    if not diff.size:
        return None
    i = int(diff[0])
    width = 2 * w.itemsize
    want_bits, got_bits = int(w.view(bits)[i]), int(g.view(bits)[i])
    return (
        f"{what}: {diff.size} of {w.size} elements differ; first at flat index {i}: expected {w[i]!r} "
        f"(bits 0x{want_bits:0{width}x}), got {g[i]!r} (bits 0x{got_bits:0{width}x})"
    )


def _settings(max_examples: int):
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def _run(name: str, compare: Callable[[Any], str | None], battery, strategy, max_examples: int, shrink) -> None:
    """The battery first (each failing case shrunk to its failing block), then hypothesis (shrunk by it)."""
    from hypothesis import given

    for case, data in battery:
        problem = compare(data)
        if problem is not None:
            small = shrink(data, compare)
            raise AssertionError(
                f"{name}: battery case {case!r}: {problem}\nsmallest failing input found: {_show(small)}"
            )

    @_settings(max_examples)
    @given(strategy)
    def search(data):
        problem = compare(data)
        if problem is not None:
            raise _Mismatch(f"{name}: {problem}\nsmallest failing input (hypothesis): {_show(data)}")

    try:
        search()
    except _Mismatch as e:
        raise AssertionError(str(e)) from None


def _show(data) -> str:
    with np.printoptions(threshold=200, floatmode="unique"):
        if isinstance(data, tuple):
            return "(" + ", ".join(repr(d) for d in data) + ")"
        return repr(data)


def _check_layout(quant_type: str, blocksize: int, array: str) -> None:
    one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
    one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
    one_of(array, ARRAYS, "array")


def _float32_battery(quant_type: str, blocksize: int):
    from .conformance.battery import cases

    for case, x in cases(quant_type, blocksize):
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            yield case, x


def _block_shrink(blocksize: int):
    """For a failing x: the shortest prefix of blocks that still fails, then the failing block alone."""

    def shrink(x: np.ndarray, compare):
        flat = x.reshape(-1)
        blocks = [flat[i : i + blocksize] for i in range(0, flat.size, blocksize)]
        for b in blocks:
            if compare(b.copy()) is not None:
                return b.copy()
        return x

    return shrink


def check_quantize_4bit(
    fn, quant_type: str = "nf4", blocksize: int = 64, max_examples: int = 200, array: str = "numpy", device="cpu"
) -> None:
    """AssertionError unless fn(x) -> (packed, absmax) equals qref.quantize_4bit bit for bit."""
    _check_layout(quant_type, blocksize, array)
    from .conformance.strategies import hard_inputs

    def compare(x: np.ndarray) -> str | None:
        packed, state = quantize_4bit(x, blocksize, quant_type)
        got_packed, got_absmax = fn(_to(x, array, device))
        return _first_difference("absmax", state.absmax, _back(got_absmax)) or _first_difference(
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
    fn, quant_type: str = "nf4", blocksize: int = 64, max_examples: int = 200, array: str = "numpy", device="cpu"
) -> None:
    """AssertionError unless fn(packed, absmax, shape) equals the reference's dequantization bit for bit:
    every code (all 16, in both nibbles) and absmax values from the battery and from hypothesis."""
    _check_layout(quant_type, blocksize, array)
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    from .conformance.strategies import hard_inputs

    codebook = get_codebook(quant_type)

    def compare(data) -> str | None:
        packed, absmax, n = data
        codes = unpack_nibbles(packed, n)
        want = dequantize_blockwise(codes, absmax, codebook, blocksize)
        got = fn(_to(packed, array, device), _to(absmax, array, device), (n,))
        return _first_difference("dequantized", want, _back(got))

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
