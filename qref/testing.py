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
from .dtypes import FLOAT_FORMATS, as_float32, round_to
from .fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT, quantize_4bit
from .packing import pack_nibbles, unpack_nibbles
from .validation import one_of

ARRAYS = ("numpy", "torch")


class _Mismatch(AssertionError):
    pass


def _to(a: np.ndarray, array: str, device: str):
    return a.copy() if array == "numpy" else interop.to_torch(a, device)


def _to_format(a: np.ndarray, fmt: str, array: str, device: str):
    """float32 values already in `fmt`, passed as an array of that dtype."""
    if array == "numpy":
        return a.astype(fmt)
    import torch

    return interop.to_torch(a, device).to(getattr(torch, fmt))


def _back(a) -> np.ndarray:
    return interop.to_numpy(a) if hasattr(a, "detach") else np.asarray(a)


def _allowed(allow, want: np.ndarray, got: np.ndarray, idx: np.ndarray) -> bool:
    """True when one of the known divergences named in `allow` (ids of docs/known-divergences.md
    whose classifier needs only the two outputs, e.g. "flush-to-zero", "signed-zero") explains
    every difference."""
    if not allow:
        return False
    from .conformance import divergences

    entries = divergences.catalogue()
    for name in allow:
        if name not in entries or not entries[name]["classifier"]:
            raise ValueError(f"allow: {name!r} is not a known divergence with a classifier")
        classify = divergences.CLASSIFIERS[entries[name]["classifier"]]
        if classify(want.reshape(-1), got.reshape(-1), idx) == name:
            return True
    return False


def _first_difference(what: str, want: np.ndarray, got: np.ndarray, allow=()) -> str | None:
    """None when equal bit for bit (shape, dtype size and bytes) or when every difference is one of
    the known divergences in `allow`, else a line naming the first difference."""
    got = np.asarray(got)
    if got.size != want.size:
        return f"{what}: {got.size} elements, expected {want.size}"
    if got.dtype.itemsize != want.dtype.itemsize or got.dtype.kind != want.dtype.kind:
        return f"{what}: dtype {got.dtype}, expected {want.dtype}"
    w, g = np.ascontiguousarray(want.reshape(-1)), np.ascontiguousarray(got.reshape(-1))
    bits = f"u{want.dtype.itemsize}"
    diff = np.flatnonzero(w.view(bits) != np.ascontiguousarray(g).view(bits))
    if not diff.size or _allowed(allow, w, g, diff):
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


def _certify(what: str, want: np.ndarray, bound: np.ndarray, got) -> str | None:
    """None when got is within the certified bound of want everywhere, else the first element beyond."""
    from .linear import check_linear

    got = np.asarray(_back(got), dtype=np.float64)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, expected {want.shape}"
    within, i, worst = check_linear(got, want, bound)
    if within:
        return None
    return (
        f"{what}: beyond the certified bound (largest |diff| / bound = {worst:.3g}); first at flat index {i}: "
        f"expected {want.ravel()[i]!r} +- {bound.ravel()[i]:.3g}, got {got.ravel()[i]!r}"
    )


def _row_shrink(shrink_x):
    """For a failing (x, ...) case: the first row of x that fails alone."""

    def shrink(data, compare):
        x = data[0]
        for r in range(x.shape[0]):
            small = (x[r : r + 1].copy(), *data[1:])
            if compare(small) is not None:
                return shrink_x(small)
        return data

    return shrink


def check_linear_4bit(
    fn,
    quant_type: str = "nf4",
    blocksize: int = 64,
    max_examples: int = 100,
    array: str = "numpy",
    device="cpu",
    compute: str = "float32",
    kernel: str = "reference",
) -> None:
    """AssertionError unless fn(x, packed, absmax, shape) -> y, the 4-bit linear y = x W~^T with
    W (D_out, D_in) = `shape` in bitsandbytes' 4-bit layout (as check_dequantize_4bit passes it) and x
    (rows, D_in) in `compute` format, stays within qref.linear's certified bound of the reference
    (W~ in `compute`, float32 accumulation, output in `compute`; docs/linear.md). A wrong code, block,
    scale or layout lands beyond it. bfloat16 needs array="torch". kernel="bnb-cuda-inference" holds
    fn to bitsandbytes' CUDA inference kernel's own rule instead (qref.linear.linear_4bit)."""
    _check_layout(quant_type, blocksize, array)
    one_of(compute, FLOAT_FORMATS, "compute")
    if compute == "bfloat16" and array != "torch":
        raise ValueError("compute='bfloat16' needs array='torch' (NumPy has no bfloat16)")
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    from .linear import linear_4bit

    def compare(data) -> str | None:
        x, W = data
        packed, state = quantize_4bit(W, blocksize, quant_type)
        x = as_float32(round_to(x, compute))  # x in the compute format (float32 values)
        want, bound = linear_4bit(x, packed, state, compute=compute, kernel=kernel)
        got = fn(
            _to_format(x, compute, array, device),
            _to(packed.reshape(-1), array, device),
            _to(state.absmax, array, device),
            W.shape,
        )
        return _certify("y", want, bound, as_float32(_back(got)))

    rng = np.random.default_rng(0)

    def case(W):
        return rng.standard_normal((3, W.shape[1])).astype(np.float32), W

    battery = (
        (name, case(x.reshape(-1, blocksize)))
        for name, x in _float32_battery(quant_type, blocksize)
        if x.size % blocksize == 0 and x.size >= blocksize
    )
    unit = st.floats(-4, 4, width=32)

    @st.composite
    def layers(draw):
        d_out, d_in = draw(st.integers(1, 6)), blocksize * draw(st.integers(1, 3))
        W = draw(hnp.arrays(np.float32, (d_out, d_in), elements=unit))
        return draw(hnp.arrays(np.float32, (draw(st.integers(1, 3)), d_in), elements=unit)), W

    _run(
        f"check_linear_4bit({quant_type}, blocksize {blocksize})",
        compare,
        battery,
        layers(),
        max_examples,
        _row_shrink(lambda d: d),
    )


def check_qalora_forward(
    fn,
    bits: int = 4,
    group_size: int = 32,
    pooling: str = "peft",
    max_examples: int = 50,
    array: str = "numpy",
    device="cpu",
) -> None:
    """AssertionError unless fn(x, tensors, A, B, scaling) -> y, QA-LoRA's unmerged forward on a GPTQ
    layer (tensors: qref.gptq_pack.to_gptq's v2 checkpoint dict, qweight/qzeros/scales(float16)/g_idx;
    A (r, G), B (D_out, r), x (rows, D_in), all float32), stays within qref.linear.qalora_linear's
    certified bound of qref.qalora.forward with `pooling` ("peft": c = G/g, "average", "sum")."""
    from .gptq_pack import from_gptq, to_gptq
    from .groupwise import GROUPWISE_BITS, quantize_groupwise
    from .linear import qalora_linear
    from .qalora import POOLING

    one_of(bits, GROUPWISE_BITS, "bits")
    one_of(pooling, POOLING, "pooling")
    one_of(array, ARRAYS, "array")
    from .conformance.battery import groupwise_cases
    from .conformance.strategies import group_weights

    def compare(data) -> str | None:
        x, W, A, B, scaling = data
        tensors = to_gptq(quantize_groupwise(W, bits, group_size, "gptq-asym"), "v2")
        want, bound = qalora_linear(x, from_gptq(tensors, bits, group_size, "v2"), A, B, scaling, pooling)
        given = {k: _to(v, array, device) for k, v in tensors.items()}
        got = fn(_to(x, array, device), given, _to(A, array, device), _to(B, array, device), scaling)
        return _certify("y", want, bound, got)

    def layer(W, seed=0):
        rng = np.random.default_rng(seed)
        r = min(4, W.shape[0], W.shape[1] // group_size)
        A = rng.standard_normal((r, W.shape[1] // group_size)).astype(np.float32)
        B = rng.standard_normal((W.shape[0], r)).astype(np.float32)
        return rng.standard_normal((2, W.shape[1])).astype(np.float32), W, A, B, 2.0

    def storable(W) -> bool:  # float16 checkpoint scales: the weight's group scales must fit float16
        s = quantize_groupwise(W, bits, group_size, "gptq-asym").scales.astype(np.float16)
        return bool(np.all(np.isfinite(s) & (s > 0)))

    _run(
        f"check_qalora_forward({bits} bits, group {group_size}, pooling {pooling})",
        compare,
        ((name, layer(W)) for name, W in groupwise_cases(group_size) if storable(W)),
        group_weights(group_size, bits).filter(storable).map(layer),
        max_examples,
        _row_shrink(lambda d: d),
    )
