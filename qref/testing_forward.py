"""qref.testing's forward checks: a 4-bit linear layer and QA-LoRA's unmerged forward, held to the
certified bounds of qref.linear (docs/linear.md, docs/testing.md)."""

from __future__ import annotations

import numpy as np

from .dtypes import FLOAT_FORMATS, BFloat16Array, as_float32, round_to
from .fourbit import quantize_4bit
from .testing_core import ARRAYS, _back, _check_layout, _float32_battery, _run, _to, _to_format
from .validation import one_of


def _certify(what: str, want: np.ndarray, bound: np.ndarray, got) -> str | None:
    """None when got is within the certified bound of want everywhere, else the first element beyond."""
    from .linear import check_linear

    got = as_float32(got).astype(np.float64) if isinstance(got, BFloat16Array) else np.asarray(got, np.float64)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, expected {want.shape}"
    within, i, worst = check_linear(got, want, bound)
    if within:
        return None
    return (
        f"{what}: beyond the certified bound (largest |diff| / bound = {worst:.3g}); first at flat index {i}: "
        f"expected {want.ravel()[i]!r} +- {bound.ravel()[i]:.3g}, got {got.ravel()[i]!r}"
    )


def _row_shrink(data, compare):
    """For a failing (x, ...) case: the first row of x that fails alone."""
    x = data[0]
    for r in range(x.shape[0]):
        small = (x[r : r + 1].copy(), *data[1:])
        if compare(small) is not None:
            return small
    return data


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
        return _certify("y", want, bound, _back(got))

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
        _row_shrink,
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
    from .groupwise import GROUPWISE_BITS, check_state, quantize_groupwise
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
        return _certify("y", want, bound, _back(got))

    def layer(W, seed=0):
        rng = np.random.default_rng(seed)
        r = min(4, W.shape[0], W.shape[1] // group_size)
        A = rng.standard_normal((r, W.shape[1] // group_size)).astype(np.float32)
        B = rng.standard_normal((W.shape[0], r)).astype(np.float32)
        return rng.standard_normal((2, W.shape[1])).astype(np.float32), W, A, B, 2.0

    def storable(W) -> bool:  # a v2 checkpoint holds the weight (its group scales fit float16)
        try:
            tensors = to_gptq(quantize_groupwise(W, bits, group_size, "gptq-asym"), "v2")
            check_state(from_gptq(tensors, bits, group_size, "v2"))  # a float16 scale flushed to 0 is refused
        except ValueError:
            return False
        return True

    _run(
        f"check_qalora_forward({bits} bits, group {group_size}, pooling {pooling})",
        compare,
        ((name, layer(W)) for name, W in groupwise_cases(group_size) if storable(W)),
        group_weights(group_size, bits).filter(storable).map(layer),
        max_examples,
        _row_shrink,
    )
