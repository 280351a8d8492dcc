"""Registry, backend errors, and the CLI entry to the conformance suite."""
import numpy as np
import pytest

from qref.registry import (
    BackendUnavailable,
    available,
    get_backend,
    register,
    unregister,
)


def test_registry_finds_shipped_backends_by_entry_point():
    specs = dict(available())
    assert repr(specs["numpy"]) == "<qref backend numpy:cpu>"
    assert repr(specs["torch:cpu"]) == "<qref backend torch:cpu>"
    for gpu in ("torch:cuda", "cupy:cuda"):  # objects on a GPU machine, a stated reason elsewhere
        assert not isinstance(specs[gpu], str) or "CUDA" in specs[gpu] or "cupy" in specs[gpu]


def test_unknown_and_unavailable_backends_are_named():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        get_backend("nope")
    with pytest.raises(BackendUnavailable, match="cpu only"):
        get_backend("numpy:cuda")


def test_in_process_registration():
    from qref.numpy_backend import NumpyBackend

    register("mine", NumpyBackend)
    try:
        assert get_backend("mine").name == "numpy"
    finally:
        unregister("mine")
    with pytest.raises(ValueError):
        get_backend("mine")


@pytest.mark.parametrize("spec", ["numpy", "torch:cpu"])
def test_backend_input_errors_match_the_reference(spec):
    pytest.importorskip("torch")
    bk = get_backend(spec)
    x = np.array([1.0, np.nan], np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        bk.quantize_4bit(bk.from_numpy(x))
    with pytest.raises(ValueError):
        bk.quantize_4bit(bk.from_numpy(np.ones(8, np.float32)), blocksize=48)
    with pytest.raises(TypeError):
        bk.quantize_blockwise(bk.from_numpy(np.ones(8, np.int32)), "nf4", 64)
    with pytest.raises(ValueError, match="divisible"):
        bk.quantize_groupwise(bk.from_numpy(np.ones((2, 40), np.float32)), 4, 32, "gptq-asym")


def test_torch_backend_matches_reference_on_a_bf16_weight():
    pytest.importorskip("torch")
    from qref.dtypes import BFloat16Array

    ref, bk = get_backend("numpy"), get_backend("torch:cpu")
    x = BFloat16Array.from_float32(np.random.default_rng(1).standard_normal((64, 200)).astype(np.float32))
    q, r = bk.quantize_4bit(bk.from_numpy(x), 128, "nf4", True), ref.quantize_4bit(x, 128, "nf4", True)
    assert np.array_equal(bk.to_numpy(q.packed), r.packed) and np.array_equal(bk.to_numpy(q.qabsmax), r.qabsmax)
    assert bk.to_numpy(bk.dequantize_4bit(q, (64, 200), 128, "nf4", "bfloat16")) == \
        ref.dequantize_4bit(r, (64, 200), 128, "nf4", "bfloat16")


def test_qref_conform_cli_runs_the_suite(capsys):
    from conformance import tally
    from qref.cli import main

    tally.reset()
    status = main(["conform", "numpy", "--", "-k", "nibbles", "--no-header"])
    out = capsys.readouterr().out
    tally.reset()
    assert status == 0
    assert "qref conformance: numpy vs the reference" in out and "pack_nibbles" in out
