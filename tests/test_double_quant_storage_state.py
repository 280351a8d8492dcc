"""Double quantization, the storage calculator and QuantState serialisation."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qref
from qref.double_quant import mean_offset
from qref.storage import QLORA_NF4, QLORA_NF4_DQ, StorageConfig, bits_per_parameter, storage_bytes

absmaxes = hnp.arrays(np.float32, st.integers(1, 1500), elements=st.floats(0, 1e4, width=32))


@given(absmaxes)
def test_offset_is_correctly_rounded_exact_mean(a):
    exact = sum(Fraction(float(v)) for v in a) / a.size
    off = mean_offset(a)
    # float64(exact sum)/n rounded to float32: within half an ulp of float32 plus the float64 step
    assert abs(Fraction(float(off)) - exact) <= Fraction(float(np.spacing(off))) / 2 + Fraction(2**-40) * abs(exact)


@given(absmaxes)
def test_double_dequantize_inverts_the_stored_state_exactly(a):
    dq = qref.double_quantize(a)
    code = dq.codebook.values
    expected = (code[dq.qabsmax] * np.repeat(dq.absmax2, 256)[: a.size]).astype(np.float32) + dq.offset
    assert np.array_equal(qref.double_dequantize(dq), expected.astype(np.float32))


@given(absmaxes)
def test_double_quantization_error_bound(a):
    dq = qref.double_quantize(a)
    gaps = np.diff(np.sort(dq.codebook.values.astype(np.float64))).max() / 2
    bound = gaps * np.repeat(dq.absmax2.astype(np.float64), 256)[: a.size] + 4 * np.spacing(np.float32(a.max() + 1))
    assert np.all(np.abs(qref.double_dequantize(dq) - a.astype(np.float64)) <= bound)


def test_offset_override_and_errors():
    a = np.array([1.0, 2.0, 4.0], np.float32)
    assert qref.double_quantize(a, offset=2.5).offset == np.float32(2.5)
    with pytest.raises(ValueError, match="offset"):
        qref.double_quantize(a, offset=np.inf)
    with pytest.raises(TypeError, match="absmax"):
        qref.double_quantize(a.astype(np.float64))


def test_qlora_double_quantization_figure():
    # QLoRA Sec. 3: DQ reduces 32/64 = 0.5 bits per parameter to 8/64 + 32/(64*256) = 0.127.
    assert bits_per_parameter(QLORA_NF4) - 4 == Fraction(1, 2)
    overhead = bits_per_parameter(QLORA_NF4_DQ) - 4
    assert overhead == Fraction(8, 64) + Fraction(32, 64 * 256)
    assert round(float(overhead), 3) == 0.127
    assert round(float(bits_per_parameter(QLORA_NF4) - bits_per_parameter(QLORA_NF4_DQ)), 3) == 0.373


def test_exact_storage_bytes():
    n = 4096 * 4096
    assert storage_bytes(n, QLORA_NF4) == n // 2 + 4 * n // 64
    assert storage_bytes(n, QLORA_NF4_DQ) == n // 2 + n // 64 + 4 * (n // 64 // 256) + 4
    assert storage_bytes(3, QLORA_NF4) == 2 + 4  # odd count: one pad nibble
    assert storage_bytes(n, QLORA_NF4, include_tables=True) == n // 2 + 4 * n // 64 + 64
    with pytest.raises(ValueError, match="blocksize"):
        StorageConfig(blocksize=0)


@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_quant_state_dict_round_trip(dq, packed):
    x = np.random.default_rng(4).standard_normal((33, 70)).astype(np.float16)
    p, state = qref.quantize_4bit(x, 128, "fp4", compress_statistics=dq)
    d = state.as_dict(packed=packed)
    back = qref.QuantState.from_dict({f"model.layer.weight.{k}": v for k, v in d.items()})
    assert back == state
    assert np.array_equal(qref.dequantize_4bit(p, back), qref.dequantize_4bit(p, state))


def test_quant_state_dict_errors():
    _, state = qref.quantize_4bit(np.ones(64, np.float32))
    d = state.as_dict()
    del d["blocksize"]
    with pytest.raises(ValueError, match="blocksize"):
        qref.QuantState.from_dict(d)
    with pytest.raises(TypeError, match="QuantState"):
        qref.dequantize_4bit(np.zeros(32, np.uint8), d)
