"""Golden tests against AutoGPTQ 0.7.1's own quantizer and packer (skipped when it is not installed)."""

import numpy as np
import pytest

from qref.gptq_pack import to_gptq
from qref.groupwise import dequantize_groupwise, quantize_groupwise

pytestmark = pytest.mark.peer


def weights(seed):
    W = (np.random.default_rng(seed).standard_normal((64, 256)) * 0.02).astype(np.float32)
    W[:, :32] = 0  # an all-zero group in every row
    W[:8, 32:64] = np.abs(W[:8, 32:64])  # groups with no negative value
    W[8:16, 64:96] = -np.abs(W[8:16, 64:96])  # groups with no positive value
    return W


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_codes_scales_zeros_identical(ag, bits, sym):
    W = weights(bits)
    codes, scales, zeros = ag.quantize_rtn(W, bits, 32, sym)
    gq = quantize_groupwise(W, bits, 32, "gptq-sym" if sym else "gptq-asym")
    assert np.array_equal(codes, gq.codes)
    assert np.array_equal(scales.view(np.uint32), gq.scales.view(np.uint32))
    assert np.array_equal(zeros, gq.zeros)


@pytest.mark.parametrize("weight_dtype", ["float32", "float16"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_identical(ag, bits, weight_dtype):
    ok, why = ag.available(need_pack=True)
    if not ok:
        pytest.skip(why)
    W = (np.random.default_rng(bits).standard_normal((64, 256)) * 0.02).astype(np.float32)
    gq = quantize_groupwise(W, bits, 32)
    theirs = ag.pack(dequantize_groupwise(gq).astype(np.float32), gq.scales, gq.zeros, bits, 32, weight_dtype)
    ours = to_gptq(gq, "v1", scales_dtype=weight_dtype)
    for key in ("qweight", "qzeros", "scales", "g_idx"):
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key


def test_divergence_autogptq_truncates_qzeros_when_d_out_bits_not_a_multiple_of_32(ag):
    ok, why = ag.available(need_pack=True)
    if not ok:
        pytest.skip(why)
    W = (np.random.default_rng(5).standard_normal((8, 64)) * 0.02).astype(np.float32)  # D_out * 4 = 32 bits
    gq = quantize_groupwise(W, 2, 32)  # D_out * 2 = 16 bits: less than one word
    theirs = ag.pack(dequantize_groupwise(gq).astype(np.float32), gq.scales, gq.zeros, 2, 32)
    assert theirs["qzeros"].shape == (2, 0)  # every zero point silently dropped
    assert to_gptq(gq, "v1")["qzeros"].shape == (2, 1)  # qref pads the last word


def test_divergence_autogptq_divides_by_a_zero_scale(ag):
    W = np.full((4, 32), 1e-45, np.float32)  # range below 3 * 1.4e-45: float32 scale underflows
    codes, scales, zeros = ag.quantize_rtn(W, 2, 32)
    assert np.all(scales == 0) and np.all(np.isnan(zeros))
    gq = quantize_groupwise(W, 2, 32)
    assert np.all(gq.scales > 0) and np.all(dequantize_groupwise(gq) == 0)
