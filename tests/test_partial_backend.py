"""A partial backend (a subset of the primitives) goes through the whole conformance suite: what it
implements is checked, what needs a missing primitive is skipped as "not implemented", nothing errors."""

import pytest
from _pytest.outcomes import Skipped

from qref.backend import _not_implemented
from qref.conformance import hsettings
from qref.conformance.mutation import strata
from qref.numpy_backend import NumpyBackend

MISSING = ("quantize_groupwise", "svd", "solve")


class BlockwiseOnly(NumpyBackend):
    name = "blockwise-only"
    quantize_groupwise = _not_implemented("quantize_groupwise")
    svd = _not_implemented("svd")
    solve = _not_implemented("solve")


def run_suite(backend):
    hsettings.select("ci-mutation")
    from qref.conformance import test_suite

    passed, skipped = [], []
    for name in sorted(n for n in dir(test_suite) if n.startswith("test_")):
        for params in strata(getattr(test_suite, name)):
            try:
                getattr(test_suite, name)(backend=backend, reference=NumpyBackend(), **params)
                passed.append(name)
            except Skipped as e:
                skipped.append((name, str(e)))
    return passed, skipped


def test_missing_primitives_are_skipped_with_the_reason_and_the_rest_is_checked():
    backend = BlockwiseOnly()
    assert not backend.implements("quantize_groupwise") and backend.implements("quantize_blockwise")
    passed, skipped = run_suite(backend)
    not_implemented = [s for s in skipped if "not implemented" in s[1]]
    assert not_implemented, "no test needed a missing primitive"
    assert all(any(op in why for op in MISSING) for _, why in not_implemented)
    assert any("blockwise" in n or "4bit" in n for n in passed)


def test_a_partial_backend_with_a_wrong_implemented_op_still_fails():
    import numpy as np

    class Wrong(BlockwiseOnly):
        def pack_nibbles(self, codes, pad_code=0):
            return np.asarray(super().pack_nibbles(codes, pad_code)) ^ np.uint8(0x01)

    with pytest.raises(AssertionError):
        run_suite(Wrong())
