"""Registry, backend errors, and the CLI entry to the conformance suite."""

import numpy as np
import pytest

from qref.registry import (
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
    with pytest.raises(ValueError, match="host only"):  # a device the backend never runs on: a usage error
        get_backend("numpy:cuda")
    with pytest.raises(ValueError, match="device"):
        get_backend("torch:")


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
    assert bk.to_numpy(bk.dequantize_4bit(q, (64, 200), 128, "nf4", "bfloat16")) == ref.dequantize_4bit(
        r, (64, 200), 128, "nf4", "bfloat16"
    )


def test_qref_conform_cli_runs_the_suite(capsys):
    from qref.cli import main
    from qref.conformance import tally

    tally.reset()
    status = main(["conform", "numpy", "--", "-k", "nibbles", "--no-header"])
    out = capsys.readouterr().out
    tally.reset()
    assert status == 0
    assert "qref conformance: numpy vs the reference" in out and "pack_nibbles" in out


@pytest.mark.parametrize("name", ["numpy", "torch:cpu"])
def test_randomized_factors_pass_the_eckart_young_certificate(name):
    """svd="randomized" (warm-started subspace iteration): the factors are the best rank-r fit of their
    residual to 1e-6 (Eckart-Young gap), and LoftQ's objective is within 2% of the full-SVD run."""
    from qref.registry import get_backend

    be = get_backend(name)
    if name.startswith("torch"):
        pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    W = rng.standard_normal((192, 256)) * 0.02
    W[:, :3] *= 12
    fast, exact = be.loftq(be.from_numpy(W), 8, 4, svd="randomized"), be.loftq(be.from_numpy(W), 8, 4)
    Q, A, B = (be.to_numpy(fast[k]) for k in ("Q", "lora_A", "lora_B"))
    R = W - Q
    s = np.linalg.svd(R, compute_uv=False)
    gap = (np.linalg.norm(R - B @ A) - np.sqrt((s[8:] ** 2).sum())) / np.linalg.norm(R)
    assert abs(gap) < 1e-6
    assert abs(fast["error"] / exact["error"] - 1) < 0.02
    with pytest.raises(ValueError, match="svd"):
        be.loftq(be.from_numpy(W), 8, 1, svd="approximate")


def test_randomized_warm_start_reuses_the_basis():
    from qref.numpy_backend import NumpyBackend

    be = NumpyBackend()
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((64, 48)))
    V, _ = np.linalg.qr(rng.standard_normal((48, 48)))
    R = (U * 0.5 ** np.arange(48)) @ V.T  # a decaying spectrum: the basis converges
    L, Rt, basis = be.svd_factors_randomized(R, 4)
    assert basis.shape == (48, 12)
    L2, Rt2, _ = be.svd_factors_randomized(R, 4, start=basis, power=0)
    best = np.sqrt((np.linalg.svd(R, compute_uv=False)[4:] ** 2).sum())
    assert np.linalg.norm(R - L2 @ Rt2) <= best * (1 + 1e-3)  # a converged basis needs no power steps
