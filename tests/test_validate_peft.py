"""`qref validate` (report and JSON) and the PEFT LoftQ profile and check.

PEFT's loftq_init needs a CUDA device; on the CPU the check is exercised with a stand-in that
re-enacts loftq_init in torch (its own SVD), and a faulty one that the certificates must catch.
"""

import json

import numpy as np
import pytest

from qref.conformance import check_peft, validate
from qref.conformance.peers import peft as peft_peer
from qref.dtypes import cast_float32, format_of
from qref.profiles import peft_loftq as pl

torch = pytest.importorskip("torch")


def reenacted(break_it=None):
    def loftq_init(W, bits, r, iters, device="cuda"):
        w = torch.from_numpy(np.asarray(W.to_float32() if hasattr(W, "to_float32") else W, np.float32).copy())
        res = w.clone()
        for i in range(iters):
            Q = torch.from_numpy(pl.quantize_dequantize(res.numpy()))
            res = w - Q
            U, S, Vh = torch.linalg.svd(res, full_matrices=False)
            L, R = U[:, :r] * S[:r].sqrt(), S[:r].sqrt()[:, None] * Vh[:r]
            if i + 1 == iters:
                break
            res = w - L @ R
        if break_it == "swap":
            L, R = -L, R.flip(0)  # right shapes, wrong pairing of factors
        if break_it == "requantize":
            Q = Q * 1.001
        return cast_float32(Q.numpy(), format_of(W)), R.numpy(), L.numpy()

    return loftq_init


def test_peft_check_passes_a_faithful_reenactment(monkeypatch):
    monkeypatch.setattr(peft_peer, "loftq_init", reenacted())
    rows = check_peft.check_peft(quick=True, device="cpu")
    assert rows and all(r.mismatches == 0 for r in rows), [(r.op, r.first) for r in rows if r.mismatches]
    assert {r.op for r in rows} >= {"Q, 1 iteration", "B A Eckart-Young", "objective vs profile"}


@pytest.mark.parametrize("fault, op", [("swap", "B A Eckart-Young"), ("requantize", "Q_T fixed point")])
def test_peft_check_catches_faults(monkeypatch, fault, op):
    monkeypatch.setattr(peft_peer, "loftq_init", reenacted(fault))
    rows = {r.op: r for r in check_peft.check_peft(quick=True, device="cpu")}
    assert rows[op].mismatches > 0


def test_peft_profile_first_iterate_is_bitsandbytes_nf4(bnb):
    """Q_1 of the profile is bitsandbytes' own quantize/dequantize of the float32 weight (its CPU path,
    which anchors.md and the GPU run show equal to its CUDA path without double quantization)."""
    from qref.conformance.peers import bitsandbytes as b

    W = (np.random.default_rng(3).standard_normal((64, 192)) * 0.02).astype(np.float32)
    packed, state = b.quantize_4bit(W, 64, "nf4")
    Q, A, B = pl.loftq_init(W, 4, 4, 1)
    assert np.array_equal(Q.view(np.uint32), b.dequantize_4bit(packed, state).view(np.uint32))
    assert A.shape == (4, 192) and B.shape == (64, 4) and A.dtype == B.dtype == np.float32
    assert abs(pl.eckart_young_gap(W, Q, A, B)) < 1e-9


def test_peft_profile_refuses_8_bit_and_bad_rank():
    W = np.zeros((8, 64), np.float32)
    with pytest.raises(ValueError, match="num_bits"):
        pl.loftq_init(W, 8, 2)
    with pytest.raises(ValueError, match="rank"):
        pl.loftq_init(W, 4, 9)


def test_validate_json_report(tmp_path, bnb):
    path = tmp_path / "report.json"
    rc = validate.main(["bitsandbytes", "torchao", "peft"], quick=True, json_path=str(path), out=lambda s: None)
    report = json.loads(path.read_text())
    assert rc == 0 and report["unexplained"] == 0 and report["schema"] == "qref-validate/1"
    names = {lib["library"] for lib in report["libraries"]}
    assert "bitsandbytes" in names
    rows = [r for lib in report["libraries"] for r in lib["rows"]]
    classes = [c for r in rows for c in r["classes"]]
    assert classes and all(c["example"]["why"] and c["cases"] > 0 for c in classes)
    if not peft_peer.available()[0]:
        assert any(s.startswith("peft") for s in report["skipped"])


def test_validate_rejects_unknown_library():
    with pytest.raises(ValueError, match="unknown library"):
        validate.validate(["nope"])
