"""The backend contract is written once (qref.contract.OPS): the Protocol, BackendBase's primitives,
the docs table and the conformance suite's tests all agree with it."""

import inspect
from pathlib import Path

import pytest

from qref import contract
from qref.backend import Backend, BackendBase
from qref.numpy_backend import NumpyBackend

ROOT = Path(__file__).resolve().parents[1]


def protocol_ops() -> set[str]:
    return {n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_protocol_lists_exactly_the_contract_ops():
    assert protocol_ops() == set(contract.BY_NAME)


def test_table_values_are_from_the_stated_sets():
    assert len(contract.BY_NAME) == len(contract.OPS)
    for op in contract.OPS:
        assert op.kind in contract.KINDS and op.exactness in contract.EXACTNESS, op


def test_basebackend_stubs_every_primitive_and_composes_the_rest():
    for op in contract.OPS:
        method = getattr(BackendBase, op.name, None)
        assert method is not None, op.name
        assert getattr(method, "qref_missing", False) == (op.kind == "primitive"), op.name


@pytest.mark.parametrize("spec", ["numpy", "torch:cpu"])
def test_shipped_backends_implement_every_primitive(spec):
    from qref.registry import BackendUnavailable, get_backend

    try:
        backend = get_backend(spec)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    assert backend.implements(*contract.PRIMITIVES)
    assert isinstance(backend, Backend)


def test_partial_backend_reports_what_it_lacks():
    class NoGroupwise(NumpyBackend):
        quantize_groupwise = BackendBase.quantize_groupwise

    b = NoGroupwise()
    assert not b.implements("quantize_groupwise") and b.implements("quantize_blockwise")
    with pytest.raises(NotImplementedError, match="quantize_groupwise"):
        b.quantize_groupwise(None, 4, 32, "gptq-asym")


def test_docs_table_is_the_generated_one():
    text = (ROOT / "docs" / "writing-a-backend.md").read_text()
    block = text.split("<!-- contract:begin -->\n")[1].split("\n<!-- contract:end -->")[0]
    assert block == contract.markdown(), "regenerate with: python -m qref.contract"


def test_every_op_names_a_test_of_the_suite():
    from qref.conformance import test_suite

    tests = {n for n in vars(test_suite) if n.startswith("test_")}
    for op in contract.OPS:
        assert op.test == "every test" or op.test in tests, (op.name, op.test)


def test_suite_lists_a_partial_backends_missing_ops_as_skipped():
    from qref.cli import main
    from qref.conformance import tally
    from qref.registry import register, unregister

    class NoGroupwise(NumpyBackend):
        quantize_groupwise = BackendBase.quantize_groupwise

    register("partial-nogroupwise", NoGroupwise)
    tally.reset()
    try:
        status = main(["conform", "partial-nogroupwise", "--", "-rs", "--no-header", "-k", "groupwise or nibbles"])
    finally:
        unregister("partial-nogroupwise")
        tally.reset()
    assert status == pytest.ExitCode.OK
