"""Nibble packing and the bfloat16 conversions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qref
from qref.dtypes import BFloat16Array, bf16_bits_to_float32, float32_to_bf16_bits
from qref.packing import as_storage, from_storage


def test_first_element_in_high_nibble_and_pad():
    assert list(qref.pack_nibbles(np.array([1, 2, 3], np.uint8))) == [0x12, 0x30]
    assert list(qref.pack_nibbles(np.array([1, 2, 3], np.uint8), pad_code=7)) == [0x12, 0x37]


@given(hnp.arrays(np.uint8, st.integers(1, 999), elements=st.integers(0, 15)))
def test_pack_unpack_roundtrip(codes):
    packed = qref.pack_nibbles(codes)
    assert packed.size == (codes.size + 1) // 2
    assert np.array_equal(qref.unpack_nibbles(packed, codes.size), codes)


def test_odd_length_pad_is_code_of_zero():
    _, state = qref.quantize_4bit(np.ones(3, np.float32), 64, "nf4")
    packed, _ = qref.quantize_4bit(np.ones(3, np.float32), 64, "nf4")
    assert packed.ravel()[-1] & 0x0F == 7  # NF4's zero code
    packed, _ = qref.quantize_4bit(np.ones(3, np.float32), 64, "fp4")
    assert packed.ravel()[-1] & 0x0F == 0  # FP4's +0.0


@pytest.mark.parametrize("storage", ["uint8", "float16", "bfloat16", "float32", "int32", "int64"])
def test_storage_views_round_trip(storage):
    x = np.random.default_rng(2).standard_normal(64).astype(np.float32)
    packed, state = qref.quantize_4bit(x, 64, "nf4", quant_storage=storage)
    base, _ = qref.quantize_4bit(x, 64, "nf4")
    assert packed.shape[1] == 1
    assert np.array_equal(from_storage(packed), base.ravel())
    assert np.array_equal(qref.dequantize_4bit(packed, state), qref.dequantize_4bit(base, state))


def test_storage_that_does_not_divide_is_rejected():
    with pytest.raises(ValueError, match="whole float32"):
        as_storage(np.zeros(6, np.uint8), "float32")
    with pytest.raises(ValueError, match="quant_storage"):
        as_storage(np.zeros(8, np.uint8), "complex64")


def test_pack_errors():
    with pytest.raises(ValueError, match="< 16"):
        qref.pack_nibbles(np.array([16], np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        qref.pack_nibbles(np.array([1], np.int64))
    with pytest.raises(ValueError, match="ceil"):
        qref.unpack_nibbles(np.zeros(3, np.uint8), 3)


def test_bf16_round_to_nearest_even_and_nan():
    x = np.array([1.0, 1.00390625, 1.01171875, -0.0, np.inf, np.nan, -np.nan, 3.0e38], np.float32)
    bits = float32_to_bf16_bits(x)
    # 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-8 is a tie -> up to 1 + 2^-6
    assert list(bits[:5]) == [0x3F80, 0x3F80, 0x3F82, 0x8000, 0x7F80]
    assert bits[5] == 0x7FC0 and bits[6] == 0xFFC0
    assert np.isfinite(bf16_bits_to_float32(bits[7:]))[0]


@given(hnp.arrays(np.uint16, st.integers(1, 200)))
def test_bf16_widening_is_exact(bits):
    wide = bf16_bits_to_float32(bits)
    finite = np.isfinite(wide)
    assert np.array_equal(float32_to_bf16_bits(wide)[finite], bits[finite])


def test_bf16_against_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal(10000).astype(np.float32) * 1e3
    t = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(float32_to_bf16_bits(x), t)


def test_bfloat16_array_checks_dtype():
    with pytest.raises(TypeError, match="uint16"):
        BFloat16Array(np.zeros(3, np.int16))
