"""The error contract's cases: bad inputs the reference refuses, each a function (backend, reference,
hypothesis data, numpy Generator) -> (call on the reference, the same call on the backend). The suite's
test_error_contract requires the backend to raise the reference's exception type for every one."""

import numpy as np
from hypothesis import strategies as st


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


def _err_unpack_count(bk, ref, data, rng):
    n = data.draw(st.sampled_from((-1, -2, 2.0, 3.5, True, "4", None)))
    p = np.zeros(1, np.uint8)
    return lambda: ref.unpack_nibbles(p, n), lambda: bk.unpack_nibbles(bk.from_numpy(p), n)


def _err_codes_range(bk, ref, data, rng):
    c = np.append(rng.integers(0, 16, 63), data.draw(st.integers(16, 255))).astype(np.uint8)
    a = np.ones(1, np.float32)
    return (
        lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
        lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
    )


def _err_dq_offset(bk, ref, data, rng):
    a, off = np.abs(_floats(rng, 300)), data.draw(st.sampled_from((np.nan, np.inf, -np.inf, "0.5", [0.5], 1j, True)))
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


def _err_bad_matrix(bk, ref, data, rng):
    R = rng.standard_normal((6, 8))
    fault = data.draw(st.sampled_from(("nan", "inf", "float16", "int64", "list")))
    if fault in ("nan", "inf"):
        R[data.draw(st.integers(0, 5)), data.draw(st.integers(0, 7))] = np.nan if fault == "nan" else np.inf
    elif fault != "list":
        R = R.astype(fault)
    op = data.draw(st.sampled_from(("svd_factors", "loftq", "lqlora")))
    if fault == "list":
        return lambda: getattr(ref, op)(R.tolist(), 1), lambda: getattr(bk, op)(R.tolist(), 1)
    return lambda: getattr(ref, op)(R, 1), lambda: getattr(bk, op)(bk.from_numpy(R), 1)


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
        data.draw(st.sampled_from((16, -1, 255, 1.5, True, "0"))),
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


def _err_group_state(bk, ref, data, rng):
    rows, groups = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    c = rng.integers(0, 16, (rows, 32 * groups)).astype(np.uint8)
    s = rng.uniform(0.5, 2, (rows, groups)).astype(np.float32)
    z = rng.integers(0, 16, (rows, groups)).astype(np.float32)
    fault = data.draw(st.sampled_from(("negative scale", "zero scale", "nan scale", "inf zero", "shape", "dtype")))
    r, g = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, groups - 1))
    if fault == "negative scale":
        s[r, g] = -s[r, g]
    elif fault == "zero scale":
        s[r, g] = 0
    elif fault == "nan scale":
        s[r, g] = np.nan
    elif fault == "inf zero":
        z[r, g] = np.inf
    elif fault == "shape":
        s = s[:, :-1] if groups > 1 else np.concatenate([s, s], axis=1)
    else:
        c = c.astype(np.int64)
    profile = data.draw(st.sampled_from(("gptq-asym", "gptq-sym", "minmax")))
    return (
        lambda: ref.dequantize_groupwise(c, s, z, 32, profile),
        lambda: bk.dequantize_groupwise(bk.from_numpy(c), bk.from_numpy(s), bk.from_numpy(z), 32, profile),
    )


def _err_empty_state(bk, ref, data, rng):
    if data.draw(st.booleans()):
        c, a = np.zeros(0, np.uint8), np.zeros(0, np.float32)
        return (
            lambda: ref.dequantize_blockwise(c, a, "nf4", 64),
            lambda: bk.dequantize_blockwise(bk.from_numpy(c), bk.from_numpy(a), "nf4", 64),
        )
    a = np.zeros(0, np.float32)
    return lambda: ref.double_quantize(a), lambda: bk.double_quantize(bk.from_numpy(a))


def _err_state_not_arrays(bk, ref, data, rng):
    c, a = [1, 2, 3], [1.0]
    if data.draw(st.booleans()):
        return lambda: ref.dequantize_blockwise(c, np.ones(1, np.float32), "nf4", 64), lambda: bk.dequantize_blockwise(
            c, bk.from_numpy(np.ones(1, np.float32)), "nf4", 64
        )
    c8 = np.ones(3, np.uint8)
    return lambda: ref.dequantize_blockwise(c8, a, "nf4", 64), lambda: bk.dequantize_blockwise(
        bk.from_numpy(c8), a, "nf4", 64
    )


ERROR_CASES = {
    "dequantize_groupwise state": _err_group_state,
    "empty codes or absmax": _err_empty_state,
    "dequantize state not arrays": _err_state_not_arrays,
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
    "unpack_nibbles n not a count": _err_unpack_count,
    "dequantize codes beyond the codebook": _err_codes_range,
    "double_quantize non-finite offset": _err_dq_offset,
    "quantize_groupwise layout": _err_group_layout,
    "quantize_groupwise bits": _err_group_bits,
    "quantize_groupwise non-finite": _err_group_non_finite,
    "quantize_groupwise range beyond float32": _err_group_range,
    "rank outside [1, min(shape)]": _err_rank,
    "loftq num_iter < 1": _err_num_iter,
    "low rank: not a matrix": _err_not_a_matrix,
    "low rank: non-finite or wrong dtype": _err_bad_matrix,
}
