"""The generated bad-input table: every public function and every backend op, each argument given the
standard bad values of its kind (array-api-tests' special cases are the model). Each case asserts the
exception type and that the message names the argument; backend ops run on every backend available
here. The hand-written rows of tests/test_bad_inputs.py add the cases a kind cannot describe.

A kind is a list of (label, bad value from the valid one, exception). `arg` names the argument a
message must hold (a word of it, for nested names such as the state's fields)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

import qref
from qref import gptq_pack, groupwise, lqlora, qalora, quailora
from qref.loftq import loftq
from qref.registry import BackendUnavailable, get_backend
from qref.storage import StorageConfig, storage_bytes

F32 = np.float32
RNG = np.random.default_rng(1)
X = RNG.standard_normal(300).astype(F32)
W = RNG.standard_normal((8, 64)).astype(F32)
W64 = W.astype(np.float64)
CODES = RNG.integers(0, 16, 300).astype(np.uint8)
ABSMAX = np.abs(RNG.standard_normal(5)).astype(F32) + F32(0.5)
PACKED, STATE = qref.quantize_4bit(X, 64, "nf4")
GQ = groupwise.quantize_groupwise(W, 4, 32)
A, B = RNG.standard_normal((2, 2)), RNG.standard_normal((8, 2))


def _with(v, i, value):
    out = v.copy()
    out.flat[i] = value
    return out


FLOAT_ARRAY = [  # an input array of float32, float16 or bfloat16 values
    ("NaN", lambda v: _with(v, v.size // 2, np.nan), ValueError),
    ("+Inf last", lambda v: _with(v, v.size - 1, np.inf), ValueError),
    ("-Inf first", lambda v: _with(v, 0, -np.inf), ValueError),
    ("empty", lambda v: v.reshape(-1)[:0], ValueError),
    ("float64", lambda v: v.astype(np.float64), TypeError),
    ("int32", lambda v: v.astype(np.int32), TypeError),
    ("bool", lambda v: v > 0, TypeError),
    ("complex64", lambda v: v.astype(np.complex64), TypeError),
    ("object", lambda v: v.astype(object), TypeError),
    ("list", lambda v: v.tolist(), TypeError),
    ("None", lambda v: None, TypeError),
    ("numpy scalar", lambda v: v.reshape(-1)[0], TypeError),
]
FLOAT64_MATRIX = [  # a float64 (or float32) matrix for the solvers
    ("NaN", lambda v: _with(v, 3, np.nan), ValueError),
    ("Inf", lambda v: _with(v, 0, np.inf), ValueError),
    ("1-D", lambda v: v.reshape(-1), ValueError),
    ("3-D", lambda v: v.reshape(1, *v.shape), ValueError),
    ("empty", lambda v: v[:0], ValueError),
    ("float16", lambda v: v.astype(np.float16), TypeError),
    ("int64", lambda v: v.astype(np.int64), TypeError),
    ("complex128", lambda v: v.astype(np.complex128), TypeError),
    ("object", lambda v: v.astype(object), TypeError),
    ("None", lambda v: None, TypeError),
]
UINT8_CODES = [  # codes or packed bytes: uint8 only, never cast
    ("int64", lambda v: v.astype(np.int64), TypeError),
    ("int8", lambda v: v.astype(np.int8), TypeError),
    ("uint16", lambda v: v.astype(np.uint16), TypeError),
    ("float32", lambda v: v.astype(F32), TypeError),
    ("bool", lambda v: v > 7, TypeError),
    ("list", lambda v: v.tolist(), TypeError),
    ("None", lambda v: None, TypeError),
    ("str", lambda v: "codes", TypeError),
    ("dict", lambda v: {"codes": v}, TypeError),
    ("numpy scalar", lambda v: v.reshape(-1)[0], TypeError),
]
FLOAT32_VECTOR = [  # absmax: float32, 1-D, the right length, finite
    ("NaN", lambda v: _with(v, 0, np.nan), ValueError),
    ("Inf", lambda v: _with(v, v.size - 1, np.inf), ValueError),
    ("one short", lambda v: v[:-1], ValueError),
    ("one long", lambda v: np.append(v, F32(1)), ValueError),
    ("2-D", lambda v: v.reshape(1, -1), ValueError),
    ("float64", lambda v: v.astype(np.float64), TypeError),
    ("float16", lambda v: v.astype(np.float16), TypeError),
    ("int32", lambda v: v.astype(np.int32), TypeError),
    ("list", lambda v: v.tolist(), TypeError),
    ("None", lambda v: None, TypeError),
]
NOT_AN_INT = [  # values of the wrong type for any integer argument
    ("2.5", lambda v: 2.5, TypeError),
    ("float of v", lambda v: float(v), TypeError),
    ("True", lambda v: True, TypeError),
    ("str", lambda v: str(v), TypeError),
    ("None", lambda v: None, TypeError),
    ("list", lambda v: [v], TypeError),
]
POSITIVE_INT = [  # block and group sizes, iteration counts
    ("0", lambda v: 0, ValueError),
    ("-1", lambda v: -1, ValueError),
    ("-v", lambda v: -v, ValueError),
    *NOT_AN_INT,
    ("complex", lambda v: complex(v), TypeError),
]
COUNT = [  # a number of elements, 0 allowed
    ("-1", lambda v: -1, ValueError),
    ("-v", lambda v: -v - 1, ValueError),
    *NOT_AN_INT,
    ("numpy float", lambda v: np.float64(v), TypeError),
    ("complex", lambda v: complex(v), TypeError),
]
CHOICE = [  # a value from a fixed list (names, block sizes of a fixed set, bit widths)
    ("unknown", lambda v: "bogus" if isinstance(v, str) else 7, ValueError),
    ("upper case", lambda v: v.upper() if isinstance(v, str) else -v, ValueError),
    ("padded", lambda v: f" {v}", ValueError),
    ("None", lambda v: None, ValueError),
    ("empty string", lambda v: "", ValueError),
    ("list", lambda v: [v], (ValueError, TypeError)),
    ("zero", lambda v: 0, ValueError),
    ("negative", lambda v: -64, ValueError),
    ("float", lambda v: 64.5, ValueError),
    ("bool", lambda v: True, ValueError),
]
RANK = [  # a rank: an int in [1, min(shape)]
    ("0", lambda v: 0, ValueError),
    ("-1", lambda v: -1, ValueError),
    ("beyond min(shape)", lambda v: 10_000, ValueError),
    ("min(shape) + 1", lambda v: 9, ValueError),
    *NOT_AN_INT,
]
FLAG = [  # a bool
    ("int 1", lambda v: 1, TypeError),
    ("int 0", lambda v: 0, TypeError),
    ("str yes", lambda v: "yes", TypeError),
    ("str no", lambda v: "no", TypeError),
    ("str False", lambda v: "False", TypeError),
    ("None", lambda v: None, TypeError),
    ("float", lambda v: 1.0, TypeError),
    ("list", lambda v: [True], TypeError),
    ("numpy array", lambda v: np.array([True, False]), TypeError),
    ("dict", lambda v: {}, TypeError),
]
REAL = [  # a finite real scalar (alpha, offset, budget)
    ("NaN", lambda v: float("nan"), ValueError),
    ("+Inf", lambda v: float("inf"), ValueError),
    ("-Inf", lambda v: float("-inf"), ValueError),
    ("numpy NaN", lambda v: np.float32("nan"), ValueError),
    ("str", lambda v: str(v), TypeError),
    ("None", lambda v: None, TypeError),
    ("list", lambda v: [v], TypeError),
    ("complex", lambda v: complex(v), TypeError),
    ("array", lambda v: np.array([v, v]), TypeError),
    ("dict", lambda v: {}, TypeError),
]


@dataclass
class Fn:
    name: str
    call: object  # (**args) -> result
    args: dict  # argument -> (kind, valid value)
    words: dict = field(default_factory=dict)  # argument -> the word its messages hold, if not its name


def _q4(x, blocksize, quant_type, compress_statistics, quant_storage):
    return qref.quantize_4bit(x, blocksize, quant_type, compress_statistics, quant_storage)


FUNCTIONS = [
    Fn(
        "quantize_4bit",
        _q4,
        {
            "x": (FLOAT_ARRAY, X),
            "blocksize": (CHOICE, 64),
            "quant_type": (CHOICE, "nf4"),
            "compress_statistics": (FLAG, False),
            "quant_storage": (CHOICE, "uint8"),
        },
    ),
    Fn(
        "quantize_blockwise",
        lambda x, blocksize: qref.quantize_blockwise(x, qref.get_codebook("nf4"), blocksize),
        {"x": (FLOAT_ARRAY, X), "blocksize": (POSITIVE_INT, 64)},
    ),
    Fn(
        "dequantize_blockwise",
        lambda codes, absmax, blocksize, out_dtype: qref.dequantize_blockwise(
            codes, absmax, qref.get_codebook("nf4"), blocksize, out_dtype
        ),
        {
            "codes": (UINT8_CODES, CODES),
            "absmax": (FLOAT32_VECTOR, ABSMAX),
            "blocksize": (POSITIVE_INT, 64),
            "out_dtype": (CHOICE, "float32"),
        },
    ),
    Fn(
        "dequantize_4bit",
        lambda packed, out_dtype: qref.dequantize_4bit(packed, STATE, out_dtype),
        {"packed": (UINT8_CODES[4:], PACKED), "out_dtype": (CHOICE[:3] + CHOICE[4:], "float16")},
    ),
    Fn("pack_nibbles", qref.pack_nibbles, {"codes": (UINT8_CODES, CODES), "pad_code": (COUNT, 0)}, {"pad_code": "pad"}),
    Fn("unpack_nibbles", qref.unpack_nibbles, {"packed": (UINT8_CODES, qref.pack_nibbles(CODES)), "n": (COUNT, 300)}),
    Fn(
        "double_quantize",
        lambda absmax, blocksize, offset: qref.double_quantize(absmax, blocksize, None, offset),
        {
            "absmax": (FLOAT32_VECTOR[:2] + FLOAT32_VECTOR[4:], ABSMAX),
            "blocksize": (POSITIVE_INT, 256),
            "offset": (REAL[:5] + REAL[6:], 0.5),
        },
    ),
    Fn("get_codebook", qref.get_codebook, {"name": (CHOICE, "nf4")}, {"name": "codebook"}),
    Fn("storage_bytes", lambda n: storage_bytes(n, StorageConfig()), {"n": (COUNT, 1000)}),
    Fn(
        "StorageConfig",
        StorageConfig,
        {"bits": (POSITIVE_INT, 4), "blocksize": (POSITIVE_INT, 64), "absmax_bits": (POSITIVE_INT, 32)},
    ),
    Fn(
        "quantize_groupwise",
        groupwise.quantize_groupwise,
        {"W": (FLOAT_ARRAY[:3] + FLOAT_ARRAY[4:], W), "bits": (CHOICE, 4), "group_size": (POSITIVE_INT, 32)},
        {"group_size": "group"},
    ),
    Fn(
        "qalora.forward",
        lambda x, alpha, pooling: qalora.forward(x, GQ, A, B, alpha, pooling),
        {"alpha": (REAL, 16.0), "pooling": (CHOICE, "average")},
    ),
    Fn("loftq", loftq, {"W": (FLOAT64_MATRIX, W64), "rank": (RANK, 2), "num_iter": (POSITIVE_INT, 1)}),
    Fn(
        "lqlora.decompose",
        lambda W, rank, max_iter: lqlora.decompose(W, rank, max_iter=max_iter),
        {"W": (FLOAT64_MATRIX, W64), "rank": (RANK, 2), "max_iter": (POSITIVE_INT, 2)},
    ),
    Fn(
        "quailora.calibrated",
        lambda W, rank: quailora.calibrated(W, W64 * 0.9, rank, np.eye(64)),
        {"W": (FLOAT64_MATRIX, W64), "rank": (RANK, 2)},
    ),
    Fn(
        "lqlora.allocate",
        lambda budget: lqlora.allocate(np.ones((2, 2)), np.array([[2.0, 4.0], [2.0, 4.0]]), np.ones(2), budget),
        {"budget": (REAL, 4.0)},
    ),
    Fn(
        "gptq_pack.to_gptq",
        lambda fmt, scales_dtype: gptq_pack.to_gptq(GQ, fmt, scales_dtype),
        {"fmt": (CHOICE, "v1"), "scales_dtype": (CHOICE, "float16")},
    ),
]

# qalora.forward's x: float64 activations accepted; the kinds that do not apply are left out.
FUNCTIONS[11].args["x"] = ([FLOAT64_MATRIX[i] for i in (0, 1, 4, 6, 7, 9)] + UINT8_CODES[5:8], np.ones((2, 64)))


def _defaults(fn: Fn) -> dict:
    return {a: valid for a, (_, valid) in fn.args.items()}


def _rows():
    for fn in FUNCTIONS:
        for arg, (kind, _) in fn.args.items():
            for label, bad, error in kind:
                yield pytest.param(fn, arg, bad, error, id=f"{fn.name}-{arg}-{label}")


def test_every_public_function_has_ten_cases():
    counts: dict[str, int] = {}
    for p in _rows():
        counts[p.values[0].name] = counts.get(p.values[0].name, 0) + 1
    assert all(c >= 10 for c in counts.values()), counts


def test_the_valid_calls_work():
    for fn in FUNCTIONS:
        fn.call(**_defaults(fn))


@pytest.mark.parametrize("fn,arg,bad,error", list(_rows()))
def test_api_bad_input(fn, arg, bad, error):
    kwargs = _defaults(fn)
    kwargs[arg] = bad(kwargs[arg])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(error) as e:
            fn.call(**kwargs)
    word = fn.words.get(arg, arg)
    assert word.lower() in str(e.value).lower(), f"the message does not name {word!r}: {e.value}"


# ---- backend ops: the same kinds, through every backend available here ----
def _backends():
    out = []
    for spec in ("numpy", "torch:cpu", "torch:cuda", "cupy"):
        try:
            out.append(get_backend(spec))
        except BackendUnavailable:
            pass
    return out


def _on(bk, v):
    """A bad value as the backend would get it: arrays converted, other values passed as they are."""
    if isinstance(v, np.ndarray) and v.dtype != object and v.ndim > 0:
        return bk.from_numpy(v)
    return v


BACKEND_OPS = [
    Fn(
        "quantize_4bit",
        lambda bk, x, blocksize, quant_type: bk.quantize_4bit(x, blocksize, quant_type),
        {"x": (FLOAT_ARRAY, X), "blocksize": (CHOICE, 64), "quant_type": (CHOICE, "nf4")},
    ),
    Fn(
        "quantize_blockwise",
        lambda bk, x, codebook: bk.quantize_blockwise(x, codebook, 64),
        {"x": (FLOAT_ARRAY, X), "codebook": (CHOICE, "nf4")},
    ),
    Fn(
        "dequantize_blockwise",
        lambda bk, codes, absmax, out_dtype: bk.dequantize_blockwise(codes, absmax, "nf4", 64, out_dtype),
        {"codes": (UINT8_CODES, CODES), "absmax": (FLOAT32_VECTOR, ABSMAX), "out_dtype": (CHOICE, "float32")},
    ),
    Fn(
        "pack_nibbles",
        lambda bk, codes, pad_code: bk.pack_nibbles(codes, pad_code),
        {"codes": (UINT8_CODES, CODES), "pad_code": (COUNT, 0)},
        {"pad_code": "pad"},
    ),
    Fn(
        "unpack_nibbles",
        lambda bk, packed, n: bk.unpack_nibbles(packed, n),
        {"packed": (UINT8_CODES, qref.pack_nibbles(CODES)), "n": (COUNT, 300)},
    ),
    Fn(
        "quantize_groupwise",
        lambda bk, W, bits, group_size: bk.quantize_groupwise(W, bits, group_size, "gptq-asym"),
        {"W": (FLOAT_ARRAY[:3] + FLOAT_ARRAY[4:], W), "bits": (CHOICE, 4), "group_size": (POSITIVE_INT, 32)},
        {"group_size": "group"},
    ),
    Fn("svd_factors", lambda bk, R, rank: bk.svd_factors(R, rank), {"R": (FLOAT64_MATRIX, W64), "rank": (RANK, 2)}),
    Fn(
        "loftq",
        lambda bk, W, rank, num_iter: bk.loftq(W, rank, num_iter),
        {"W": (FLOAT64_MATRIX, W64), "rank": (RANK, 2), "num_iter": (POSITIVE_INT, 1)},
    ),
]


def _backend_rows():
    for bk in _backends():
        for fn in BACKEND_OPS:
            for arg, (kind, _) in fn.args.items():
                for label, bad, error in kind:
                    yield pytest.param(bk, fn, arg, bad, error, id=f"{bk.name}:{bk.device}-{fn.name}-{arg}-{label}")


@pytest.mark.parametrize("bk,fn,arg,bad,error", list(_backend_rows()))
def test_backend_bad_input(bk, fn, arg, bad, error):
    kwargs = {a: _on(bk, v) for a, (_, v) in fn.args.items()}
    kwargs[arg] = _on(bk, bad(fn.args[arg][1]))
    with pytest.raises(error) as e:
        fn.call(bk, **kwargs)
    word = fn.words.get(arg, arg)
    assert word.lower() in str(e.value).lower(), f"the message does not name {word!r}: {e.value}"
