"""qref.testing: the function-level checks pass a correct kernel and catch wrong ones with a small input."""

import numpy as np
import pytest

from qref import quantize_4bit
from qref.blockwise import dequantize_blockwise
from qref.codebooks import get_codebook
from qref.packing import unpack_nibbles
from qref.testing import check_dequantize_4bit, check_quantize_4bit

pytest.importorskip("hypothesis")


def good_quantize(x):
    packed, state = quantize_4bit(x, 64, "nf4")
    return packed, state.absmax


def good_dequantize(packed, absmax, shape):
    n = int(np.prod(shape))
    return dequantize_blockwise(unpack_nibbles(packed, n), absmax, get_codebook("nf4"), 64).reshape(shape)


def test_a_correct_kernel_passes():
    check_quantize_4bit(good_quantize, max_examples=30)
    check_dequantize_4bit(good_dequantize, max_examples=30)


def test_ties_rounded_the_other_way_are_caught_with_the_failing_block():
    cb = get_codebook("nf4")

    def ties_up(x):
        packed, absmax = good_quantize(x)
        flat = x.reshape(-1).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = flat / np.repeat(absmax, 64)[: flat.size]
        codes = unpack_nibbles(packed, flat.size).astype(np.uint8)
        on_mid = np.isin(scaled, cb.midpoints)
        codes[on_mid] = np.minimum(codes[on_mid] + 1, 15)  # a midpoint goes up instead of the reference's way
        from qref.packing import pack_nibbles

        return pack_nibbles(codes, pad_code=7), absmax

    with pytest.raises(AssertionError) as e:
        check_quantize_4bit(ties_up, max_examples=30)
    msg = str(e.value)
    assert "midpoints" in msg and "packed" in msg and "first at flat index" in msg
    assert "smallest failing input found: array(" in msg


def test_a_dequantizer_that_swaps_nibbles_is_caught_by_hypothesis_or_battery():
    def swapped(packed, absmax, shape):
        p = np.asarray(packed)
        return good_dequantize(((p & 0x0F) << 4) | (p >> 4), absmax, shape)

    with pytest.raises(AssertionError) as e:
        check_dequantize_4bit(swapped, max_examples=30)
    assert "dequantized" in str(e.value) and "smallest failing input" in str(e.value)


def test_torch_arrays_are_passed_when_asked():
    torch = pytest.importorskip("torch")
    seen = []

    def f(packed, absmax, shape):
        seen.append(isinstance(packed, torch.Tensor) and isinstance(absmax, torch.Tensor))
        return torch.from_numpy(good_dequantize(packed.numpy(), absmax.numpy(), shape))

    check_dequantize_4bit(f, max_examples=5, array="torch")
    assert seen and all(seen)


def test_groupwise_passes_the_reference_and_catches_a_zero_point_rounded_down():
    from qref.groupwise import quantize_groupwise
    from qref.testing import check_groupwise

    def good(W):
        gq = quantize_groupwise(W, 4, 32, "gptq-asym")
        return gq.codes, gq.scales, gq.zeros

    check_groupwise(good, max_examples=30)

    def floor_zero(W):  # zero = floor(-min / scale) instead of round
        codes, scales, zeros = good(W)
        xmin = np.minimum(W.reshape(W.shape[0], -1, 32).min(axis=2), 0)
        return codes, scales, np.floor(-xmin / scales).astype(np.float32)

    with pytest.raises(AssertionError) as e:
        check_groupwise(floor_zero, max_examples=30)
    msg = str(e.value)
    assert "zeros" in msg and "smallest failing input" in msg


def test_a_known_divergence_can_be_allowed_and_only_it():
    def flushing(packed, absmax, shape):
        out = good_dequantize(packed, absmax, shape)
        return np.where(np.abs(out) < np.finfo(np.float32).tiny, np.float32(0), out).astype(np.float32)

    with pytest.raises(AssertionError, match="subnormal"):
        check_dequantize_4bit(flushing, max_examples=30)
    check_dequantize_4bit(flushing, max_examples=30, allow=("flush-to-zero",))

    def flushing_and_off(packed, absmax, shape):
        out = flushing(packed, absmax, shape)
        out[-1] += np.float32(1)
        return out

    with pytest.raises(AssertionError, match="differ"):
        check_dequantize_4bit(flushing_and_off, max_examples=30, allow=("flush-to-zero",))
    with pytest.raises(ValueError, match="known divergence"):
        check_dequantize_4bit(flushing, max_examples=5, allow=("no-such-divergence",))
