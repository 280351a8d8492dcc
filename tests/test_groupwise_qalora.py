"""QA-LoRA: group-wise quantization, pooled adapter, exact merge (rational arithmetic), float64 bound."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import qalora
from qref.groupwise import GROUPWISE_PROFILES, dequantize_groupwise, quantize_groupwise

U64 = 2.0**-53


@st.composite
def weights(draw, max_rows=12, max_groups=6):
    g = draw(st.sampled_from([1, 2, 4, 8, 32]))
    rows, groups = draw(st.integers(1, max_rows)), draw(st.integers(1, max_groups))
    elements = st.one_of(st.floats(-4, 4, width=32), st.just(0.0))
    return draw(hnp.arrays(np.float32, (rows, groups * g), elements=elements)), g


@given(weights(), st.sampled_from([2, 3, 4, 8]), st.sampled_from(GROUPWISE_PROFILES))
def test_codes_in_range_and_error_within_half_scale(wg, bits, profile):
    W, g = wg
    gq = quantize_groupwise(W, bits, g, profile)
    assert gq.codes.max() <= 2**bits - 1 and gq.codes.dtype == np.uint8
    err = np.abs(dequantize_groupwise(gq) - W.astype(np.float64))
    half = np.repeat(gq.scales.astype(np.float64), g, axis=1) / 2
    if profile == "gptq-sym":  # the grid is z-2^(k-1) .. z+2^(k-1)-1 steps: the top clips (next tests)
        top = np.repeat((gq.scales * (2**bits - 1 - gq.zeros)).astype(np.float64), g, axis=1)
        has_negative = np.repeat((W.reshape(W.shape[0], -1, g) < 0).any(axis=2), g, axis=1)
        reachable = has_negative & (W <= top)
        err, half = err[reachable], half[reachable]
    # the float32 roundings of scale and of w / scale add up to 2^(k+1) * 2^-24 steps
    assert np.all(err <= half * (1 + 2 ** (bits + 2) * 2.0**-24) + 1e-30)


def test_gptq_asym_decision_points_by_hand():
    # range forced to include 0: all-positive group [1, 2, 3, 4] at 2 bits -> xmin 0, scale 4/3
    gq = quantize_groupwise(np.array([[1, 2, 3, 4]], np.float32), 2, 4)
    assert gq.zeros[0, 0] == 0 and gq.scales[0, 0] == np.float32(4) / np.float32(3)
    assert list(gq.codes[0]) == [1, 2, 2, 3]  # 0.75 -> 1, 1.5 -> 2 (half to even), 2.25 -> 2, 3
    # all-zero group -> [-1, 1]: 4-bit scale f32(2/15); zero = round(f32(1 / scale)) = round(7.4999995)
    # = 7 in float32 (not round(7.5) = 8 as exact arithmetic would give)
    gq = quantize_groupwise(np.zeros((1, 4), np.float32), 4, 4)
    assert gq.scales[0, 0] == np.float32(2) / np.float32(15) and gq.zeros[0, 0] == 7
    assert np.all(dequantize_groupwise(gq) == 0)


def test_all_zero_group_zero_point_matches_torch_float32():
    torch = pytest.importorskip("torch")
    for bits in (2, 3, 4, 8):
        scale = (torch.tensor(1.0) - torch.tensor(-1.0)) / (2**bits - 1)
        expected = torch.round(torch.tensor(1.0) / scale).item()
        assert quantize_groupwise(np.zeros((1, 8), np.float32), bits, 8).zeros[0, 0] == expected


def test_gptq_sym_clips_groups_without_negative_values():
    # AutoGPTQ's sym rule keeps xmin = 0 for such a group: scale = xmax / maxq but zero = 2^(k-1),
    # so codes above the middle are unreachable and values above xmax/2 clip.
    gq = quantize_groupwise(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32), 2, 4, "gptq-sym")
    assert gq.zeros[0, 0] == 2 and gq.scales[0, 0] == np.float32(1) / np.float32(3)
    assert np.allclose(dequantize_groupwise(gq), [[0, 1 / 3, 1 / 3, 1 / 3]])
    # with negative values the grid is zero-centred but has one more negative step: +xmax clips one step
    gq = quantize_groupwise(np.array([[-1.0, 1.0]], np.float32), 2, 2, "gptq-sym")
    # scale 2/3, zero 2: -1 -> round(-1.5) + 2 = 0 -> -4/3; +1 -> round(1.5) + 2 = 4 -> clipped to 3 -> 2/3
    assert np.allclose(dequantize_groupwise(gq), [[-4 / 3, 2 / 3]])


def test_gptq_sym_and_minmax_by_hand():
    gq = quantize_groupwise(np.array([[-1, 0.5, 0.25, 1]], np.float32), 4, 4, "gptq-sym")
    assert gq.zeros[0, 0] == 8 and gq.scales[0, 0] == np.float32(2) / np.float32(15)
    gq = quantize_groupwise(np.array([[2, 3, 5, 2]], np.float32), 2, 4, "minmax")
    assert gq.zeros[0, 0] == 2 and gq.scales[0, 0] == 1 and list(gq.codes[0]) == [0, 1, 3, 0]
    gq = quantize_groupwise(np.full((1, 4), 7, np.float32), 2, 4, "minmax")  # constant group
    assert np.all(dequantize_groupwise(gq) == 7)


def random_fraction_array(rng, shape, den):
    return np.array([Fraction(int(v), den) for v in rng.integers(-20, 20, int(np.prod(shape)))], dtype=object).reshape(
        shape
    )


@pytest.mark.parametrize("pooling", qalora.POOLING)
@pytest.mark.parametrize("profile", GROUPWISE_PROFILES)
@pytest.mark.parametrize("seed", range(4))
def test_merged_equals_unmerged_exactly_in_rational_arithmetic(pooling, profile, seed):
    rng = np.random.default_rng(seed)
    d_out, g, groups, r = 5, 4, 3, 2
    gq = quantize_groupwise(rng.standard_normal((d_out, g * groups)).astype(np.float32), 3, g, profile)
    A, B = random_fraction_array(rng, (r, groups), 7), random_fraction_array(rng, (d_out, r), 3)
    x = random_fraction_array(rng, (4, g * groups), 5)
    merged = qalora.merge(gq, A, B, Fraction(16), pooling, zeros_dtype="exact")
    assert np.array_equal(merged.codes, gq.codes)  # codes untouched
    unmerged = qalora.forward(x, gq, A, B, Fraction(16), pooling)
    assert np.all(qalora.merged_forward(x, merged) == unmerged)
    assert unmerged.dtype == object and isinstance(unmerged[0, 0], Fraction)


def float64_bound(x, gq, merged, A, B, alpha, pooling):
    """|y_merged - y_unmerged| <= (D_in + 8) u sum_i |x_i| (|W~| + |dW| + |W~'| terms), u = 2^-53."""
    shift = np.abs(qalora.zero_shift(gq, A, B, alpha, pooling))
    s = np.repeat(gq.scales.astype(np.float64), gq.group_size, axis=1)
    q = gq.codes.astype(np.float64)
    z = np.repeat(np.abs(merged.zeros.astype(np.float64)), gq.group_size, axis=1)
    magnitude = s * (q + z) + s * np.repeat(shift, gq.group_size, axis=1) + np.abs(dequantize_groupwise(gq))
    return (x.shape[1] + 8) * U64 * (np.abs(x) @ magnitude.T)


@pytest.mark.parametrize("pooling", qalora.POOLING)
def test_merged_equals_unmerged_to_rounding_in_float64(pooling):
    rng = np.random.default_rng(11)
    d_out, d_in, g, r = 256, 1024, 32, 16
    gq = quantize_groupwise((rng.standard_normal((d_out, d_in)) * 0.02).astype(np.float32), 4, g)
    A, B = rng.standard_normal((r, d_in // g)), rng.standard_normal((d_out, r)) * 0.01
    x = rng.standard_normal((16, d_in))
    merged = qalora.merge(gq, A, B, 16.0, pooling)
    diff = np.abs(qalora.merged_forward(x, merged) - qalora.forward(x, gq, A, B, 16.0, pooling))
    bound = float64_bound(x, gq, merged, A, B, 16.0, pooling)
    assert np.all(diff <= bound)
    assert diff.max() > 0  # the bound is being exercised, not trivially met by identical paths


def test_fp16_zeros_lose_the_adapter_and_need_consent():
    rng = np.random.default_rng(12)
    gq = quantize_groupwise((rng.standard_normal((128, 512)) * 0.02).astype(np.float32), 4, 32)
    A, B = rng.standard_normal((8, 16)), rng.standard_normal((128, 8)) * 1e-3
    x = rng.standard_normal((8, 512))
    with pytest.raises(ValueError, match="lossy_ok"):
        qalora.merge(gq, A, B, 16.0, zeros_dtype="float16")
    adapter = qalora.forward(x, gq, A, B, 16.0) - x @ dequantize_groupwise(gq).T
    errors = {}
    for dt in ("float64", "float32", "float16"):
        merged = qalora.merge(gq, A, B, 16.0, zeros_dtype=dt, lossy_ok=True)
        y = qalora.merged_forward(x, merged)
        errors[dt] = np.abs(y - qalora.forward(x, gq, A, B, 16.0)).max() / np.abs(adapter).max()
    assert errors["float64"] < 1e-12 < errors["float32"] < 1e-4 < errors["float16"]


def test_qalora_merge_beats_merge_then_requantize():
    rng = np.random.default_rng(13)
    gq = quantize_groupwise((rng.standard_normal((128, 512)) * 0.02).astype(np.float32), 2, 32)
    A, B = rng.standard_normal((8, 16)), rng.standard_normal((128, 8)) * 0.01
    target = dequantize_groupwise(qalora.merge(gq, A, B, 16.0))
    ptq = dequantize_groupwise(qalora.merge_dense_then_quantize(gq, A, B, 16.0))
    assert (
        np.abs(ptq - target).max()
        > 1e3 * np.abs(target - dequantize_groupwise(qalora.merge(gq, A, B, 16.0, zeros_dtype="float32"))).max()
    )


def test_pooling_factors():
    x = np.arange(8, dtype=np.float64)[None]
    assert np.array_equal(qalora.pool(x, 4, "sum"), [[6, 22]])
    assert np.array_equal(qalora.pool(x, 4, "average"), [[1.5, 5.5]])
    assert np.array_equal(qalora.pool(x, 4, "peft"), [[3, 11]])  # G/g = 2/4


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(W=np.ones((4, 30), np.float32), group_size=32), ValueError, "not divisible"),
        (dict(W=np.ones((4, 32), np.float32), bits=5), ValueError, "bits"),
        (dict(W=np.ones(32, np.float32)), ValueError, "2-D"),
        (dict(W=np.full((2, 32), np.nan, np.float32)), ValueError, "non-finite"),
        (dict(W=np.ones((2, 32), np.float32), profile="awq"), ValueError, "profile"),
    ],
)
def test_quantize_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        quantize_groupwise(**kwargs)


def test_adapter_bad_input():
    gq = quantize_groupwise(np.ones((8, 64), np.float32), 4, 32)  # G = 2
    good_A, good_B = np.ones((2, 2)), np.ones((8, 2))
    for A, B, match in [
        (np.ones((0, 2)), np.ones((8, 0)), "rank"),
        (np.ones((3, 2)), np.ones((8, 3)), "rank"),
        (np.ones((2, 3)), good_B, "A must have shape"),
        (good_A, np.ones((7, 2)), "B must have shape"),
        (np.array([[np.nan, 1], [1, 1]]), good_B, "non-finite"),
    ]:
        with pytest.raises(ValueError, match=match):
            qalora.merge(gq, A, B, 16.0)
    with pytest.raises(ValueError, match="zeros_dtype"):
        qalora.merge(gq, good_A, good_B, 16.0, zeros_dtype="int8")
