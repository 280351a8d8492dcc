"""The conformance suite: `pytest --pyargs qref.conformance --qref-backend NAME[:DEVICE]` (docs/writing-a-backend.md).

Each test draws hard inputs (conformance.strategies) and holds the backend to the reference through
conformance.checks (which raise tally.Mismatch); a failure shows hypothesis' shrunk input and the first
differing element. `held` also asserts that the check compared something: a check that returns without
recording a case cannot pass silently.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from qref.conformance import battery, checks, hsettings, tally
from qref.conformance import strategies as qs

# Imports are absolute: in a source checkout pytest may import this file as `conformance.test_suite`.
SETTINGS = hsettings.current()  # this suite's own settings; the global hypothesis profile is untouched


@pytest.fixture
def backend(qref_backend):
    return qref_backend


@pytest.fixture
def reference(qref_reference):
    return qref_reference


def held(check, *args):
    """Run one check of conformance.checks; it raises on a mismatch and must have recorded a case."""
    before = tally.cases()
    try:
        check(*args)
    except NotImplementedError as e:  # a partial backend: the op is listed as not implemented
        pytest.skip(f"not implemented: {e}")
    assert tally.cases() > before, f"checks.{check.__name__} compared nothing"


# Pinned examples: the battery's cases for the two rarest decision points, so that every run (even
# a 40-example CI run) visits values on the midpoints and values where x * (1/a) != x / a.
_TIES = np.concatenate([battery.midpoint_block("nf4", 64), battery.midpoint_block("nf4", 64)[:33]])
_RVD = battery.reciprocal_vs_division("nf4", 64)

CODEBOOKS_8BIT = st.sampled_from(("dynamic", "dynamic-unsigned", "nf8", "int8"))


@st.composite
def blockwise_case(
    draw,
    codebooks=st.sampled_from(("nf4", "fp4", "nf2", "nf3", "int4", "nf4-symmetric")),
    blocksizes=st.sampled_from((32, 64, 128, 256)),
):
    cb, bs = draw(codebooks), draw(blocksizes)
    return draw(qs.hard_inputs(cb, bs)), cb, bs


@SETTINGS
@given(blockwise_case())
@example((_TIES, "nf4", 64))
@example((np.concatenate([_RVD, _RVD]), "nf4", 64))
def test_quantize_blockwise(backend, reference, case):
    held(checks.quantize_blockwise, backend, reference, *case)


@SETTINGS
@given(blockwise_case(codebooks=CODEBOOKS_8BIT, blocksizes=st.sampled_from((64, 256, 4096))))
def test_quantize_blockwise_8bit(backend, reference, case):
    held(checks.quantize_blockwise, backend, reference, *case)


@st.composite
def fourbit_case(draw):
    qt, bs = draw(qs.quant_types), draw(qs.blocksizes)
    max_blocks = 3 if bs <= 256 else 1
    return draw(qs.hard_inputs(qt, bs, max_blocks)), qt, bs, draw(st.booleans()), draw(qs.formats)


@SETTINGS
@given(fourbit_case())
@example((_TIES, "nf4", 64, False, "float32"))
@example((np.concatenate([_RVD, _RVD]), "nf4", 64, True, "float32"))
def test_quantize_4bit(backend, reference, case):
    held(checks.quantize_4bit, backend, reference, *case)


@SETTINGS
@given(st.integers(1, 301).flatmap(lambda n: st.lists(st.integers(0, 15), min_size=n, max_size=n)), st.integers(0, 15))
def test_nibbles(backend, reference, codes, pad):
    held(checks.nibbles, backend, reference, np.array(codes, dtype=np.uint8), pad)


@SETTINGS
@given(st.sampled_from(("normal", "huge", "tiny", "mixed")), st.integers(1, 5000), st.integers(0, 2**32 - 1))
def test_mean_offset(backend, reference, kind, n, seed):
    rng = np.random.default_rng(seed)
    scale = {"normal": 1.0, "huge": 3e38, "tiny": 1e-39, "mixed": 10.0 ** rng.integers(-40, 38, n)}[kind]
    absmax = np.minimum(np.abs(rng.standard_normal(n)) * scale, 3.4e38).astype(np.float32)
    held(checks.mean_offset, backend, reference, absmax)


@st.composite
def groupwise_case(draw):
    bits, g = draw(qs.groupwise_bits), draw(qs.group_sizes)
    return draw(qs.group_weights(g, bits)), bits, g, draw(qs.groupwise_profiles)


@SETTINGS
@given(groupwise_case())
def test_groupwise(backend, reference, case):
    held(checks.groupwise, backend, reference, *case)


@SETTINGS
@given(groupwise_case(), st.integers(1, 4), st.sampled_from(("average", "sum", "peft")), st.integers(0, 2**32 - 1))
def test_qalora(backend, reference, case, rank, pooling, seed):
    W, bits, g, profile = case
    rank = min(rank, W.shape[0], W.shape[1] // g)
    held(checks.qalora, backend, reference, W, bits, g, profile, rank, pooling, seed)


@SETTINGS
@given(qs.matrices())
def test_svd_factors(backend, reference, case):
    held(checks.svd_factors, backend, reference, *case)


@SETTINGS
@given(st.integers(1, 8), st.sampled_from((2, 3, 4)), st.integers(0, 2**32 - 1))
def test_initialisers(backend, reference, rank, bits, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((48, 64)) * 0.02
    X = rng.standard_normal((96, 64))
    held(checks.initialisers, backend, reference, W, rank, bits, X)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_allocation(backend, reference, m, k, seed):
    rng = np.random.default_rng(seed)
    bits = np.sort(rng.choice([2.127, 3.127, 4.127, 8.127], size=(m, k)), axis=1)
    costs = rng.uniform(0, 1, (m, k))
    sizes = rng.integers(1, 100, m).astype(float)
    budget = float(rng.uniform(bits.min(axis=1).max(), bits.max() + 0.5))
    held(checks.allocation, backend, costs, bits, sizes, budget)
