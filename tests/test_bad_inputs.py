"""Bad inputs, as data (array-api-tests' special cases are the model): each row is a public function,
the bad value given to one argument, the exception it must raise and a word its message must hold
(the argument's name). The backend rows run on every backend available here. Then a hypothesis fuzz
target: arbitrary arrays and keyword values through the public API raise only ValueError or TypeError,
with no numpy RuntimeWarning and no silent NaN."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qref
from qref import gptq_pack, groupwise, lqlora, qalora, quailora
from qref.dtypes import BFloat16Array
from qref.loftq import loftq
from qref.registry import BackendUnavailable, get_backend
from qref.storage import StorageConfig, storage_bytes

F32 = np.float32
RNG = np.random.default_rng(0)
X = RNG.standard_normal(256).astype(F32)
W = RNG.standard_normal((8, 64)).astype(F32)
W64 = W.astype(np.float64)
NAN = X.copy()
NAN[3] = np.nan
INF_TAIL = X[:100].copy()
INF_TAIL[-1] = np.inf
GQ = groupwise.quantize_groupwise(W, 4, 32, "gptq-asym")
A, B = RNG.standard_normal((2, 2)), RNG.standard_normal((8, 2))
PACKED, STATE = qref.quantize_4bit(X, 64, "nf4")
_, DQ_STATE = qref.quantize_4bit(X, 64, "nf4", compress_statistics=True)


def gq(**change):
    from dataclasses import replace

    return replace(GQ, **change)


def state_dict(**change):
    d = STATE.as_dict()
    d.update(change)
    return d


# (id, call, exception, word the message must hold)
API = [
    # quantize_4bit / dequantize_4bit
    ("q4 nan", lambda: qref.quantize_4bit(NAN), ValueError, "x"),
    ("q4 inf in tail", lambda: qref.quantize_4bit(INF_TAIL), ValueError, "x"),
    ("q4 empty", lambda: qref.quantize_4bit(np.zeros(0, F32)), ValueError, "x"),
    ("q4 0-d", lambda: qref.quantize_4bit(np.float32(1.0)), TypeError, "x"),
    ("q4 float64", lambda: qref.quantize_4bit(X.astype(np.float64)), TypeError, "float64"),
    ("q4 int", lambda: qref.quantize_4bit(X.astype(np.int32)), TypeError, "x"),
    ("q4 bool", lambda: qref.quantize_4bit(X > 0), TypeError, "x"),
    ("q4 complex", lambda: qref.quantize_4bit(X.astype(np.complex64)), TypeError, "x"),
    ("q4 object", lambda: qref.quantize_4bit(X.astype(object)), TypeError, "x"),
    ("q4 list", lambda: qref.quantize_4bit([1.0, 2.0]), TypeError, "x"),
    ("q4 blocksize 0", lambda: qref.quantize_4bit(X, 0), ValueError, "blocksize"),
    ("q4 blocksize 100", lambda: qref.quantize_4bit(X, 100), ValueError, "blocksize"),
    ("q4 blocksize -64", lambda: qref.quantize_4bit(X, -64), ValueError, "blocksize"),
    ("q4 quant_type", lambda: qref.quantize_4bit(X, 64, "nf5"), ValueError, "quant_type"),
    ("q4 compress 'no'", lambda: qref.quantize_4bit(X, compress_statistics="no"), TypeError, "compress_statistics"),
    ("q4 storage", lambda: qref.quantize_4bit(X, quant_storage="int4"), ValueError, "quant_storage"),
    ("q4 offset nan", lambda: qref.quantize_4bit(X, compress_statistics=True, offset=np.nan), ValueError, "offset"),
    ("dq4 state type", lambda: qref.dequantize_4bit(PACKED, {}), TypeError, "state"),
    ("dq4 short packed", lambda: qref.dequantize_4bit(PACKED[:-1], STATE), ValueError, "packed"),
    ("dq4 out_dtype", lambda: qref.dequantize_4bit(PACKED, STATE, "float64"), ValueError, "out_dtype"),
    ("dq4 packed list", lambda: qref.dequantize_4bit(list(PACKED.ravel()), STATE), TypeError, "packed"),
    # QuantState.from_dict
    (
        "qs codes > 255",
        lambda: qref.QuantState.from_dict({**DQ_STATE.as_dict(), "absmax": DQ_STATE.absmax.astype(np.int64) + 300}),
        ValueError,
        "absmax",
    ),
    ("qs shape 8.9", lambda: qref.QuantState.from_dict(state_dict(shape=(8.9,))), ValueError, "shape"),
    ("qs blocksize 64.9", lambda: qref.QuantState.from_dict(state_dict(blocksize=64.9)), ValueError, "blocksize"),
    ("qs shape string", lambda: qref.QuantState.from_dict(state_dict(shape="256")), TypeError, "shape"),
    ("qs negative absmax", lambda: qref.QuantState.from_dict(state_dict(absmax=-STATE.absmax)), ValueError, "absmax"),
    (
        "qs nan quant_map",
        lambda: qref.QuantState.from_dict(state_dict(quant_map=np.full(16, np.nan, F32))),
        ValueError,
        "quant_map",
    ),
    (
        "qs nan offset",
        lambda: qref.QuantState.from_dict({**DQ_STATE.as_dict(), "nested_offset": float("nan")}),
        ValueError,
        "nested_offset",
    ),
    ("qs missing key", lambda: qref.QuantState.from_dict({"absmax": STATE.absmax}), ValueError, "lacks"),
    (
        "qs two packed",
        lambda: qref.QuantState.from_dict(
            {**STATE.as_dict(packed=True), "x.quant_state.bitsandbytes__fp4": np.zeros(2, np.uint8)}
        ),
        ValueError,
        "packed",
    ),
    # pack / unpack
    ("pack code 16", lambda: qref.pack_nibbles(np.array([16], np.uint8)), ValueError, "codes"),
    ("pack pad 16", lambda: qref.pack_nibbles(np.array([1], np.uint8), 16), ValueError, "pad_code"),
    ("pack pad -1", lambda: qref.pack_nibbles(np.array([1], np.uint8), -1), ValueError, "pad_code"),
    ("pack int64", lambda: qref.pack_nibbles(np.array([1, 2])), TypeError, "codes"),
    ("unpack n too large", lambda: qref.unpack_nibbles(np.zeros(2, np.uint8), 9), ValueError, "n"),
    ("unpack int8", lambda: qref.unpack_nibbles(np.zeros(2, np.int8), 4), TypeError, "packed"),
    # double quantization
    ("dq nan absmax", lambda: qref.double_quantize(np.array([1.0, np.nan], F32)), ValueError, "absmax"),
    ("dq empty", lambda: qref.double_quantize(np.zeros(0, F32)), ValueError, "absmax"),
    ("dq float64", lambda: qref.double_quantize(np.ones(4)), TypeError, "absmax"),
    ("dq inf offset", lambda: qref.double_quantize(np.ones(4, F32), offset=np.inf), ValueError, "offset"),
    # group-wise and GPTQ
    ("gw bits 5", lambda: groupwise.quantize_groupwise(W, 5), ValueError, "bits"),
    ("gw layout", lambda: groupwise.quantize_groupwise(W[:, :40], 4, 32), ValueError, "group_size"),
    ("gw profile", lambda: groupwise.quantize_groupwise(W, 4, 32, "sym"), ValueError, "profile"),
    ("gw 1-D", lambda: groupwise.quantize_groupwise(X, 4, 32), ValueError, "2-D"),
    ("gw nan", lambda: groupwise.quantize_groupwise(np.where(W > 2, np.nan, W).astype(F32), 4, 32), ValueError, "W"),
    (
        "gw range beyond f32",
        lambda: groupwise.quantize_groupwise(np.array([[3e38, -3e38] * 16], F32), 4, 32),
        ValueError,
        "range",
    ),
    ("gw group 0", lambda: groupwise.quantize_groupwise(W, 4, 0), ValueError, "group_size"),
    (
        "gwd codes >= 2^bits",
        lambda: groupwise.dequantize_groupwise(gq(codes=GQ.codes | np.uint8(0x80))),
        ValueError,
        "codes",
    ),
    ("gwd negative scale", lambda: groupwise.dequantize_groupwise(gq(scales=-GQ.scales)), ValueError, "scales"),
    ("gwd nan zeros", lambda: groupwise.dequantize_groupwise(gq(zeros=GQ.zeros * np.nan)), ValueError, "zeros"),
    ("gwd scales shape", lambda: groupwise.dequantize_groupwise(gq(scales=GQ.scales[:, :1])), ValueError, "scales"),
    ("gptq wrong bits", lambda: gptq_pack.from_gptq(gptq_pack.to_gptq(GQ, "v2"), 8, 32, "v2"), ValueError, "bits"),
    (
        "gptq wrong group",
        lambda: gptq_pack.from_gptq(gptq_pack.to_gptq(GQ, "v2"), 4, 64, "v2"),
        ValueError,
        "group_size",
    ),
    (
        "gptq scales overflow f16",
        lambda: gptq_pack.to_gptq(groupwise.quantize_groupwise(W * F32(1e6), 4, 32), "v2"),
        ValueError,
        "scales_dtype",
    ),
    ("gptq fmt", lambda: gptq_pack.to_gptq(GQ, "v3"), ValueError, "fmt"),
    (
        "gptq missing qweight",
        lambda: gptq_pack.from_gptq({"scales": np.ones((2, 8), np.float16)}, 4, 32),
        ValueError,
        "qweight",
    ),
    # QA-LoRA
    ("qalora nan alpha", lambda: qalora.forward(np.ones((1, 64)), GQ, A, B, float("nan")), ValueError, "alpha"),
    ("qalora alpha str", lambda: qalora.forward(np.ones((1, 64)), GQ, A, B, "16"), TypeError, "alpha"),
    ("qalora pooling", lambda: qalora.forward(np.ones((1, 64)), GQ, A, B, 16, "max"), ValueError, "pooling"),
    # low rank, initialisers, allocation
    ("loftq rank 0", lambda: loftq(W64, 0), ValueError, "rank"),
    ("loftq rank 40", lambda: loftq(W64, 40), ValueError, "rank"),
    ("loftq num_iter 0", lambda: loftq(W64, 2, 0), ValueError, "num_iter"),
    ("loftq float16", lambda: loftq(W64.astype(np.float16), 2), TypeError, "W"),
    ("loftq nan", lambda: loftq(W64 * np.nan, 2), ValueError, "W"),
    ("lqlora fisher shape", lambda: lqlora.decompose(W64, 2, fisher=np.ones((2, 2))), ValueError, "fisher"),
    (
        "alloc sizes 0",
        lambda: lqlora.allocate(np.ones((2, 2)), np.ones((2, 2)) * 4, np.zeros(2), 4),
        ValueError,
        "sizes",
    ),
    (
        "alloc sizes < 0",
        lambda: lqlora.allocate(np.ones((2, 2)), np.ones((2, 2)) * 4, -np.ones(2), 4),
        ValueError,
        "sizes",
    ),
    (
        "alloc budget nan",
        lambda: lqlora.allocate(np.ones((2, 2)), np.ones((2, 2)) * 4, np.ones(2), np.nan),
        ValueError,
        "budget",
    ),
    (
        "alloc infeasible",
        lambda: lqlora.allocate(np.ones((2, 2)), np.ones((2, 2)) * 4, np.ones(2), 2),
        ValueError,
        "budget",
    ),
    ("quailora rank", lambda: quailora.calibrated(W64, W64 * 0, 9, np.eye(64)), ValueError, "rank"),
    # storage
    ("storage 32-bit codes", lambda: StorageConfig(absmax_bits=32, blocksize2=256), ValueError, "absmax_bits"),
    ("storage blocksize 0", lambda: StorageConfig(blocksize=0), ValueError, "blocksize"),
    ("storage n -1", lambda: storage_bytes(-1, StorageConfig()), ValueError, "n"),
    # bfloat16 arrays
    ("bf16 bits dtype", lambda: BFloat16Array(np.zeros(3, np.int32)), TypeError, "uint16"),
]


@pytest.mark.parametrize("call,error,word", [row[1:] for row in API], ids=[row[0] for row in API])
def test_api_refuses_with_the_argument_named(call, error, word):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(error) as e:
            call()
    assert word in str(e.value), f"the message does not name {word!r}: {e.value}"


def test_as_dict_returns_arrays_the_caller_owns():
    d = DQ_STATE.as_dict()
    d["absmax"][0] ^= 1
    d["nested_absmax"][0] = 7
    assert DQ_STATE.as_dict()["absmax"][0] != d["absmax"][0] and DQ_STATE.nested.absmax2[0] != 7
    a, b = STATE.as_dict()["quant_map"], STATE.as_dict()["quant_map"]
    assert not np.shares_memory(a, b) and a.flags.writeable


def _backends():
    out = []
    for spec in ("numpy", "torch:cpu"):
        try:
            out.append(get_backend(spec))
        except BackendUnavailable:
            pass
    return out


BACKEND_ROWS = [
    ("rank 40 on 16x32", lambda b: b.svd_factors(b.from_numpy(np.ones((16, 32))), 40), ValueError, "rank"),
    ("rank 0", lambda b: b.svd_factors(b.from_numpy(np.ones((16, 32))), 0), ValueError, "rank"),
    ("rank -1", lambda b: b.loftq(b.from_numpy(np.ones((16, 32))), -1), ValueError, "rank"),
    ("num_iter 0", lambda b: b.loftq(b.from_numpy(np.ones((16, 64))), 2, 0), ValueError, "num_iter"),
    ("pad_code 16", lambda b: b.pack_nibbles(b.from_numpy(np.array([1], np.uint8)), 16), ValueError, "pad_code"),
    ("pad_code -1", lambda b: b.pack_nibbles(b.from_numpy(np.array([1], np.uint8)), -1), ValueError, "pad_code"),
    ("unpack int8", lambda b: b.unpack_nibbles(b.from_numpy(np.zeros(2, np.int8)), 4), TypeError, "packed"),
    (
        "absmax float64",
        lambda b: b.dequantize_blockwise(b.from_numpy(np.zeros(64, np.uint8)), b.from_numpy(np.ones(1)), "nf4", 64),
        TypeError,
        "absmax",
    ),
    ("nan input", lambda b: b.quantize_4bit(b.from_numpy(NAN)), ValueError, "x"),
    ("blocksize 100", lambda b: b.quantize_4bit(b.from_numpy(X), 100), ValueError, "blocksize"),
    ("dq nan offset", lambda b: b.double_quantize(b.from_numpy(np.ones(4, F32)), offset=np.nan), ValueError, "offset"),
    (
        "group range",
        lambda b: b.quantize_groupwise(b.from_numpy(np.array([[3e38, -3e38] * 16], F32)), 4, 32, "gptq-asym"),
        ValueError,
        "range",
    ),
]


@pytest.mark.parametrize("backend", _backends(), ids=lambda b: f"{b.name}:{b.device}")
@pytest.mark.parametrize("call,error,word", [r[1:] for r in BACKEND_ROWS], ids=[r[0] for r in BACKEND_ROWS])
def test_backends_refuse_as_the_reference_does(backend, call, error, word):
    with pytest.raises(error) as e:
        call(backend)
    assert word in str(e.value)


# ---- fuzz: the public API with arbitrary arrays and keyword values ----
ARRAYS = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70),
    ),
    st.lists(st.floats(), max_size=5),
    st.none(),
)
SCALARS = st.one_of(
    st.integers(-5, 5000), st.floats(), st.sampled_from(["nf4", "fp4", "x", "v1", "float16"]), st.none(), st.booleans()
)


def _call(fn, data):
    arrays = [data.draw(ARRAYS) for _ in range(3)]
    kwargs = {k: data.draw(SCALARS) for k in data.draw(st.sets(st.sampled_from(fn[1]), max_size=3))}
    return fn[0](*arrays[: fn[2]], **kwargs)


FUZZ = {
    "quantize_4bit": (qref.quantize_4bit, ("blocksize", "quant_type", "compress_statistics", "quant_storage"), 1),
    "quantize_blockwise": (
        lambda x, **k: qref.quantize_blockwise(x, **{"codebook": qref.get_codebook("nf4"), "blocksize": 64, **k}),
        ("blocksize",),
        1,
    ),
    "pack_nibbles": (qref.pack_nibbles, ("pad_code",), 1),
    "unpack_nibbles": (lambda p, **k: qref.unpack_nibbles(p, **{"n": 4, **k}), ("n",), 1),
    "double_quantize": (qref.double_quantize, ("blocksize", "offset"), 1),
    "quantize_groupwise": (groupwise.quantize_groupwise, ("bits", "group_size", "profile"), 1),
    "loftq": (lambda w, **k: loftq(w, **{"rank": 2, **k}), ("rank", "num_iter", "bits"), 1),
    "allocate": (lambda c, b, s, **k: lqlora.allocate(c, b, s, **{"budget": 4.0, **k}), ("budget",), 3),
}


@pytest.mark.parametrize("name", sorted(FUZZ))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(data=st.data())
def test_fuzz_only_clear_errors(name, data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            out = _call(FUZZ[name], data)
        except (ValueError, TypeError) as e:
            assert str(e), "an error without a message"
            return
    leaves = out if isinstance(out, tuple) else (out,)
    for leaf in leaves:
        values = getattr(leaf, "codes", leaf)
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            assert not np.isnan(values).any(), f"{name} returned NaN for finite input"
