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

SETTINGS = hsettings.current()  # this suite's own settings; the global hypothesis profile is untouched


def per_stratum(share: int):
    """The profile's examples divided over a test's strata (at least 20 each)."""
    return settings(SETTINGS, max_examples=max(20, SETTINGS.max_examples // share))


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


# ---- the error contract: every backend raises the reference's errors ----
def _floats(rng, n):
    return rng.standard_normal(n).astype(np.float32)


def _non_finite(data, rng):
    x = _floats(rng, data.draw(st.integers(1, 300)))
    x[data.draw(st.integers(0, x.size - 1))] = data.draw(st.sampled_from((np.nan, np.inf, -np.inf)))
    return x


def _err_blockwise_non_finite(bk, ref, data, rng):
    x = _non_finite(data, rng)
    return lambda: ref.quantize_blockwise(x, "nf4", 64), lambda: bk.quantize_blockwise(bk.from_numpy(x), "nf4", 64)


def _err_4bit_non_finite(bk, ref, data, rng):
    x, dq = _non_finite(data, rng), data.draw(st.booleans())
    return lambda: ref.quantize_4bit(x, 64, "nf4", dq), lambda: bk.quantize_4bit(bk.from_numpy(x), 64, "nf4", dq)


def _err_4bit_blocksize(bk, ref, data, rng):
    bs, x = data.draw(st.sampled_from((0, 8, 16, 48, 100, 8192))), _floats(rng, 256)
    return lambda: ref.quantize_4bit(x, bs, "nf4"), lambda: bk.quantize_4bit(bk.from_numpy(x), bs, "nf4")


def _err_dtype(bk, ref, data, rng):
    dtype = data.draw(st.sampled_from((np.float64, np.int32, np.bool_, np.complex64)))
    x = rng.standard_normal(data.draw(st.integers(1, 200))).astype(dtype)
    return lambda: ref.quantize_blockwise(x, "nf4", 64), lambda: bk.quantize_blockwise(bk.from_numpy(x), "nf4", 64)


def _err_pack_range(bk, ref, data, rng):
    c = np.append(rng.integers(0, 16, data.draw(st.integers(0, 50))), data.draw(st.integers(16, 255))).astype(np.uint8)
    return lambda: ref.pack_nibbles(c, 0), lambda: bk.pack_nibbles(bk.from_numpy(c), 0)


def _err_unpack_length(bk, ref, data, rng):
    p = rng.integers(0, 256, data.draw(st.integers(1, 40)), dtype=np.uint8)
    n = 2 * p.size + data.draw(st.integers(1, 9))
    return lambda: ref.unpack_nibbles(p, n), lambda: bk.unpack_nibbles(bk.from_numpy(p), n)


def _err_codes_range(bk, ref, data, rng):
    c = np.append(rng.integers(0, 16, 63), data.draw(st.integers(16, 255))).astype(np.uint8)
    a = np.ones(1, np.float32)
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
    )


def _err_dq_offset(bk, ref, data, rng):
    a, off = np.abs(_floats(rng, 300)), data.draw(st.sampled_from((np.nan, np.inf, -np.inf)))
    return lambda: ref.double_quantize(a, offset=off), lambda: bk.double_quantize(bk.from_numpy(a), offset=off)


def _err_group_layout(bk, ref, data, rng):
    cols = 32 * data.draw(st.integers(1, 3)) + data.draw(st.integers(1, 31))
    W = rng.standard_normal((data.draw(st.integers(1, 4)), cols)).astype(np.float32)
    return (
        lambda: ref.quantize_groupwise(W, 4, 32, "gptq-asym"),
        lambda: bk.quantize_groupwise(bk.from_numpy(W), 4, 32, "gptq-asym"),
    )


def _err_group_bits(bk, ref, data, rng):
    W, b = rng.standard_normal((2, 64)).astype(np.float32), data.draw(st.sampled_from((0, 1, 5, 16)))
    return (
        lambda: ref.quantize_groupwise(W, b, 32, "gptq-asym"),
        lambda: bk.quantize_groupwise(bk.from_numpy(W), b, 32, "gptq-asym"),
    )


def _err_group_non_finite(bk, ref, data, rng):
    W = rng.standard_normal((2, 64)).astype(np.float32)
    W.flat[data.draw(st.integers(0, 127))] = data.draw(st.sampled_from((np.nan, np.inf)))
    return (
        lambda: ref.quantize_groupwise(W, 4, 32, "gptq-asym"),
        lambda: bk.quantize_groupwise(bk.from_numpy(W), 4, 32, "gptq-asym"),
    )


def _err_group_range(bk, ref, data, rng):
    W = rng.standard_normal((2, 64)).astype(np.float32)
    W[data.draw(st.integers(0, 1)), data.draw(st.integers(0, 31))] = 3.0e38
    W[:, 32:] *= data.draw(st.sampled_from((1, -1)))
    W[0, 40], W[0, 41] = -3.0e38, 3.0e38
    profile = data.draw(st.sampled_from(("gptq-asym", "gptq-sym", "minmax")))
    return (
        lambda: ref.quantize_groupwise(W, 4, 32, profile),
        lambda: bk.quantize_groupwise(bk.from_numpy(W), 4, 32, profile),
    )


def _err_rank(bk, ref, data, rng):
    R = rng.standard_normal((data.draw(st.integers(2, 12)), data.draw(st.integers(2, 12))))
    r = data.draw(st.sampled_from((0, -1, min(R.shape) + 1, 100)))
    op = data.draw(st.sampled_from(("svd_factors", "loftq", "lqlora")))
    return lambda: getattr(ref, op)(R, r), lambda: getattr(bk, op)(bk.from_numpy(R), r)


def _err_not_a_matrix(bk, ref, data, rng):
    R = rng.standard_normal(data.draw(st.sampled_from(((8,), (2, 3, 4), (0, 5)))))
    op = data.draw(st.sampled_from(("svd_factors", "loftq")))
    return lambda: getattr(ref, op)(R, 1), lambda: getattr(bk, op)(bk.from_numpy(R), 1)


def _err_num_iter(bk, ref, data, rng):
    W, it = rng.standard_normal((16, 64)), data.draw(st.sampled_from((0, -1)))
    return lambda: ref.loftq(W, 2, it), lambda: bk.loftq(bk.from_numpy(W), 2, it)


def _err_codes_dtype(bk, ref, data, rng):
    c = rng.integers(0, 16, 64).astype(data.draw(st.sampled_from((np.int64, np.int8, np.float32))))
    a = np.ones(1, np.float32)
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
    )


def _err_absmax_length(bk, ref, data, rng):
    c = rng.integers(0, 16, 64 * data.draw(st.integers(1, 3))).astype(np.uint8)
    a = np.ones(c.size // 64 + data.draw(st.sampled_from((-1, 1, 2))), np.float32)
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
    )


def _err_out_dtype(bk, ref, data, rng):
    c, a = rng.integers(0, 16, 64).astype(np.uint8), np.ones(1, np.float32)
    fmt = data.draw(st.sampled_from(("float64", "int8", "bf16", "")))
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64, fmt),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64, fmt),
    )


def _err_empty(bk, ref, data, rng):
    x = np.zeros(0, np.float32)
    return lambda: ref.quantize_4bit(x, 64, "nf4"), lambda: bk.quantize_4bit(bk.from_numpy(x), 64, "nf4")


def _err_codebook(bk, ref, data, rng):
    x, name = _floats(rng, 64), data.draw(st.sampled_from(("nf5", "NF4", "", "int16")))
    return lambda: ref.quantize_blockwise(x, name, 64), lambda: bk.quantize_blockwise(bk.from_numpy(x), name, 64)


def _err_group_ndim(bk, ref, data, rng):
    W = rng.standard_normal(data.draw(st.sampled_from(((64,), (2, 2, 64))))).astype(np.float32)
    return (
        lambda: ref.quantize_groupwise(W, 4, 32, "gptq-asym"),
        lambda: bk.quantize_groupwise(bk.from_numpy(W), 4, 32, "gptq-asym"),
    )


def _err_rank_type(bk, ref, data, rng):
    R, r = rng.standard_normal((8, 8)), data.draw(st.sampled_from((2.5, "2", True, None)))
    return lambda: ref.svd_factors(R, r), lambda: bk.svd_factors(bk.from_numpy(R), r)


def _err_quailora_shapes(bk, ref, data, rng):
    W, Q, C = rng.standard_normal((8, 16)), rng.standard_normal((8, data.draw(st.integers(1, 15)))), np.eye(16)
    return (
        lambda: ref.quailora(W, Q, 2, C),
        lambda: bk.quailora(bk.from_numpy(W), bk.from_numpy(Q), 2, bk.from_numpy(C)),
    )


def _err_pad_code(bk, ref, data, rng):
    c, pad = (
        rng.integers(0, 16, 2 * data.draw(st.integers(0, 20)) + 1).astype(np.uint8),
        data.draw(st.sampled_from((16, -1, 255))),
    )
    return lambda: ref.pack_nibbles(c, pad), lambda: bk.pack_nibbles(bk.from_numpy(c), pad)


def _err_packed_dtype(bk, ref, data, rng):
    p = rng.integers(-128, 128, 8).astype(data.draw(st.sampled_from((np.int8, np.int16, np.float32))))
    return lambda: ref.unpack_nibbles(p, 16), lambda: bk.unpack_nibbles(bk.from_numpy(p), 16)


def _err_absmax_dtype(bk, ref, data, rng):
    c = rng.integers(0, 16, 64).astype(np.uint8)
    a = np.ones(1, data.draw(st.sampled_from((np.float64, np.float16, np.int32))))
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
    )


def _err_not_an_array(bk, ref, data, rng):
    x = data.draw(st.sampled_from(([1.0, 2.0], 3.0, None, "x")))
    return lambda: ref.quantize_blockwise(x, "nf4", 64), lambda: bk.quantize_blockwise(x, "nf4", 64)


ERROR_CASES = {
    "pack_nibbles pad_code": _err_pad_code,
    "unpack_nibbles packed dtype": _err_packed_dtype,
    "dequantize absmax dtype": _err_absmax_dtype,
    "quantize input not an array": _err_not_an_array,
    "unknown codebook": _err_codebook,
    "quantize_groupwise not 2-D": _err_group_ndim,
    "rank not an int": _err_rank_type,
    "quailora shapes": _err_quailora_shapes,
    "dequantize codes dtype": _err_codes_dtype,
    "dequantize absmax length": _err_absmax_length,
    "dequantize out_dtype": _err_out_dtype,
    "quantize_4bit empty": _err_empty,
    "quantize_blockwise non-finite": _err_blockwise_non_finite,
    "quantize_4bit non-finite": _err_4bit_non_finite,
    "quantize_4bit blocksize": _err_4bit_blocksize,
    "quantize input dtype": _err_dtype,
    "pack_nibbles codes >= 16": _err_pack_range,
    "unpack_nibbles n beyond the bytes": _err_unpack_length,
    "dequantize codes beyond the codebook": _err_codes_range,
    "double_quantize non-finite offset": _err_dq_offset,
    "quantize_groupwise layout": _err_group_layout,
    "quantize_groupwise bits": _err_group_bits,
    "quantize_groupwise non-finite": _err_group_non_finite,
    "quantize_groupwise range beyond float32": _err_group_range,
    "rank outside [1, min(shape)]": _err_rank,
    "loftq num_iter < 1": _err_num_iter,
    "low rank: not a matrix": _err_not_a_matrix,
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
@per_stratum(len(ERROR_CASES))
@given(st.data(), st.integers(0, 2**32 - 1))
def test_error_contract(backend, reference, case, data, seed):
    call_ref, call_bk = ERROR_CASES[case](backend, reference, data, np.random.default_rng(seed))
    held(checks.error_contract, backend, reference, case, call_ref, call_bk)
