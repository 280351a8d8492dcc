"""LoftQ, LQ-LoRA (Fisher, ILP) and QuAILoRA: oracles and certificates, not snapshots."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qref import get_codebook, loftq, lqlora, quailora
from qref.conformance.synthetic import calibration_inputs, diagonal_fisher, llm_like_weight
from qref.lowrank import nf_quantize, weighted_svd_factors


@pytest.fixture(scope="module")
def layer():
    W = llm_like_weight(128, 256, seed=3)
    X = calibration_inputs(1024, 256, seed=3)
    return W, X, quailora.second_moment(X)


def test_loftq_one_step_equals_quailora_uncalibrated(layer):
    W, _, _ = layer
    one = loftq.loftq(W, 8, num_iter=1)
    A, B = quailora.uncalibrated(W, nf_quantize(W, 4, 64), 8)
    assert np.array_equal(one.Q, nf_quantize(W, 4, 64))
    assert np.allclose(one.lora_A, A, rtol=0, atol=1e-12) and np.allclose(one.lora_B, B, rtol=0, atol=1e-12)


def test_loftq_layout_and_peft_split(layer):
    W, _, _ = layer
    res = loftq.loftq(W, 8, num_iter=3)
    assert res.lora_A.shape == (8, 256) and res.lora_B.shape == (128, 8) and len(res.errors) == 3
    # sqrt(S) to each side: the columns of B and rows of A have equal norms
    assert np.allclose(np.linalg.norm(res.lora_B, axis=0), np.linalg.norm(res.lora_A, axis=1))


def exact_q_plus_low_rank(rank=4, seed=0):
    """W = Q + L with Q on the NF4 block-64 grid and quant(W) == Q: every block keeps its absmax
    element (L is zero on those columns) and no code moves (|L| < 0.5% of absmax)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 15, (64, 128))
    codes[:, [0, 64]] = 15  # code 1.0 carries each block's absmax
    absmax = rng.uniform(0.5, 2, (64, 2)).astype(np.float32)
    Q = (get_codebook("nf4").values[codes] * np.repeat(absmax, 64, axis=1)).astype(np.float32).astype(np.float64)
    v = rng.standard_normal((rank, 128))
    v[:, [0, 64]] = 0
    L = rng.standard_normal((64, rank)) @ v
    L *= 0.0025 / np.abs(L).max()
    assert np.array_equal(nf_quantize(Q + L, 4, 64), Q)
    return Q + L, Q, L


def test_exact_q_plus_low_rank_is_recovered():
    W, Q, L = exact_q_plus_low_rank()
    assert loftq.loftq(W, 4, num_iter=3).errors[-1] < 1e-13
    A, B = quailora.uncalibrated(W, Q, 4)
    assert np.linalg.norm(W - Q - B @ A) < 1e-13
    # LQ-LoRA's iteration keeps the exact decomposition as a fixed point ...
    fixed = lqlora.decompose(W, 4, lqlora.LQConfig(4, 64, None), max_iter=3, Q_init=Q)
    assert fixed.errors[fixed.best] < 1e-13
    # ... but from the paper's start Q_0 = 0 it does not find it: SVD_r(W) takes Q's own top
    # directions first (docs/lqlora.md)
    assert lqlora.decompose(W, 4, lqlora.LQConfig(4, 64, None), max_iter=20).errors[-1] > 1.0


def test_lqlora_keeps_the_best_iterate_and_stops_when_error_rises(layer):
    W, _, _ = layer
    res = lqlora.decompose(W, 8, lqlora.LQConfig(3, 64, 256), max_iter=30)
    errors = np.array(res.errors)
    assert res.best == int(np.argmin(errors))
    assert np.isclose(np.linalg.norm(W - res.Q - res.L1 @ res.L2), errors[res.best], rtol=1e-12)
    rises = np.flatnonzero(np.diff(errors) > 0)
    assert rises.size == 0 or rises[0] == len(errors) - 2  # it stops at the first rise


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lqlora_beats_one_step_loftq_on_llm_like_weights(bits, layer):
    W, _, _ = layer
    lq = lqlora.decompose(W, 8, lqlora.LQConfig(bits, 64, 256), max_iter=10)
    lf = loftq.loftq(W, 8, 1, quantizer=lqlora.LQConfig(bits, 64, 256).quantize)
    assert lq.errors[lq.best] < lf.errors[0]


def test_fisher_with_uniform_weights_equals_unweighted(layer):
    W, _, _ = layer
    plain = lqlora.decompose(W, 8, max_iter=4)
    uniform = lqlora.decompose(W, 8, max_iter=4, fisher=np.full(W.shape, 3.0))
    assert np.allclose(plain.L1 @ plain.L2, uniform.L1 @ uniform.L2, atol=1e-12)
    assert np.array_equal(plain.Q, uniform.Q)


def test_weighted_svd_is_optimal_for_separable_weights():
    rng = np.random.default_rng(1)
    R = rng.standard_normal((20, 30))
    dr, dc = rng.uniform(0.5, 2, 20), rng.uniform(0.5, 2, 30)
    L1, L2 = weighted_svd_factors(R, dr, dc, 3)
    err = np.linalg.norm(dr[:, None] * (R - L1 @ L2) * dc)
    optimum = np.sqrt((np.linalg.svd(dr[:, None] * R * dc, compute_uv=False)[3:] ** 2).sum())
    assert np.isclose(err, optimum, rtol=1e-12)
    for _ in range(20):  # and no random rank-3 perturbation does better
        P1, P2 = L1 + 1e-3 * rng.standard_normal(L1.shape), L2 + 1e-3 * rng.standard_normal(L2.shape)
        assert np.linalg.norm(dr[:, None] * (R - P1 @ P2) * dc) >= err


def test_fisher_decomposition_lowers_the_weighted_error(layer):
    W, X, _ = layer
    F = diagonal_fisher(X, W.shape[0], seed=3)
    weighted = lqlora.decompose(W, 8, fisher=F, max_iter=6)
    plain = lqlora.decompose(W, 8, max_iter=6)
    weighted_err = lambda r: np.linalg.norm(np.sqrt(F) * (W - r.Q - r.L1 @ r.L2))
    assert weighted_err(weighted) < weighted_err(plain)


def test_quailora_objective_never_increases_and_reaches_closed_form(layer):
    W, _, C = layer
    Q = nf_quantize(W, 4, 64)
    res = quailora.calibrated(W, Q, 8, C, max_iter=2000, tol=1e-15)
    h = np.array(res.history)
    assert np.all(np.diff(h) <= 1e-12 * h[:-1])
    A, B, optimum = quailora.closed_form(W, Q, 8, C)
    assert np.isclose(quailora.objective(W - Q, B, A, C), optimum, rtol=1e-10)
    assert (h[-1] - optimum) / optimum < 1e-8


def test_calibrated_beats_loftq_and_zero_init(layer):
    W, _, C = layer
    Q = nf_quantize(W, 4, 64)
    R = W - Q
    res = quailora.calibrated(W, Q, 8, C, max_iter=200)
    calibrated_err = quailora.objective(R, res.lora_B, res.lora_A, C)
    lf = loftq.loftq(W, 8, 1)
    assert calibrated_err < quailora.objective(R, lf.lora_B, lf.lora_A, C)  # same Q: a feasible point
    assert calibrated_err < quailora.objective(R, np.zeros((128, 8)), np.zeros((8, 256)), C)  # QLoRA B = 0


@settings(deadline=None)
@given(st.integers(2, 6), st.integers(2, 4), st.integers(0, 10_000))
def test_ilp_equals_brute_force_and_respects_budget(m, k, seed):
    rng = np.random.default_rng(seed)
    bits = np.sort(rng.choice([2.127, 2.25, 3.127, 3.5, 4.127, 4.5, 8.127], size=(m, k)), axis=1)
    costs = np.sort(rng.uniform(0, 10, size=(m, k)), axis=1)[:, ::-1]  # more bits, less error
    sizes = rng.integers(1, 100, size=m).astype(float)
    budget = float(rng.uniform((sizes * bits.min(1)).sum() / sizes.sum(), bits.max()))
    alloc = lqlora.allocate(costs, bits, sizes, budget)
    assert alloc.bits_per_parameter <= budget + 1e-9
    best = min(
        (
            costs[np.arange(m), c].sum()
            for c in itertools.product(range(k), repeat=m)
            if (sizes * bits[np.arange(m), c]).sum() <= budget * sizes.sum() + 1e-9
        ),
    )
    assert np.isclose(alloc.objective, best, rtol=1e-9, atol=1e-9)


def test_lqlora_storage_of_named_configurations():
    # b0 + 8/B0 + 32/(B0 B1): NF4/NF3/NF2 with block 64 and second-level block 256 (LQ-LoRA's
    # default configurations; 4.127 is also QLoRA's figure)
    assert [round(float(lqlora.LQConfig(b, 64, 256).bits_per_parameter()), 3) for b in (4, 3, 2)] == [
        4.127,
        3.127,
        2.127,
    ]
    assert float(lqlora.LQConfig(4, 64, 256).bits_per_parameter()) == 4 + 8 / 64 + 32 / (64 * 256)


def test_bad_input():
    W = np.ones((4, 6))
    with pytest.raises(ValueError, match="rank"):
        loftq.loftq(W, 5)
    with pytest.raises(ValueError, match="rank"):
        lqlora.decompose(W, 0)
    with pytest.raises(TypeError, match="float64"):
        loftq.loftq(W.astype(np.float16), 2)
    with pytest.raises(ValueError, match="non-finite"):
        loftq.loftq(np.full((4, 6), np.nan), 2)
    X = np.random.default_rng(0).standard_normal((3, 6))  # 3 samples, 6 inputs: singular C
    C = quailora.second_moment(X)
    with pytest.raises(ValueError, match="singular"):
        quailora.calibrated(np.random.default_rng(1).standard_normal((4, 6)), np.zeros((4, 6)), 2, C)
    quailora.calibrated(np.random.default_rng(1).standard_normal((4, 6)), np.zeros((4, 6)), 2, C, damping=0.01)
    with pytest.raises(ValueError, match="infeasible"):
        lqlora.allocate(np.ones((2, 2)), np.array([[3, 4], [3, 4]]), np.ones(2), 2.5)
    with pytest.raises(ValueError, match="fisher"):
        lqlora.decompose(np.ones((4, 6)), 2, fisher=np.ones((6, 4)))
