"""Blockwise absmax quantization: error bounds, idempotence, metamorphic relations, decision points."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import qref
from qref.blockwise import ABSMAX_FLOOR, block_absmax, scale_blocks
from qref.conformance.battery import reciprocal_vs_division
from qref.conformance.strategies import blocksizes, float_arrays, quant_types
from qref.dtypes import BFloat16Array


def widen(x):
    return x.to_float32() if isinstance(x, BFloat16Array) else x.astype(np.float32)


def half_gap(quant_type):
    v = np.sort(qref.get_codebook(quant_type).values.astype(np.float64))
    return np.diff(v).max() / 2


@given(float_arrays(), blocksizes, quant_types)
def test_error_within_half_gap_times_absmax(x, bs, qt):
    packed, state = qref.quantize_4bit(x, bs, qt)
    x32 = widen(x).ravel().astype(np.float64)
    err = np.abs(qref.dequantize_4bit(packed, state, out_dtype="float32").ravel() - x32)
    per_block = np.repeat(state.absmax.astype(np.float64), bs)[: x32.size]
    bound = half_gap(qt) * per_block * (1 + 2**-20) + np.finfo(np.float32).smallest_subnormal
    # Below the 1e-38 floor the block is scaled by 1e-38 instead of its absmax: error up to absmax.
    bound = np.where(per_block < ABSMAX_FLOOR, per_block + bound, bound)
    assert np.all(err <= bound)


@given(float_arrays(formats=("float32",)), blocksizes, quant_types)
def test_quantize_is_idempotent_on_its_own_output(x, bs, qt):
    """Q(D(Q(x))) == Q(x) as values (FP4 has two codes for zero, so codes may swap 8 -> 0)."""
    packed, state = qref.quantize_4bit(x, bs, qt)
    once = qref.dequantize_4bit(packed, state)
    again_packed, again = qref.quantize_4bit(once, bs, qt)
    normal = np.repeat(state.absmax >= np.finfo(np.float32).tiny, bs)[: x.size]  # subnormal blocks excepted
    twice = qref.dequantize_4bit(again_packed, again)
    assert np.array_equal(once[normal], twice[normal])
    assert np.array_equal(state.absmax[state.absmax > ABSMAX_FLOOR], again.absmax[state.absmax > ABSMAX_FLOOR])


@given(float_arrays(formats=("float32",)), st.sampled_from([32, 64, 256]), st.sampled_from(["nf4-symmetric", "int4"]))
def test_sign_symmetry_of_symmetric_codebooks_except_exact_midpoints(x, bs, name):
    cb = qref.get_codebook(name)
    codes, absmax = qref.quantize_blockwise(x, cb, bs)
    neg_codes, neg_absmax = qref.quantize_blockwise(-x, cb, bs)
    assert np.array_equal(absmax, neg_absmax)
    scaled = scale_blocks(x.ravel(), absmax, bs)
    off_midpoint = ~np.isin(np.abs(scaled), cb.midpoints)
    v, nv = cb.values[codes.ravel()], cb.values[neg_codes.ravel()]
    assert np.array_equal(v[off_midpoint], -nv[off_midpoint])


@given(float_arrays(formats=("float32",)), blocksizes, quant_types, st.integers(-8, 8))
def test_scaling_by_power_of_two_scales_absmax_and_keeps_codes(x, bs, qt, k):
    x = np.where(np.abs(x) > 2.0**-100, x, 0).astype(np.float32)
    x = np.clip(x, -(2.0**100), 2.0**100).astype(np.float32)  # stay normal after scaling
    p1, s1 = qref.quantize_4bit(x, bs, qt)
    p2, s2 = qref.quantize_4bit((x * np.float32(2.0**k)).astype(np.float32), bs, qt)
    assert np.array_equal(p1, p2)
    normal = s1.absmax > ABSMAX_FLOOR
    assert np.array_equal(s2.absmax[normal], s1.absmax[normal] * np.float32(2.0**k))


def test_zero_block_rule():
    x = np.zeros(64 * 2 + 5, np.float32)
    x[64:128] = np.linspace(-1, 1, 64)
    packed, state = qref.quantize_4bit(x, 64, "nf4")
    assert state.absmax[0] == 0.0 and state.absmax[2] == np.float32(1e-38) and state.absmax[1] == 1.0
    codes = qref.unpack_nibbles(packed.ravel(), x.size)
    assert np.all(codes[:64] == 7) and np.all(codes[128:] == 7)
    assert np.all(qref.dequantize_4bit(packed, state)[:64] == 0)


def test_full_blocks_multiply_by_reciprocal_tail_divides():
    block = reciprocal_vs_division("nf4", 64)
    a = block[0]
    x = np.concatenate([block, block]).astype(np.float32)  # second copy is a tail block of 64
    scaled = scale_blocks(x, block_absmax(x, 128), 128)
    assert np.array_equal(scaled[:64], np.clip(block * (np.float32(1) / a), -1, 1))
    x = np.concatenate([block, block[:63]])  # block 64 full + tail of 63
    scaled = scale_blocks(x, block_absmax(x, 64), 64)
    assert np.array_equal(scaled[:64], np.clip(block * (np.float32(1) / a), -1, 1))
    assert np.array_equal(scaled[64:], np.clip(block[:63] / a, -1, 1))
    assert not np.array_equal(block * (np.float32(1) / a), block / a)  # the rules do differ here


def test_midpoints_tie_to_lower_code_in_quantize():
    cb = qref.get_codebook("nf4")
    x = np.concatenate([[1.0], cb.midpoints]).astype(np.float32)  # absmax 1: scaled == x
    codes, _ = qref.quantize_blockwise(x, cb, 16)
    assert np.array_equal(codes[1:], np.arange(15))


def test_generic_blockwise_roundtrip_with_dynamic_map():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    cb = qref.get_codebook("dynamic")
    codes, absmax = qref.quantize_blockwise(x, cb, 256)
    assert codes.dtype == np.uint8 and absmax.shape == (4,)
    assert np.max(np.abs(qref.dequantize_blockwise(codes, absmax, cb, 256) - x)) < 0.01 * np.abs(x).max()


@pytest.mark.parametrize(
    "x, err, match",
    [
        (np.arange(10), TypeError, "integer"),
        (np.ones(10), TypeError, "float64"),
        (np.ones(10, np.complex64), TypeError, "complex"),
        (np.ones(10, bool), TypeError, "boolean"),
        ([1.0, 2.0], TypeError, "numpy array"),
        (np.ones(0, np.float32), ValueError, "empty"),
        (np.array([1, np.nan], np.float32), ValueError, "non-finite"),
        (np.array([1, np.inf], np.float16), ValueError, "non-finite"),
    ],
)
def test_bad_input_is_named(x, err, match):
    with pytest.raises(err, match=match):
        qref.quantize_4bit(x)
    with pytest.raises(err, match="x"):
        qref.quantize_4bit(x)


@pytest.mark.parametrize("bs", [0, -64, 16, 100, 8192])
def test_4bit_block_sizes_outside_bitsandbytes_set_are_rejected(bs):
    with pytest.raises(ValueError, match="blocksize"):
        qref.quantize_4bit(np.ones(64, np.float32), bs)


def test_blocksize_type_and_quant_type_errors():
    with pytest.raises(TypeError, match="blocksize"):
        qref.quantize_blockwise(np.ones(4, np.float32), qref.get_codebook("nf4"), 2.0)
    with pytest.raises(ValueError, match="blocksize"):
        qref.quantize_blockwise(np.ones(4, np.float32), qref.get_codebook("nf4"), 0)
    with pytest.raises(ValueError, match="quant_type"):
        qref.quantize_4bit(np.ones(4, np.float32), 64, "nf3")


def test_dequantize_validation():
    cb = qref.get_codebook("int4")  # 15 codes: code 15 is out of range
    with pytest.raises(ValueError, match="out of range"):
        qref.dequantize_blockwise(np.array([15], np.uint8), np.ones(1, np.float32), cb, 64)
    with pytest.raises(ValueError, match="absmax"):
        qref.dequantize_blockwise(np.zeros(65, np.uint8), np.ones(1, np.float32), cb, 64)
    with pytest.raises(TypeError, match="absmax"):
        qref.dequantize_blockwise(np.zeros(4, np.uint8), np.ones(1), cb, 64)
    with pytest.raises(ValueError, match="absmax"):
        qref.dequantize_blockwise(np.zeros(4, np.uint8), np.array([np.nan], np.float32), cb, 64)
    with pytest.raises(TypeError, match="codes"):
        qref.dequantize_blockwise(np.zeros(4, np.int8), np.ones(1, np.float32), cb, 64)
    packed, state = qref.quantize_4bit(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="packed"):
        qref.dequantize_4bit(packed[:-1], state)
    with pytest.raises(ValueError, match="out_dtype"):
        qref.dequantize_4bit(packed, state, out_dtype="float64")


def test_output_formats_round_to_nearest_even():
    x = np.random.default_rng(1).standard_normal(300).astype(np.float32)
    packed, state = qref.quantize_4bit(x, 64, "nf4")
    f32 = qref.dequantize_4bit(packed, state, out_dtype="float32")
    assert np.array_equal(qref.dequantize_4bit(packed, state, out_dtype="float16"), f32.astype(np.float16))
    bf = qref.dequantize_4bit(packed, state, out_dtype="bfloat16")
    assert isinstance(bf, BFloat16Array) and bf == BFloat16Array.from_float32(f32)
    assert qref.dequantize_4bit(packed, state).dtype == np.float32  # default: the input's format
