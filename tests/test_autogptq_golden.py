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


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_v1_zero_point_0_for_the_reader_that_wraps_it(ag, bits):
    """A v1 zero point of 0 written for qlinear_cuda_old is read back exactly by AutoGPTQ's own forward;
    qlinear_cuda reads the same field as 2^bits, and the default writer refuses it."""
    from qref.gptq_pack import from_gptq, to_gptq
    from qref.groupwise import GroupQuant, dequantize_groupwise

    rng = np.random.default_rng(bits)
    d_out, d_in, g = 32, 64, 32
    codes = rng.integers(0, 2**bits, (d_out, d_in)).astype(np.uint8)
    zeros = rng.integers(0, 2**bits, (d_out, d_in // g)).astype(np.float32)
    zeros[0, 0] = zeros[5, 1] = 0
    scales = rng.uniform(0.01, 0.1, (d_out, d_in // g)).astype(np.float16).astype(np.float32)
    gq = GroupQuant(codes, scales, zeros, bits, g, "gptq-asym")
    want = dequantize_groupwise(gq)
    with pytest.raises(ValueError, match="auto-gptq-cuda-old"):
        to_gptq(gq, "v1")
    tensors = to_gptq(gq, "v1", reader="auto-gptq-cuda-old")
    assert np.array_equal(from_gptq(tensors, bits, g, "v1", reader="auto-gptq-cuda-old").zeros, zeros)
    theirs = ag.dequantize(tensors, bits, g, "qlinear_cuda_old")
    np.testing.assert_allclose(theirs, want, rtol=0, atol=1e-6)
    other = ag.dequantize(tensors, bits, g, "qlinear_cuda")
    read_as = from_gptq(tensors, bits, g, "v1")  # qref's model of the plain reader: z = s + 1
    assert read_as.zeros[0, 0] == 2**bits
    per_column = np.repeat(read_as.zeros, g, axis=1), np.repeat(scales, g, axis=1)
    np.testing.assert_allclose(other, per_column[1] * (codes - per_column[0]), atol=1e-6)
    assert not np.allclose(other, want)
