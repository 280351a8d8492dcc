"""The conformance suite: `pytest --pyargs qref.conformance --qref-backend NAME[:DEVICE]` (docs/writing-a-backend.md).

The discrete axes (codebook, block size, double quantization, output format, profile x bits, pooling,
error case) are parametrized strata: every combination runs in every profile. hypothesis draws only
the data, from strategies aimed at the decision points (conformance.strategies), and pinned examples
(the battery's constructed cases) run first in every stratum. Each test holds the backend to the
reference through conformance.checks (which raise tally.Mismatch); `held` also asserts that the check
compared something. conformance/decisions.json maps every decision of the spec to the tests here.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qref.backend import OpNotImplemented

# Imports are absolute: in a source checkout pytest may import this file as `conformance.test_suite`.
from qref.conformance import battery, checks, hsettings, tally
from qref.conformance import strategies as qs
from qref.conformance.error_cases import ERROR_CASES

SETTINGS = hsettings.current()  # this suite's own settings; the global hypothesis profile is untouched


def per_stratum(share: int):
    """The profile's examples divided over a test's strata (at least 20 each)."""
    return settings(SETTINGS, max_examples=max(20, SETTINGS.max_examples // share))


@pytest.fixture(autouse=True)
def _examples_independent_of_install_layout():
    with hsettings.layout_independent():
        yield


@pytest.fixture
def backend(qref_backend):
    return qref_backend


@pytest.fixture
def reference(qref_reference):
    return qref_reference


def held(check, *args, **kwargs):
    """Run one check of conformance.checks; it raises on a mismatch and must have recorded a case."""
    before = tally.cases()
    try:
        check(*args, **kwargs)
    except OpNotImplemented as e:  # a partial backend: the op is listed as not implemented
        pytest.skip(f"not implemented: {e}")
    assert tally.cases() > before, f"checks.{check.__name__} compared nothing"


# Pinned examples: the battery's cases for the rarest decision points, so that every run (even a
# 40-example CI run) visits values on the midpoints and values where x * (1/a) != x / a.
_TIES = np.concatenate([battery.midpoint_block("nf4", 64), battery.midpoint_block("nf4", 64)[:33]])
_RVD = battery.reciprocal_vs_division("nf4", 64)
_ZERO_TAIL = np.concatenate([np.ones(64, np.float32), np.zeros(7, np.float32)])

CODEBOOKS_4BIT = ("nf4", "fp4", "nf2", "nf3", "int4", "int4-asymmetric", "nf4-symmetric")
CODEBOOKS_8BIT = ("dynamic", "dynamic-unsigned", "nf8", "int8")


def _pinned(codebook):
    """(x, blocksize) cases every blockwise stratum starts with."""
    out = [(np.concatenate([_RVD, _RVD[:33]]), 64), (_ZERO_TAIL, 64)]  # a full block and a tail
    if codebook == "nf4":
        out.append((_TIES, 64))
    for fmt in ("float16", "bfloat16"):
        block = qs.double_rounding_block(codebook, fmt) if codebook in ("nf4", "fp4") else None
        if block is not None:
            out.append((block, 64))
    return out


@pytest.mark.parametrize("codebook", CODEBOOKS_4BIT)
@per_stratum(len(CODEBOOKS_4BIT))
@given(st.data())
def test_quantize_blockwise(backend, reference, codebook, data):
    for x, bs in _pinned(codebook):
        held(checks.quantize_blockwise, backend, reference, x, codebook, bs)
    bs = data.draw(st.sampled_from((32, 64, 128, 256)))
    held(checks.quantize_blockwise, backend, reference, data.draw(qs.hard_inputs(codebook, bs)), codebook, bs)


@pytest.mark.parametrize("codebook", CODEBOOKS_8BIT)
@per_stratum(2 * len(CODEBOOKS_8BIT))
@given(st.data())
def test_quantize_blockwise_8bit(backend, reference, codebook, data):
    bs = data.draw(st.sampled_from((64, 256, 4096)))
    held(checks.quantize_blockwise, backend, reference, data.draw(qs.hard_inputs(codebook, bs, 2)), codebook, bs)


FOURBIT = [(qt, dq) for qt in ("nf4", "fp4") for dq in (False, True)]


@pytest.mark.parametrize("quant_type,double_quant", FOURBIT)
@per_stratum(len(FOURBIT))
@given(st.data())
def test_quantize_4bit(backend, reference, quant_type, double_quant, data):
    """Every output format of the (possibly fused) 4-bit composite, each input format drawn."""
    for x, bs in _pinned(quant_type):
        held(checks.quantize_4bit, backend, reference, x, quant_type, bs, double_quant)
    bs = data.draw(qs.blocksizes)
    x = data.draw(qs.hard_inputs(quant_type, bs, 3 if bs <= 256 else 1))
    held(checks.quantize_4bit, backend, reference, x, quant_type, bs, double_quant)


@pytest.mark.parametrize("quant_type,double_quant", FOURBIT)
@per_stratum(2 * len(FOURBIT))
@given(st.data())
def test_quantize_4bit_many(backend, reference, quant_type, double_quant, data):
    """A batch of 1-4 arrays (each drawn like test_quantize_4bit's, formats and sizes mixed) equals the single
    calls item by item; a NaN in one item refuses the batch naming that item."""
    bs = data.draw(st.sampled_from((64, 128, 256)))
    xs = data.draw(st.lists(qs.hard_inputs(quant_type, bs, 2), min_size=1, max_size=4))
    out_dtype = data.draw(st.sampled_from(("float32", "float16", "bfloat16")))
    held(checks.quantize_4bit_many, backend, reference, xs, quant_type, bs, double_quant, out_dtype)
    bad = data.draw(st.integers(0, len(xs) - 1))
    held(checks.quantize_4bit_many, backend, reference, xs, quant_type, bs, double_quant, out_dtype, bad)


# restoring code * absmax2 + offset overflows float32 here: dequantize_4bit must refuse the state
@pytest.mark.parametrize("quant_type,double_quant", FOURBIT)
@per_stratum(2 * len(FOURBIT))
@given(st.data())
def test_reference_api(backend, reference, quant_type, double_quant, data):
    """The backend's state through the user-facing API (qref.quantize_4bit / dequantize_4bit, QuantState)."""
    bs = data.draw(st.sampled_from((32, 64, 256)))
    storage = data.draw(st.sampled_from(("uint8", "float16", "bfloat16", "float32")))
    x = data.draw(qs.hard_inputs(quant_type, bs, 3))
    held(checks.reference_api, backend, reference, x, quant_type, bs, double_quant, storage)


# restoring code * absmax2 + offset overflows float32 here: dequantize_4bit must refuse the state
_OVERFLOW = (np.array([3.4028234663852886e38, 3.0625412211588078e38, 3.4028234663852886e38], np.float32), 0)


@per_stratum(2)
@given(qs.dq_absmax(), st.integers(0, 2**16))
@example(qs.adversarial_mean(), 0)
@example(*_OVERFLOW)
@example(np.abs(np.random.default_rng(1).standard_normal(700)).astype(np.float32), 1)
def test_double_quant_structure(backend, reference, absmax, seed):
    held(checks.double_quant, backend, reference, absmax, seed)


@per_stratum(2)
@given(st.integers(1, 301).flatmap(lambda n: st.lists(st.integers(0, 15), min_size=n, max_size=n)), st.integers(0, 15))
@example([], 0)  # no codes: no bytes, and back
@example([15, 9], 3)
@example([8, 12, 1], 15)
def test_nibbles(backend, reference, codes, pad):
    held(checks.nibbles, backend, reference, np.array(codes, dtype=np.uint8), pad)


@per_stratum(2)
@given(
    st.sampled_from(("normal", "huge", "tiny", "mixed", "adversarial")), st.integers(1, 5000), st.integers(0, 2**32 - 1)
)
@example("adversarial", 1, 0)
def test_mean_offset(backend, reference, kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "adversarial":
        absmax = qs.adversarial_mean(int(rng.integers(-60, 61)), int(rng.integers(0, 4)))
    else:
        scale = {"normal": 1.0, "huge": 3e38, "tiny": 1e-39, "mixed": 10.0 ** rng.integers(-40, 38, n)}[kind]
        absmax = np.minimum(np.abs(rng.standard_normal(n)) * scale, 3.4e38).astype(np.float32)
    held(checks.mean_offset, backend, reference, absmax)


GROUPWISE = [(p, b) for p in ("gptq-asym", "gptq-sym", "minmax") for b in (2, 3, 4, 8)]


@pytest.mark.parametrize("profile,bits", GROUPWISE)
@per_stratum(len(GROUPWISE) // 2)
@given(st.data())
def test_groupwise(backend, reference, profile, bits, data):
    g = data.draw(qs.group_sizes)
    held(checks.groupwise, backend, reference, data.draw(qs.group_weights(g, bits)), bits, g, profile)


@pytest.mark.parametrize("pooling", ("average", "sum", "peft"))
@per_stratum(6)
@given(
    st.sampled_from(("gptq-asym", "gptq-sym", "minmax")),
    st.sampled_from((2, 4, 8)),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_qalora(backend, reference, pooling, profile, bits, rank, seed, data):
    g = data.draw(qs.group_sizes)
    W = data.draw(qs.group_weights(g, bits))
    rank = min(rank, W.shape[0], W.shape[1] // g)
    held(checks.qalora, backend, reference, W, bits, g, profile, rank, pooling, seed)


@per_stratum(2)
@given(qs.matrices())
def test_svd_factors(backend, reference, case):
    held(checks.svd_factors, backend, reference, *case)


@per_stratum(4)
@given(
    st.integers(24, 96),
    st.integers(24, 96),
    st.integers(1, 6),
    st.sampled_from(("decaying", "low-rank")),
    st.integers(0, 2**32 - 1),
)
def test_randomized_factors(backend, reference, m, n, rank, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "decaying":
        U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
        V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
        R = (U * 0.3 ** np.arange(min(m, n))) @ V.T
    else:
        R = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) + 1e-9 * rng.standard_normal((m, n))
    held(checks.randomized_factors, backend, reference, R, rank)


@pytest.mark.parametrize("weighted", (False, True), ids=("plain", "fisher"))
@per_stratum(8)
@given(
    st.integers(1, 6),
    st.sampled_from((2, 3, 4)),
    st.integers(1, 3),
    st.sampled_from(((48, 64), (32, 96), (64, 40))),
    st.integers(-3, 1),
    st.integers(0, 2**32 - 1),
)
def test_initialisers(backend, reference, weighted, rank, bits, num_iter, shape, decade, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape) * 10.0**decade
    W[:, :2] *= 8  # outlier columns, as in LLM weights
    X = rng.standard_normal((96, shape[1])) * np.exp(rng.standard_normal(shape[1]))  # anisotropic inputs
    fisher = rng.gamma(1.0, 1.0, shape) if weighted else None
    held(checks.initialisers, backend, reference, W, rank, bits, X, num_iter, fisher)


@per_stratum(2)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1), st.booleans())
def test_allocation(backend, reference, m, k, seed, on_a_vertex):
    rng = np.random.default_rng(seed)
    bits = np.sort(rng.choice([2.127, 3.127, 4.127, 8.127], size=(m, k)), axis=1)
    costs = np.sort(rng.uniform(0, 1, (m, k)), axis=1)[:, ::-1].copy()  # more bits, less error
    sizes = rng.integers(1, 100, m).astype(float)
    if on_a_vertex:  # the budget exactly the bits of a feasible assignment
        pick = rng.integers(0, k, m)
        budget = float((sizes * bits[np.arange(m), pick]).sum() / sizes.sum())
    else:
        budget = float(rng.uniform(bits.min(axis=1).max(), bits.max() + 0.5))
    held(checks.allocation, backend, costs, bits, sizes, budget)


# ---- the error contract: every backend raises the reference's errors (conformance/error_cases.py) ----
@pytest.mark.parametrize("case", sorted(ERROR_CASES))
@per_stratum(len(ERROR_CASES))
@given(st.data(), st.integers(0, 2**32 - 1))
def test_error_contract(backend, reference, case, data, seed):
    call_ref, call_bk = ERROR_CASES[case](backend, reference, data, np.random.default_rng(seed))
    held(checks.error_contract, backend, reference, case, call_ref, call_bk)
