"""Through pytest, as a user runs it: a few of the single-fault backends (conformance/mutants.py) are
registered in-process, the suite runs against them, and must fail naming the op (the whole catalogue
runs in tests/test_mutation.py)."""

import pytest

from qref.cli import main
from qref.conformance import tally
from qref.conformance.mutants import MUTANTS
from qref.registry import register, unregister

_BY_ID = {m.id: m.backend for m in MUTANTS}
FAULTS = [
    (_BY_ID["ties-up"], "test_quantize_blockwise", "quantize_blockwise codes"),
    (_BY_ID["divide-full-blocks"], "test_quantize_4bit", "quantize_4bit packed"),
    (_BY_ID["low-nibble-first"], "test_nibbles", "pack_nibbles"),
    (_BY_ID["mean-float32"], "test_mean_offset", "double_quantize offset"),
    (_BY_ID["round-half-away"], "test_groupwise", "quantize_groupwise codes"),
    (_BY_ID["rank-minus-one"], "test_svd_factors", "svd_factors"),
]


@pytest.mark.parametrize("fault,test,op", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_suite_reports_fault(fault, test, op):
    name = f"faulty-{fault.__name__.lower()}"
    register(name, fault)
    tally.reset()
    try:
        status = main(["conform", name, "--", "-k", test, "-x", "--no-header"])
    finally:
        unregister(name)
    failed = {o for (o, _), c in tally.counts().items() if c["mismatches"]}
    tally.reset()
    assert status == pytest.ExitCode.TESTS_FAILED
    assert op in failed, f"the suite did not name {op!r}; it named {failed}"


def test_reference_passes_its_own_suite():
    tally.reset()
    status = main(["conform", "numpy", "--", "--no-header", "-k", "nibbles or groupwise or mean_offset"])
    counts = tally.counts()
    tally.reset()
    assert status == pytest.ExitCode.OK
    assert counts and all(c["mismatches"] == 0 and c["cases"] > 0 for c in counts.values())
