"""qref.interop: torch tensors and bitsandbytes' QuantState, both ways, bit for bit."""

import numpy as np
import pytest

from qref import BFloat16Array, dequantize_4bit, quantize_4bit
from qref.interop import from_bnb, to_bnb, to_numpy, to_torch

torch = pytest.importorskip("torch")


def test_every_bfloat16_pattern_survives_both_ways():
    bits = np.arange(1 << 16, dtype=np.uint16)
    t = to_torch(BFloat16Array(bits))
    assert t.dtype == torch.bfloat16
    back = to_numpy(t)
    assert isinstance(back, BFloat16Array) and np.array_equal(back.bits, bits)  # NaN payloads too
    finite = ~np.isnan(BFloat16Array(bits).to_float32())
    assert np.array_equal(t.float().numpy()[finite], BFloat16Array(bits).to_float32()[finite])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8])
def test_other_dtypes_round_trip_and_are_owned(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    t = to_torch(a)
    a[0, 0] = 7  # the tensor does not alias the array
    assert t[0, 0].item() == 0
    back = to_numpy(t)
    t[0, 1] = 9  # nor the array the tensor
    assert back.dtype == dtype and back[0, 1] == 1


def test_wrong_types_are_named():
    with pytest.raises(TypeError, match="t must be"):
        to_numpy(np.zeros(2))
    with pytest.raises(TypeError, match="a must be"):
        to_torch([1.0])
    with pytest.raises(TypeError, match="qs must be"):
        from_bnb({})
    with pytest.raises(TypeError, match="state must be"):
        to_bnb({})


def assert_same_or_signed_zero(ours, theirs):
    """Bit for bit, except the known divergence "signed-zero": bitsandbytes' CPU kernel returns FP4
    code 8 (-0) as +0.0 on some CPUs (its vectorised paths differ)."""
    from qref.conformance.divergences import signed_zero

    idx = np.flatnonzero(ours.view(np.uint32) != theirs.view(np.uint32))
    assert idx.size == 0 or signed_zero(ours, theirs, idx) == "signed-zero"


@pytest.mark.peer
@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_bitsandbytes_quant_state_both_ways(double, quant_type):
    F = pytest.importorskip("bitsandbytes.functional")
    x = torch.randn(96, 64, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    packed, qs = F.quantize_4bit(x, blocksize=64, quant_type=quant_type, compress_statistics=double)
    state = from_bnb(qs)
    assert state.dtype == "bfloat16" and state.shape == (96, 64) and (state.nested is not None) == double
    # bitsandbytes' own bytes, read by qref, dequantize exactly as bitsandbytes does
    ours = dequantize_4bit(to_numpy(packed), state, "float32")
    qs32 = F.QuantState.from_dict(qs.as_dict(packed=True), torch.device("cpu"))
    qs32.dtype = torch.float32  # compare in float32, before the rounding to bfloat16
    theirs = F.dequantize_4bit(packed, qs32).numpy()
    assert_same_or_signed_zero(ours, theirs)
    # and a qref state given to bitsandbytes dequantizes to qref's values
    p2, s2 = quantize_4bit(to_numpy(x), 64, quant_type, compress_statistics=double)
    back = to_bnb(s2)
    back.dtype = torch.float32
    assert_same_or_signed_zero(dequantize_4bit(p2, s2, "float32"), F.dequantize_4bit(to_torch(p2), back).numpy())
    assert from_bnb(to_bnb(s2)) == s2
