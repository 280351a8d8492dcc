"""Codebooks: golden values from QLoRA/bitsandbytes, construction properties, bit-exact tables."""

import numpy as np
import pytest

from qref import codebooks as cb
from qref.codebooks import Codebook, get_codebook

# bitsandbytes 0.50.2 functional.get_4bit_type("nf4") and the QLoRA paper's Appendix E listing.
NF4_GOLDEN = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]
FP4_GOLDEN_TIMES_12 = [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3]


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def test_nf4_equals_bitsandbytes_table_bit_for_bit():
    assert np.array_equal(bits(get_codebook("nf4").values), bits(NF4_GOLDEN))


def test_nf4_structure():
    v = get_codebook("nf4").values
    assert v.size == 16 and v[0] == -1.0 and v[-1] == 1.0 and v[7] == 0.0
    assert np.all(np.diff(v) > 0)
    assert (v > 0).sum() == 8 and (v < 0).sum() == 7  # the extra positive value of QLoRA's NF4


def test_nf4_offset_is_qlora_delta():
    assert cb.NF4_OFFSET == pytest.approx(1 - 0.5 * (1 / 30 + 1 / 32), abs=1e-7)


def test_nf4_symmetric_variant_is_symmetric():
    v = get_codebook("nf4-symmetric").values
    assert v.size == 15 and np.array_equal(v, -v[::-1]) and v[7] == 0.0


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_nfk_has_2_to_the_k_sorted_values_with_exact_zero(k):
    v = cb.normal_map(k, cb.nf_offset(k))
    assert v.size == 2**k and v.dtype == np.float32
    assert np.all(np.diff(v) > 0) and v[0] == -1.0 and v[-1] == 1.0 and 0.0 in v
    # the quantile construction: interior positive values are normal quantiles up to scale
    assert (v > 0).sum() == 2 ** (k - 1)


def test_nf_offsets_decrease_toward_one_with_bits():
    assert cb.nf_offset(2) < cb.nf_offset(3) < cb.nf_offset(8) < 1.0


def test_fp4_table_in_index_order():
    v = get_codebook("fp4").values
    assert np.array_equal(bits(v), bits(np.array(FP4_GOLDEN_TIMES_12, np.float32) / np.float32(12)))
    assert bits(v)[8] == 0  # +0.0, not -0.0


def test_fp4_search_maps_back_to_index_order():
    c = get_codebook("fp4")
    assert np.array_equal(c.nearest(c.values), np.where(np.arange(16) == 8, 0, np.arange(16)))


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_int_grids(k):
    sym = cb.int_values(k)
    assert sym.size == 2**k - 1 and np.array_equal(sym, -sym[::-1]) and 0.0 in sym
    asym = cb.int_values(k, symmetric=False)
    assert asym.size == 2**k and asym[0] == -1 and asym[-1] == 1
    assert np.allclose(np.diff(asym), 2 / (2**k - 1))


def test_dynamic_map_structure():
    d = get_codebook("dynamic").values
    assert d.size == 256 and np.all(np.diff(d) >= 0) and d[-1] == 1.0 and d.min() > -1.0
    u = get_codebook("dynamic-unsigned").values
    assert u.size == 256 and u.min() == 0.0 and u[-1] == 1.0


def test_linspace_f32_matches_known_torch_values():
    # torch.linspace(0.1, 1, 9) in float32; the fused second half differs from numpy's linspace.
    got = cb.linspace_f32(0.1, 1.0, 9)
    assert got[-1] == np.float32(1.0) and got[0] == np.float32(0.1)
    assert got.dtype == np.float32 and np.all(np.diff(got) > 0)


def test_linspace_f32_equals_torch_everywhere():
    torch = pytest.importorskip("torch")
    for start, stop in [(0.1, 1.0), (cb.NF4_OFFSET, 0.5), (-3.0, 7.5)]:
        for n in range(2, 400):
            t = torch.linspace(start, stop, n, dtype=torch.float32).numpy()
            assert np.array_equal(bits(t), bits(cb.linspace_f32(start, stop, n))), (start, stop, n)


def test_codebook_validation():
    with pytest.raises(ValueError, match="2..256"):
        Codebook("x", np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="finite"):
        Codebook("x", np.array([0, np.nan], np.float32))
    with pytest.raises(ValueError, match="unknown codebook"):
        get_codebook("nf5")


def test_ties_go_to_lower_code():
    c = get_codebook("nf4")
    assert np.array_equal(c.nearest(c.midpoints), np.arange(15))
    above = np.nextafter(c.midpoints, np.float32(2))
    assert np.array_equal(c.nearest(above), np.arange(1, 16))
