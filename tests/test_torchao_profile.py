"""torchao's NF4Tensor against its profile (qref.profiles.torchao_nf4) and against bitsandbytes' default.

Bit-exact against the real torchao (skipped when it is not installed): every field of to_nf4, and
dequantization in both directions, on hypothesis' hard inputs. Pinned divergences from
bitsandbytes (docs/known-divergences.md, 15-19) each assert their exact form.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import qref
from qref.conformance import strategies as qs
from qref.conformance.check_torchao import check_torchao
from qref.conformance.report import as_bits, values
from qref.packing import unpack_nibbles
from qref.profiles import torchao_nf4 as tao

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def ta():
    from qref.conformance.peers import torchao

    ok, why = torchao.available()
    if not ok:
        pytest.skip(why)
    return torchao


def same(a, b) -> bool:
    """Bitwise equal, except that two NaNs match whatever their payload (IEEE leaves it open)."""
    a_bits, b_bits = as_bits(a), as_bits(b)
    both_nan = np.isnan(values(a).ravel()) & np.isnan(values(b).ravel())
    return a_bits.shape == b_bits.shape and bool(np.all((a_bits == b_bits) | both_nan))


@settings(deadline=None)
@given(qs.whole_block_inputs())
def test_profile_is_bit_exact_on_hard_inputs(ta, case):
    x, sbs = case
    theirs = ta.to_nf4(x, 64, sbs)
    ours = tao.to_nf4(x, 64, sbs, scaler_mean=theirs.scaler_mean)
    for field in ("quantized_data", "quantized_scalers", "quantization_factor"):
        assert same(getattr(ours, field), getattr(theirs, field)), field
    assert same(tao.dequantize(theirs), ta.dequantize(theirs))  # their bytes, our dequantizer
    assert same(ta.dequantize(ours), tao.dequantize(ours))  # our bytes, their dequantizer


@settings(deadline=None)
@given(qs.whole_block_inputs())
def test_mean_is_exact_in_16_bit_formats(ta, case):
    """The only free choice is the mean's summation order, and it vanishes after rounding to 16 bits,
    unless torch's float32 sum overflows (bfloat16 absmax near 3.4e38): then theirs is inf (divergence 18)."""
    x, sbs = case
    if qref.dtypes.format_of(x) == "float32":
        return
    ours, theirs = tao.to_nf4(x, 64, sbs).scaler_mean, ta.to_nf4(x, 64, sbs).scaler_mean
    overflowed = np.isinf(values(theirs)).all() and np.isfinite(values(ours)).all()
    assert same(ours, theirs) or overflowed


def test_report_has_no_unexplained_divergence(ta):
    rows = check_torchao(quick=False)
    assert all(r.mismatches == 0 for r in rows), [(r.op, r.config, r.first) for r in rows if r.mismatches]
    field_rows = [r for r in rows if r.op.startswith(("to_nf4 quantized", "to_nf4 quantization", "dequantize"))]
    assert all(r.exact == r.cases > 0 for r in field_rows)
    codes = {r.config.split(",")[0]: r for r in rows if r.op == "codes vs bitsandbytes"}
    assert all(r.explained > 0 for r in codes.values())  # the rules differ visibly in every format
    assert any("0/0" in k for k in codes["float32"].examples)


def test_divergence_table_rounded_to_4_decimals():
    """15: torchao's table is the 4-decimal rounding; in float32 -0.6962 vs bitsandbytes' -0.6961928."""
    assert tao.table("float32")[1] == np.float32(-0.6962)
    assert qref.get_codebook("nf4").values[1] == np.float32(-0.6961928009986877)
    assert tao.table("bfloat16")[1] == np.float32(-0.6953125)


def test_divergence_minimal_block_float32(ta):
    """The report's minimal float32 example: absmax -2.5013921 and 0.3007981 (scaled -0.1202517, nearer
    bitsandbytes' 0.0 than its 0.0795802 midpoint partner... ): bitsandbytes code 8, torchao 9."""
    x = np.zeros(64, np.float32)
    x[0], x[27] = np.float32(-2.501392126083374), np.float32(0.30079811811447144)
    b = unpack_nibbles(qref.quantize_4bit(x, 64, "nf4")[0].reshape(-1), 64)
    t = unpack_nibbles(ta.to_nf4(x, 64, 1).quantized_data, 64)
    assert (b[27], t[27]) == (8, 9)
    assert unpack_nibbles(tao.to_nf4(x, 64, 1).quantized_data, 64)[27] == 9


def test_divergence_zero_block_takes_code_0(ta):
    """17: an all-zero block scales 0/0 = NaN; the argmin of NaNs is index 0 (-1.0), dequantized as
    -1.0 * restored scaler; bitsandbytes floors the absmax at 1e-38 and takes the zero code 7."""
    x = np.random.default_rng(0).standard_normal(64 * 4).astype(np.float32)
    x[64:128] = 0
    t = unpack_nibbles(ta.to_nf4(x, 64, 4).quantized_data, x.size)
    assert np.all(t[64:128] == 0)
    assert np.all(unpack_nibbles(qref.quantize_4bit(x, 64, "nf4")[0].reshape(-1), x.size)[64:128] == 7)


def test_divergence_constant_scalers_give_infinite_factor(ta):
    """19: when every block has the same absmax, centred scalers are 0, the factor 256/(2*0) = inf, 0*inf
    = NaN converts to int8 0; the restored scaler is the mean (exact). The profile states q = 0."""
    x = np.tile(np.array([0.5, -0.25], np.float32), 64 * 128)
    theirs = ta.to_nf4(x)
    assert np.isinf(theirs.quantization_factor).all() and not theirs.quantized_scalers.any()
    assert same(tao.to_nf4(x).quantization_factor, theirs.quantization_factor)
    assert same(tao.dequantize(theirs), ta.dequantize(theirs))


def test_divergence_float32_mean_summation_order(ta):
    """18: torch's float32 mean of the scalers (its summation order) vs the exactly rounded mean: 1 ulp here."""
    x = np.random.default_rng(7).standard_normal((128, 128)).astype(np.float32)
    theirs, ours = ta.to_nf4(x).scaler_mean, tao.to_nf4(x).scaler_mean
    ulps = abs(int(np.float32(theirs).view(np.int32)) - int(np.float32(ours).view(np.int32)))
    assert ulps == 1


def test_profile_refuses_what_torchao_refuses():
    x = np.zeros(64 * 3, np.float32)
    with pytest.raises(ValueError, match="scaler_block_size"):
        tao.to_nf4(x, 64, 2)
    with pytest.raises(ValueError, match="block_size"):
        tao.to_nf4(np.zeros(100, np.float32), 64, 1)
    with pytest.raises(ValueError, match="at most 2"):
        tao.to_nf4(np.zeros((2, 2, 64), np.float32), 64, 1)
    with pytest.raises(ValueError, match="non-finite"):
        tao.to_nf4(np.full(64, np.nan, np.float32), 64, 1)
