"""Golden tests against the real bitsandbytes on the CPU (skipped when it is not installed).

Bit-exact: packed bytes, absmax, dequantized values, double-quantization codes and absmax2 for a
given offset, the serialised QuantState. Pinned divergences (docs/known-divergences.md): each test
below asserts the exact form of one difference, so a change in bitsandbytes shows up here.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qref
from qref.blockwise import block_absmax, scale_blocks
from qref.conformance import strategies as qs
from qref.conformance.battery import as_format
from qref.conformance.check import check_bitsandbytes
from qref.dtypes import bitwise_equal

pytestmark = pytest.mark.peer


def test_battery_every_block_size_format_and_edge_case(bnb):
    """The `qref check` battery: all 8 block sizes x NF4/FP4 x fp32/fp16/bf16, tails, odd lengths,
    zero blocks, midpoints +-1 ulp, reciprocal-vs-division cases, subnormal and huge values."""
    rows = check_bitsandbytes()
    assert rows and all(r.mismatches == 0 for r in rows), [r for r in rows if r.mismatches]
    exact_ops = {
        "quantize_4bit packed",
        "quantize_4bit absmax",
        "dq codes [default kernel]",
        "dq absmax2 [default kernel]",
    }
    for r in rows:
        if r.op in exact_ops:
            assert r.exact == r.cases > 0, r
        if r.op.startswith("dequantize") and r.config.startswith("nf4"):
            assert r.exact == r.cases, r


@pytest.mark.parametrize("fmt", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
def test_large_random_tensor_bytes_identical(bnb, fmt, qt):
    x = as_format(np.random.default_rng(7).standard_normal((512, 1000)).astype(np.float32), fmt)
    packed, state = qref.quantize_4bit(x, 64, qt)
    t_packed, t_state = bnb.quantize_4bit(x, 64, qt)
    assert np.array_equal(packed.ravel(), t_packed)
    assert np.array_equal(state.absmax.view(np.uint32), bnb.from_torch(t_state.absmax).view(np.uint32))
    ours = qref.dequantize_4bit(packed, state)
    theirs = bnb.dequantize_4bit(t_packed, t_state)
    if qt == "nf4":
        assert bitwise_equal(ours, theirs)


def test_quant_state_packed_dict_is_byte_identical(bnb):
    x = np.random.default_rng(8).standard_normal((64, 96)).astype(np.float32)
    _, state = qref.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    _, t_state = bnb.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    same = qref.double_quantize(qref.quantize_4bit(x, 64, "nf4")[1].absmax, offset=t_state.offset.item())
    state = qref.QuantState("nf4", same.qabsmax, 64, state.code, "float32", (64, 96), same)
    ours, theirs = state.as_dict(packed=True), bnb.state_dict(t_state)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert np.array_equal(ours[k], theirs[k]), k  # the JSON item too, byte for byte
    assert qref.QuantState.from_dict(theirs) == state


def test_divergence_cpu_8bit_search_is_not_round_to_nearest(bnb):
    """bitsandbytes' C blockwise 8-bit kernel (used on the CPU for double quantization) misses the
    nearest code for ~0.15% of normal values; its PyTorch kernel and qref agree exactly."""
    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    code = qref.get_codebook("dynamic")
    ours, absmax = qref.quantize_blockwise(x, code, 256)
    c_codes, c_absmax = bnb.cpu_quantize_blockwise(x, code.values, 256)
    d_codes, d_absmax = bnb.default_quantize_blockwise(x, code.values, 256)
    assert np.array_equal(ours, d_codes) and np.array_equal(absmax, d_absmax) and np.array_equal(absmax, c_absmax)
    wrong = np.flatnonzero(ours != c_codes)
    assert 500 < wrong.size < 5000
    s = scale_blocks(x, absmax, 256)[wrong].astype(np.float64)
    table = code.values.astype(np.float64)
    assert np.all(np.abs(s - table[c_codes[wrong]]) > np.abs(s - table[ours[wrong]]))


def test_divergence_offset_is_torch_float32_mean(bnb):
    x = np.random.default_rng(9).standard_normal((1024, 1024)).astype(np.float32)
    _, state = qref.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    _, t_state = bnb.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    ulps = abs(int(state.nested.offset.view(np.int32)) - int(np.float32(t_state.offset.item()).view(np.int32)))
    assert ulps <= 8


def test_divergence_fp4_code_8_dequantizes_to_negative_zero_on_cpu(bnb):
    """FP4 code 8 is -0 in bitsandbytes' table. Its CPU dequantize gives -0.0 on some builds and CPUs
    (the signed-zero divergence) and +0.0 on others; anything else is a new divergence."""
    packed = qref.pack_nibbles(np.array([8, 0] * 16, np.uint8))
    state = qref.QuantState("fp4", np.ones(1, np.float32), 32, qref.get_codebook("fp4").values, "float32", (32,))
    theirs = bnb.dequantize_4bit(packed, bnb.state_from_qref(state))
    ours = qref.dequantize_4bit(packed, state)
    assert np.all(ours == 0) and not np.signbit(ours).any()
    assert np.all(theirs == 0) and not np.signbit(theirs[1::2]).any()
    assert np.signbit(theirs[0::2]).all() or not np.signbit(theirs).any()


def test_divergence_nan_and_inf_are_silently_propagated_by_bitsandbytes(bnb):
    x = np.random.default_rng(1).standard_normal(128).astype(np.float32)
    x[5] = np.nan
    t_packed, t_state = bnb.quantize_4bit(x, 64, "nf4")
    absmax = bnb.from_torch(t_state.absmax)
    assert np.isnan(absmax[0]) and np.isfinite(absmax[1]) and np.all(t_packed[:32] == 0xFF)
    with pytest.raises(ValueError, match="non-finite"):
        qref.quantize_4bit(x, 64, "nf4")


def test_divergence_double_quant_mean_overflows(bnb):
    x = np.full(4096, np.finfo(np.float32).max / 2, np.float32)
    _, t_state = bnb.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    assert not np.isfinite(t_state.offset.item())
    _, state = qref.quantize_4bit(x, 64, "nf4", compress_statistics=True)
    assert np.array_equal(state.absmax_float32(), block_absmax(x, 64))


@st.composite
def _fourbit_case(draw):
    qt, bs = draw(st.sampled_from(("nf4", "fp4"))), draw(st.sampled_from((32, 64, 128)))
    return draw(qs.hard_inputs(qt, bs)), qt, bs


@settings(deadline=None)
@given(_fourbit_case())
def test_hard_inputs_both_directions(bnb, case):
    """The conformance strategies' hard inputs through bitsandbytes (CPU) and the reference: bytes and
    absmax bit for bit; their bytes dequantized by qref and qref's by them, up to the sign of zero (6)."""
    from qref.conformance import divergences
    from qref.conformance.peers import bitsandbytes as b
    from qref.conformance.report import Row

    x, qt, bs = case
    packed, state = qref.quantize_4bit(x, bs, qt)
    t_packed, t_state = b.quantize_4bit(x, bs, qt)
    row = Row("4bit", qt)
    row.add("packed", packed.reshape(-1), t_packed)
    row.add("absmax", state.absmax, b.from_torch(t_state.absmax))
    view = qref.QuantState.from_dict(b.state_dict(t_state))
    row.add(
        "theirs by both",
        qref.dequantize_4bit(t_packed, view),
        b.dequantize_4bit(t_packed, t_state),
        classifiers=[divergences.signed_zero],
    )
    row.add(
        "ours by them",
        qref.dequantize_4bit(packed, state),
        b.dequantize_4bit(packed.reshape(-1), b.state_from_qref(state)),
        classifiers=[divergences.signed_zero],
    )
    assert row.mismatches == 0, row.first
