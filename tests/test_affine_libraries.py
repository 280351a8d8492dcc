"""compressed-tensors, HQQ, optimum-quanto and torchao's int4 path against their profiles
(qref.profiles.*), and each divergence from qref's group-wise profiles pinned on its minimal example,
against the real library where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from qref.conformance import divergences as d
from qref.conformance.check_affine import LIBRARIES, available, check_library
from qref.groupwise import quantize_groupwise
from qref.profiles import compressed_tensors as ct
from qref.profiles import hqq
from qref.profiles import quanto as qo
from qref.profiles import torchao_int4 as ti4
from qref.profiles.planar import pack_planes, unpack_planes

F32 = np.float32


def need(name):
    ok, why = available(name)
    if not ok:
        pytest.skip(why)
    from qref.conformance.check_affine import _peer

    return _peer(LIBRARIES[name])


def group_row(*values, g=32):
    """One row of one group: the given values, then zeros up to g."""
    w = np.zeros((1, g), F32)
    w[0, : len(values)] = values
    return w


def devices():
    try:
        import torch

        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    except ImportError:
        return ["cpu"]


@pytest.mark.peer
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_library_matches_its_profile(name, device):
    need(name)
    rows = check_library(name, quick=True, device=device)
    assert rows and all(r.cases for r in rows)
    assert sum(r.mismatches for r in rows) == 0, [(r.op, r.config, r.first) for r in rows if r.mismatches]
    own = [r for r in rows if " vs qref " not in r.op]  # the library vs its own profile: exact, or (torchao's
    # 8-bit codes stored two per byte on CUDA) its one named storage loss
    assert sum(r.exact + r.explained for r in own) == sum(r.cases for r in own)
    named = {i for r in own for i in r.class_ids.values()}
    assert named <= ({"torchao-int4-byte-overflow"} if (name, device) == ("torchao-int4", "cuda") else set())


@pytest.mark.peer
def test_a_changed_profile_constant_is_caught(monkeypatch):
    """The comparison can fail: HQQ's near-constant threshold moved from 1e-4 to 1e-2 is reported."""
    need("hqq")
    monkeypatch.setattr(hqq, "NEAR_CONSTANT", F32(1e-2))
    rows = check_library("hqq", quick=True)
    assert sum(r.mismatches for r in rows) > 0


def test_planar_packing_layouts():
    """HQQ: first rows high; quanto: first rows low, rows padded; 3-bit HQQ: ten planes in int32."""
    v = np.arange(8, dtype=np.uint8).reshape(4, 2) % 4
    assert pack_planes(v, 4, 8, first_high=True).tolist() == [[0 << 4 | 0, 1 << 4 | 1], [2 << 4 | 2, 3 << 4 | 3]]
    assert pack_planes(v, 4, 8, first_high=False).tolist() == [[0 | 0 << 4, 1 | 1 << 4], [2 | 2 << 4, 3 | 3 << 4]]
    odd = np.array([[1], [2], [3]], np.uint8)
    assert pack_planes(odd, 2, 8, first_high=False, pad=True).tolist() == [[1 | 2 << 2 | 3 << 4]]
    with pytest.raises(ValueError, match="planes"):
        pack_planes(odd, 4, 8, first_high=True)
    three = np.arange(10, dtype=np.uint8).reshape(10, 1) % 8
    word = pack_planes(three, 3, 32, first_high=True, pad=True)
    assert word.dtype == np.int32 and int(word.view(np.uint32)[0, 0]) == sum(
        int(three[p, 0]) << (27 - 3 * p) for p in range(10)
    )
    for bits, word_bits, first_high in ((4, 8, True), (2, 8, False), (3, 32, True), (1, 8, True)):
        x = np.random.default_rng(bits).integers(0, 2**bits, (40, 3)).astype(np.uint8)
        assert np.array_equal(unpack_planes(pack_planes(x, bits, word_bits, first_high), bits, 40, first_high), x)


def test_hqq_odd_group_count_cannot_be_packed_at_4_bits():
    s = hqq.quantize(np.ones((3, 32), F32), 4, 32)
    with pytest.raises(ValueError, match="planes"):
        hqq.pack(s.codes, 4)


def test_ct_pack_round_trip_and_offset():
    codes = np.array([[-8, 7, 0, -1]], np.int8)
    words = ct.pack(codes, 4)
    assert words.dtype == np.int32 and int(words.view(np.uint32)[0, 0]) == 0 | 15 << 4 | 8 << 8 | 7 << 12
    assert np.array_equal(ct.unpack(words, 4, 4), codes)


def test_ct_degenerate_group_vs_gptq():
    w = group_row()
    ours = ct.quantize(w, 4, 32, symmetric=False)
    ref = quantize_groupwise(w, 4, 32, "gptq-asym")
    assert ours.scales[0, 0] == np.finfo(F32).eps and ours.zero_points[0, 0] == 0 and not ours.codes.any()
    assert ref.scales[0, 0] == F32(2) / F32(15) and ref.zeros[0, 0] == 7 and (ref.codes == 7).all()
    assert not ct.dequantize(ours).any()
    signed = (ref.codes.astype(np.int16) - 8).astype(np.int8)
    idx = np.flatnonzero(signed != ours.codes)
    assert (
        d.gptq_degenerate_group(signed, ours.codes, idx, weight=w, group_size=32, bits=4) == "ct-gptq-degenerate-group"
    )
    w2 = group_row(0.5)  # a group with a range is not degenerate
    assert d.gptq_degenerate_group(signed, ours.codes, idx, weight=w2, group_size=32, bits=4) is None


def test_ct_sym_nonnegative_group_vs_gptq():
    w = np.full((1, 32), 0.5, F32)
    ours = ct.quantize(w, 4, 32, symmetric=True)
    ref = quantize_groupwise(w, 4, 32, "gptq-sym")
    assert ours.scales[0, 0] == F32(0.5) / F32(7.5) and (ours.codes == 7).all()
    assert ref.scales[0, 0] == F32(0.5) / F32(15) and (ref.codes == 15).all()
    idx = np.array([0])
    assert (
        d.gptq_sym_nonnegative_group(ref.scales, ours.scales, idx, weight=w, group_size=32)
        == "ct-gptq-sym-nonnegative-group"
    )
    assert d.gptq_sym_nonnegative_group(ref.scales, ours.scales, idx, weight=-w, group_size=32) is None


def test_ct_zero_point_tie_vs_gptq():
    w = group_row(-3.0, 12.0, -2.5)  # scale 15 / 15 = 1, zero point 3 (odd): w / scale = -2.5 is a tie
    ours = ct.quantize(w, 4, 32, symmetric=False)
    ref = quantize_groupwise(w, 4, 32, "gptq-asym")
    assert ref.scales[0, 0] == 1 and ref.zeros[0, 0] == 3 and ref.codes[0, 2] == 1  # round(-2.5) + 3
    assert ours.zero_points[0, 0] == -5 and ours.codes[0, 2] == -8  # round(-2.5 - 5) = round(-7.5)
    signed = (ref.codes.astype(np.int16) - 8).astype(np.int8)
    idx = np.flatnonzero(signed != ours.codes)
    assert idx.tolist() == [2]
    assert d.zero_point_tie(signed, ours.codes, idx, weight=w, group_size=32, bits=4) == "ct-zero-point-tie"
    wrong = ours.codes.copy()
    wrong[0, 2] -= 1  # two steps away is no tie
    assert d.zero_point_tie(signed, wrong, idx, weight=w, group_size=32, bits=4) is None


@pytest.mark.peer
def test_ct_examples_against_the_library():
    peer = need("compressed-tensors")
    for w, sym in ((group_row(), False), (np.full((1, 32), 0.5, F32), True), (group_row(-3.0, 12.0, -2.5), False)):
        theirs = peer.run(w, 4, 32, sym)
        ours = ct.quantize(w, 4, 32, sym)
        assert np.array_equal(theirs["codes"], ours.codes) and np.array_equal(theirs["scales"], ours.scales)


def test_quanto_constant_group_vs_minmax():
    w = np.full((1, 32), 0.5, F32)
    ours = qo.quantize(w, 4, 32)
    ref = quantize_groupwise(w, 4, 32, "minmax")
    assert ours.scale[0, 0] == 0 and ours.shift[0, 0] == -0.5 and not ours.codes.any()
    assert ref.scales[0, 0] == 1 and ref.zeros[0, 0] == 0.5 and not ref.codes.any()
    assert (qo.dequantize(ours) == 0.5).all()
    idx = np.array([0])
    assert d.minmax_constant_group_scale(ref.scales.reshape(-1, 1), ours.scale, idx, weight=w, group_size=32) == (
        "quanto-constant-group-scale"
    )
    w2 = group_row(0.5)
    assert d.minmax_constant_group_scale(ref.scales.reshape(-1, 1), ours.scale, idx, weight=w2, group_size=32) is None


@pytest.mark.peer
def test_quanto_example_against_the_library():
    peer = need("optimum-quanto")
    theirs = peer.run(np.full((1, 32), 0.5, F32), 4, 32)
    assert theirs["scale"][0, 0] == 0 and not theirs["codes"].any() and (theirs["dequantized"] == 0.5).all()


def test_torchao_int4_scale_floor_vs_minmax():
    w = group_row(*np.linspace(0, 1e-40, 32, dtype=F32))
    ours = ti4.quantize(w, 4, 32, "float32")
    ref = quantize_groupwise(w, 4, 32, "minmax")
    assert ours.scales[0, 0] == F32(1e-6) and (ours.codes == 0).all()
    assert ref.scales[0, 0] < F32(1e-40) and ref.codes.max() == 15
    idx = np.flatnonzero(ref.codes != ours.codes)
    assert (
        d.scale_floor_group(ref.codes, ours.codes, idx, weight=w, group_size=32, bits=4) == "torchao-int4-scale-floor"
    )
    w2 = group_row(0.0, 1.0)
    assert d.scale_floor_group(ref.codes, ours.codes, idx, weight=w2, group_size=32, bits=4) is None


@pytest.mark.peer
def test_torchao_int4_example_against_the_library():
    peer = need("torchao-int4")
    w = group_row(*np.linspace(0, 1e-40, 32, dtype=F32))
    theirs = peer.run(w, 4, 32, "float32")
    assert theirs["scales"][0, 0] == F32(1e-6) and (theirs["codes"] == 0).all()


def test_torchao_int4_byte_overflow():
    codes = np.array([[200, 17]], np.int32)
    assert ti4.pack_uint8(codes).tolist() == [[145]]
    assert ti4.unpack_uint8(ti4.pack_uint8(codes)).tolist() == [[9, 1]]
    w = np.random.default_rng(0).standard_normal((2, 32)).astype(F32)
    state = ti4.quantize(w, 8, 32, "float32")
    lossy = ti4.unpack_uint8(ti4.pack_uint8(state.codes))
    idx = np.flatnonzero(lossy != state.codes)
    assert idx.size and d.torchao_int4_pack_overflow(state.codes, lossy, idx, ours_state={"_state": state}) == (
        "torchao-int4-byte-overflow"
    )
    four = ti4.quantize(w, 4, 32, "float32")
    assert np.array_equal(ti4.unpack_uint8(ti4.pack_uint8(four.codes)), four.codes)  # lossless at 4 bits
    assert d.torchao_int4_pack_overflow(four.codes, four.codes, idx, ours_state={"_state": four}) is None


@pytest.mark.peer
def test_torchao_int4_byte_overflow_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    peer = need("torchao-int4")
    w = np.random.default_rng(0).standard_normal((2, 32)).astype(F32)
    theirs = peer.run(w, 8, 32, "float32", device="cuda")
    state = ti4.quantize(w, 8, 32, "float32")
    assert np.array_equal(theirs["packed"], ti4.pack_uint8(state.codes))
    assert np.array_equal(theirs["codes"], ti4.unpack_uint8(ti4.pack_uint8(state.codes)))


def test_the_command_line_names_every_library():
    from qref.cli import LIBRARIES, VALIDATE_LIBRARIES
    from qref.conformance.check import PEERS
    from qref.conformance.validate import _libraries

    assert set(LIBRARIES) == set(PEERS)
    assert set(VALIDATE_LIBRARIES) == set(_libraries())


def test_pytorch_cuda_divides_by_a_number_through_its_reciprocal():
    from qref.profiles import divide_by_number

    a = np.array([0.1, 1.0, 3.0], F32)
    assert np.array_equal(divide_by_number(a, 15), a / F32(15))
    assert np.array_equal(divide_by_number(a, 15, "cuda"), a * (F32(1) / F32(15)))
    x = np.random.default_rng(0).standard_normal(1000).astype(F32)
    assert np.count_nonzero(divide_by_number(x, 15) != divide_by_number(x, 15, "cuda")) > 100  # not a no-op
    with pytest.raises(ValueError, match="device"):
        divide_by_number(a, 15, "tpu")
