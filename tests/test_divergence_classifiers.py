"""The classifiers that explain bitsandbytes' CUDA divergences (the bnb-cuda-* and flush-to-zero entries
of known-divergences), pinned on the minimal examples recorded on CUDA (docs/data/validate_gpu_h200.txt):
each explains its example, and none explains a wrong code."""

import numpy as np

import qref
from qref.conformance import divergences as d

F32 = np.float32


def packed(x, bs, qt):
    return qref.quantize_4bit(x, bs, qt)[0].reshape(-1)


def classify(x, bs, qt, theirs, their_absmax):
    ours = packed(x, bs, qt)
    idx = np.flatnonzero(ours != theirs)
    return d.kernel_4bit_codes(
        ours, theirs, idx, x32=x, blocksize=bs, quant_type=qt, their_absmax=np.asarray(their_absmax, F32)
    )


def block(bs, **vals):
    x = np.zeros(bs, F32)
    for k, v in vals.items():
        x[int(k[1:])] = F32(v)
    return x


def test_21_zero_block():
    x = np.zeros(32, F32)
    assert "absmax stored as 0" in classify(x, 32, "nf4", np.zeros(16, np.uint8), [0.0]).detail
    assert d.unfloored_zero_absmax(np.array([F32(1e-38)]), np.array([F32(0)]), np.array([0]))


def test_22_flush_to_zero():
    assert d.flush_to_zero(np.array([F32(5.445375767443023e-40)]), np.array([F32(0)]), np.array([0]))
    assert d.flush_to_zero(np.array([F32(1.2e-38)]), np.array([F32(0)]), np.array([0])) is None  # normal


def test_23_reciprocal_flushed():
    x = block(32, e0=-1.8603206601914785e38, e15=-3.3867488454780105e38)
    theirs = np.full(16, 0x77, np.uint8)
    assert packed(x, 32, "nf4")[0] == 39  # 0x27, as the run recorded
    assert "1/absmax is subnormal" in classify(x, 32, "nf4", theirs, [3.3867488454780105e38]).detail


def test_24_tie_at_nf4_midpoint_goes_up():
    x = block(32, e0=1.0, e12=0.5016634464263916)
    ours = packed(x, 32, "nf4")
    assert ours[6] == 199  # codes 12, 7: the tie goes to the lower code in the reference
    theirs = ours.copy()
    theirs[6] = 215  # codes 13, 7: CUDA
    assert "midpoint" in classify(x, 32, "nf4", theirs, [1.0]).detail
    wrong = ours.copy()
    wrong[6] = 0xE7  # code 14: two steps away, not a midpoint effect
    assert classify(x, 32, "nf4", wrong, [1.0]) is None


def test_25_fp4_negative_zero_code():
    x = block(32, e26=-0.006644716951996088, e30=-2.96620774269104)
    ours = packed(x, 32, "fp4")
    assert ours[13] == 0
    theirs = ours.copy()
    theirs[13] = 128
    assert "code 8 (-0)" in classify(x, 32, "fp4", theirs, [2.96620774269104]).detail
    assert classify(x, 32, "nf4", theirs, [2.96620774269104]) is None  # NF4 has one zero code


def test_peft_q1_value_at_midpoint():
    """PEFT's one differing value of Q_1 (normal 256x512): x / absmax within 2 ulp of an NF4 midpoint."""
    x = np.zeros(64, F32)
    x[0], x[5] = F32(1.0), F32(0.5016634464263916)
    ours = qref.dequantize_4bit(*qref.quantize_4bit(x, 64, "nf4"))
    theirs = ours.copy()
    theirs[5] = qref.get_codebook("nf4").values[13]
    assert d.nf4_value_at_midpoint(ours, theirs, np.array([5]), x32=x, blocksize=64)
    theirs[5] = qref.get_codebook("nf4").values[14]
    assert d.nf4_value_at_midpoint(ours, theirs, np.array([5]), x32=x, blocksize=64) is None


def test_divergence_data_links_every_classifier_test_and_doc():
    """divergences.json is the one list: each classifier is named by exactly one entry and returns
    that entry's id, each entry's test exists, and docs/known-divergences.md is generated from it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    entries = d.data()["divergences"]
    named = [e["classifier"] for e in entries if e["classifier"]]
    assert sorted(named) == sorted(d.CLASSIFIERS) and len(set(named)) == len(named)
    by_classifier = {e["classifier"]: e["id"] for e in entries if e["classifier"]}
    source = (root / "conformance" / "divergences.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name in d.CLASSIFIERS:
            ids = {
                c.args[0].value
                for c in ast.walk(node)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Divergence"
            }
            assert ids == {by_classifier[node.name]}, node.name
    for e in entries:
        path, _, name = e["test"].partition("::")
        assert name and f"def {name}(" in (root / path).read_text(), e["test"]
        assert e["library"] and e["versions"] and e["devices"] and e["op"] and e["decision"] and e["text"]
    assert (root / "docs" / "known-divergences.md").read_text() == d.markdown(), (
        "regenerate: python -m qref.conformance.divergences > docs/known-divergences.md"
    )


def test_unknown_id_is_refused():
    import pytest

    with pytest.raises(KeyError):
        d.Divergence("no-such-divergence")
