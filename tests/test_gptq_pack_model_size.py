"""GPTQ packing (hand-worked vectors from the format, round trips) and the model-size calculator."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import qalora
from qref.gptq_pack import from_gptq, pack_bits, to_gptq, unpack_bits
from qref.groupwise import quantize_groupwise
from qref.model_size import LLAMA, Assumptions, fp16_bytes, qalora_bytes, size_table


def as_u32(words):
    return [int(w) for w in np.asarray(words).view(np.uint32).ravel()]


def test_hand_worked_words():
    assert as_u32(pack_bits(np.arange(1, 9), 4)) == [0x87654321]
    assert as_u32(pack_bits(np.array([1] + [0] * 14 + [3]), 2)) == [0xC0000001]
    assert as_u32(pack_bits(np.array([0x11, 0x22, 0x33, 0x44]), 8)) == [0x44332211]
    v = np.zeros(32, int)
    v[10], v[21] = 7, 5  # the two 3-bit values that straddle words
    assert as_u32(pack_bits(v, 3)) == [0xC0000000, 0x80000001, 0x2]


@given(st.sampled_from([2, 3, 4, 8]), st.integers(1, 100), st.integers(1, 5), st.data())
def test_pack_unpack_round_trip_any_length(bits, n, cols, data):
    values = data.draw(hnp.arrays(np.int64, (n, cols), elements=st.integers(0, 2**bits - 1)))
    words = pack_bits(values, bits)
    assert words.dtype == np.int32 and words.shape == (-(-n * bits // 32), cols)
    assert np.array_equal(unpack_bits(words, bits, n), values)


def test_v1_zero_minus_one_and_v2():
    gq = quantize_groupwise(np.zeros((8, 64), np.float32), 4, 32)  # zero point 7 everywhere
    v1, v2 = to_gptq(gq, "v1"), to_gptq(gq, "v2")
    assert as_u32(v1["qzeros"]) == [0x66666666] * 2 and as_u32(v2["qzeros"]) == [0x77777777] * 2
    assert v1["qweight"].shape == (8, 8) and v1["scales"].dtype == np.float16
    assert np.array_equal(v1["g_idx"], np.repeat([0, 1], 32))
    for fmt, t in (("v1", v1), ("v2", v2)):
        back = from_gptq(t, 4, 32, fmt)
        assert np.array_equal(back.codes, gq.codes) and np.array_equal(back.zeros, gq.zeros)


def test_v1_cannot_store_zero_point_zero():
    gq = quantize_groupwise(np.abs(np.random.default_rng(0).standard_normal((8, 32))).astype(np.float32), 4, 32)
    assert (gq.zeros == 0).all()  # all-positive groups: xmin = 0 -> zero point 0
    with pytest.raises(ValueError, match="v2"):
        to_gptq(gq, "v1")
    assert np.array_equal(from_gptq(to_gptq(gq, "v2"), 4, 32, "v2").codes, gq.codes)


def test_merged_float_zeros_round_trip():
    rng = np.random.default_rng(1)
    gq = quantize_groupwise(rng.standard_normal((16, 64)).astype(np.float32), 3, 32)
    merged = qalora.merge(gq, rng.standard_normal((2, 2)), rng.standard_normal((16, 2)), 16.0, zeros_dtype="float32")
    t = to_gptq(merged)
    assert "qzeros" not in t and t["qzeros_float"].dtype == np.float32 and t["qzeros_float"].shape == (2, 16)
    back = from_gptq(t, 3, 32)
    assert np.array_equal(back.zeros, merged.zeros) and np.array_equal(back.codes, gq.codes)


def test_act_order_g_idx_is_refused():
    gq = quantize_groupwise(np.ones((8, 64), np.float32), 4, 32)
    t = to_gptq(gq, "v2")
    t["g_idx"] = t["g_idx"][::-1].copy()
    with pytest.raises(ValueError, match="act-order"):
        from_gptq(t, 4, 32, "v2")


def test_llama_parameter_counts():
    # the LLaMA paper reports 6.7B, 13.0B, 32.5B, 65.2B; the released shapes give 65.29B for the last
    counts = {k: m.params() / 1e9 for k, m in LLAMA.items()}
    assert [round(counts[k], 1) for k in ("7B", "13B", "33B", "65B")] == [6.7, 13.0, 32.5, 65.3]


def test_size_table_matches_arithmetic_under_stated_assumptions():
    # shared/research/qalora.md orientation figures: GB = 1e9 B, embeddings/head/norms fp16, no g_idx
    a = Assumptions(g_idx=False)
    rows = {r["model"]: r for r in size_table(a=a)}
    assert [round(rows[f"LLaMA-{k}"]["fp16"], 1) for k in ("7B", "13B", "33B", "65B")] == [13.5, 26.0, 65.1, 130.6]
    assert [round(rows[f"LLaMA-{k}"]["qalora4"], 2) for k in ("7B", "13B", "33B", "65B")] == [4.27, 7.99, 19.41, 38.49]
    assert [round(rows[f"LLaMA-{k}"]["qalora4-merged"], 2) for k in ("7B", "13B", "33B", "65B")] == [
        4.57,
        8.59,
        20.92,
        41.53,
    ]
    # every cell is monotone in bits and merged > unmerged (float zeros are wider than packed ones)
    for r in rows.values():
        assert r["qalora2"] < r["qalora3"] < r["qalora4"] < r["qlora"] * 1.1 < r["fp16"]
        assert all(r[f"qalora{k}-merged"] > r[f"qalora{k}"] for k in (2, 3, 4))


def test_fp16_is_two_bytes_per_parameter():
    for m in LLAMA.values():
        assert fp16_bytes(m) == 2 * m.params()
    assert qalora_bytes(LLAMA["7B"], 4, 32, a=Assumptions(g_idx=True)) > qalora_bytes(
        LLAMA["7B"], 4, 32, a=Assumptions(g_idx=False)
    )
