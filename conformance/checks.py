"""One function per op of the backend interface: run it on a backend and on the reference, and hold
the backend to the exactness contract (docs/exactness.md). Each raises tally.Mismatch naming the
op, the profile and the first differing element. Inputs are NumPy data; `ref` is the NumPy backend.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

from qref.qalora import pool_factor

from .tally import expect_certified, expect_error, expect_exact

U64 = 2.0**-53  # unit roundoff of float64
FORMATS = ("float32", "float16", "bfloat16")


def _np(backend, a):
    return backend.to_numpy(a)


def quantize_blockwise(bk, ref, x, codebook, blocksize):
    prof, backend = codebook, f"{bk} (block {blocksize})"
    codes, absmax = bk.quantize_blockwise(bk.from_numpy(x), codebook, blocksize)
    r_codes, r_absmax = ref.quantize_blockwise(x, codebook, blocksize)
    expect_exact("quantize_blockwise codes", prof, _np(bk, codes), r_codes, backend)
    expect_exact("quantize_blockwise absmax", prof, _np(bk, absmax), r_absmax, backend)
    for fmt in ("float32", "float16", "bfloat16"):
        out = bk.dequantize_blockwise(codes, absmax, codebook, blocksize, fmt)
        expect_exact(
            "dequantize_blockwise",
            f"{prof} -> {fmt}",
            _np(bk, out),
            ref.dequantize_blockwise(r_codes, r_absmax, codebook, blocksize, fmt),
            backend,
        )


def quantize_4bit(bk, ref, x, quant_type, blocksize, double_quant, out_dtypes=FORMATS):
    """Packed bytes, absmax (or qabsmax, absmax2, offset and the restored absmax), and the dequantized
    values in every output format; a state the reference refuses to dequantize must be refused too."""
    prof = f"{quant_type}{' +dq' if double_quant else ''}"
    shape = np.shape(x.bits if hasattr(x, "bits") else x)
    where = f"{bk} (block {blocksize}, shape {shape})"
    q = bk.quantize_4bit(bk.from_numpy(x), blocksize, quant_type, double_quant)
    r = ref.quantize_4bit(x, blocksize, quant_type, double_quant)
    expect_exact("quantize_4bit packed", prof, _np(bk, q.packed), r.packed, where)
    if double_quant:
        expect_exact("double_quantize qabsmax", prof, _np(bk, q.qabsmax), r.qabsmax, where)
        expect_exact("double_quantize absmax2", prof, _np(bk, q.absmax2), r.absmax2, where)
        expect_exact("double_quantize offset", prof, np.float32(q.offset), np.float32(r.offset), where)
        _restored(bk, ref, q, r, prof, where)
    else:
        expect_exact("quantize_4bit absmax", prof, _np(bk, q.absmax), r.absmax, where)
    for out_dtype in out_dtypes:
        _dequantize_4bit(bk, ref, q, r, shape, blocksize, quant_type, out_dtype, prof, where)


def quantize_4bit_many(bk, ref, xs, quant_type, blocksize, double_quant, out_dtype, bad=None):
    """The batched ops against the reference's single calls, item by item (states, then dequantized values);
    with `bad` (an index) xs[bad] holds a NaN and both must refuse the batch naming that item."""
    prof = f"{quant_type}{' +dq' if double_quant else ''}"
    shapes = [np.shape(x.bits if hasattr(x, "bits") else x) for x in xs]
    where = f"{bk} (block {blocksize}, shapes {shapes})"
    if bad is not None:
        xs = list(xs)
        xs[bad] = _with_nan(xs[bad])
        expect_error(
            "quantize_4bit_many",
            prof,
            ValueError,
            lambda: bk.quantize_4bit_many([bk.from_numpy(x) for x in xs], blocksize, quant_type, double_quant),
            where,
            f"xs[{bad}]: ",
        )
        return
    qs = bk.quantize_4bit_many([bk.from_numpy(x) for x in xs], blocksize, quant_type, double_quant)
    rs = [ref.quantize_4bit(x, blocksize, quant_type, double_quant) for x in xs]
    for i, (q, r) in enumerate(zip(qs, rs)):
        at = f"{where} item {i}"
        expect_exact("quantize_4bit_many packed", prof, _np(bk, q.packed), r.packed, at)
        if double_quant:
            expect_exact("quantize_4bit_many qabsmax", prof, _np(bk, q.qabsmax), r.qabsmax, at)
            expect_exact("quantize_4bit_many absmax2", prof, _np(bk, q.absmax2), r.absmax2, at)
            expect_exact("quantize_4bit_many offset", prof, np.float32(q.offset), np.float32(r.offset), at)
        else:
            expect_exact("quantize_4bit_many absmax", prof, _np(bk, q.absmax), r.absmax, at)
    with np.errstate(over="ignore"):
        try:
            want = [ref.dequantize_4bit(r, s, blocksize, quant_type, out_dtype) for r, s in zip(rs, shapes)]
        except ValueError:  # a restored absmax overflows float32: the batch must be refused too
            call = lambda: bk.dequantize_4bit_many(qs, shapes, blocksize, quant_type, out_dtype)  # noqa: E731
            expect_error("dequantize_4bit_many", f"{prof} -> {out_dtype}", ValueError, call, where)
            return
    outs = bk.dequantize_4bit_many(qs, shapes, blocksize, quant_type, out_dtype)
    for i, (out, w) in enumerate(zip(outs, want)):
        expect_exact("dequantize_4bit_many", f"{prof} -> {out_dtype}", _np(bk, out), w, f"{where} item {i}")


def _with_nan(x):
    """A copy of x (float32, float16 or a BFloat16Array) with a NaN at its middle element."""
    bits = x.bits if hasattr(x, "bits") else x
    out = bits.copy()
    out.reshape(-1)[out.size // 2] = 0x7FC0 if hasattr(x, "bits") else np.nan
    return type(x)(out) if hasattr(x, "bits") else out


def _restored(bk, ref, q, r, prof, where):
    """The restored first-level absmax, compared exactly (a bfloat16 output would hide a 1-ulp error)."""
    with np.errstate(over="ignore"):
        want = ref.double_dequantize(r.qabsmax, r.absmax2, r.offset)
        got = _np(bk, bk.double_dequantize(q.qabsmax, q.absmax2, q.offset))
    expect_exact("double_dequantize", prof, got, want, where)


def _dequantize_4bit(bk, ref, q, r, shape, blocksize, quant_type, out_dtype, prof, where):
    try:
        want = ref.dequantize_4bit(r, shape, blocksize, quant_type, out_dtype)
    except ValueError:  # e.g. a double-quantized absmax that overflows float32: must be refused too
        expect_error(
            "dequantize_4bit",
            f"{prof} -> {out_dtype}",
            ValueError,
            lambda: bk.dequantize_4bit(q, shape, blocksize, quant_type, out_dtype),
            where,
        )
        return
    out = bk.dequantize_4bit(q, shape, blocksize, quant_type, out_dtype)
    expect_exact("dequantize_4bit", f"{prof} -> {out_dtype}", _np(bk, out), want, where)


def double_quant(bk, ref, absmax, codes_seed=0):
    """double_quantize and double_dequantize of a first-level absmax vector (any length: the second
    level's 256-blocks and a tail), then dequantize_4bit of a state built on it: equal, or refused by
    both (a restored absmax that overflows float32)."""
    prof, where = "dynamic, block 256", f"{bk} ({absmax.size} absmax)"
    qa, a2, off = bk.double_quantize(bk.from_numpy(absmax))
    r_qa, r_a2, r_off = ref.double_quantize(absmax)
    expect_exact("double_quantize offset", prof, np.float32(off), np.float32(r_off), where)
    expect_exact("double_quantize qabsmax", prof, _np(bk, qa), r_qa, where)
    expect_exact("double_quantize absmax2", prof, _np(bk, a2), r_a2, where)
    with np.errstate(over="ignore"):
        want = ref.double_dequantize(r_qa, r_a2, r_off)
    expect_exact("double_dequantize", prof, _np(bk, bk.double_dequantize(qa, a2, off)), want, where)
    given = absmax[absmax.size // 2]  # a caller's offset (e.g. another library's mean) is used as given
    g_qa, _, g_off = bk.double_quantize(bk.from_numpy(absmax), offset=given)
    r_g_qa, _, r_g_off = ref.double_quantize(absmax, offset=given)
    expect_exact("double_quantize given offset", prof, _np(bk, g_qa), r_g_qa, where)
    expect_exact("double_quantize given offset", prof, np.float32(g_off), np.float32(r_g_off), where)
    blocksize = 32
    n = absmax.size * blocksize
    packed = np.random.default_rng(codes_seed).integers(0, 256, (n + 1) // 2, dtype=np.uint8)
    from qref.backend import FourBit

    r_state = FourBit(packed, None, r_qa, r_a2, r_off)
    state = FourBit(bk.from_numpy(packed), None, bk.from_numpy(r_qa), bk.from_numpy(r_a2), r_off)
    _dequantize_4bit(bk, ref, state, r_state, (n,), blocksize, "nf4", "float32", "nf4 +dq", where)


def nibbles(backend, ref, codes, pad_code):
    packed = backend.pack_nibbles(backend.from_numpy(codes), pad_code)
    expect_exact("pack_nibbles", "high nibble first", _np(backend, packed), ref.pack_nibbles(codes, pad_code), backend)
    expect_exact(
        "unpack_nibbles", "high nibble first", _np(backend, backend.unpack_nibbles(packed, codes.size)), codes, backend
    )


def mean_offset(backend, ref, absmax):
    expect_exact(
        "double_quantize offset",
        "exact mean",
        np.float32(backend.mean_offset(backend.from_numpy(absmax))),
        np.float32(ref.mean_offset(absmax)),
        backend,
    )


def groupwise(bk, ref, W, bits, group_size, profile):
    prof = f"{profile}/int{bits}"
    backend = f"{bk} (group {group_size}, shape {W.shape})"
    got = bk.quantize_groupwise(bk.from_numpy(W), bits, group_size, profile)
    want = ref.quantize_groupwise(W, bits, group_size, profile)
    for name, g, w in zip(("codes", "scales", "zeros"), got, want):
        expect_exact(f"quantize_groupwise {name}", prof, _np(bk, g), w, backend)
    deq = bk.dequantize_groupwise(*got, group_size, profile)
    expect_exact(
        "dequantize_groupwise", prof, _np(bk, deq), ref.dequantize_groupwise(*want, group_size, profile), backend
    )
    # float64 is exact here (float32 scale times a small integer, one rounding for min-max's + z): the
    # backend's float64 values equal the exact rational ones of the reference API, rounded once
    from qref import groupwise as gw

    exact = gw.dequantize_groupwise(gw.GroupQuant(*want, bits, group_size, profile), exact=True)
    expect_exact("dequantize_groupwise (exact)", prof, _np(bk, deq), exact.astype(np.float64), backend)
    return want


def qalora(backend, ref, W, bits, group_size, profile, rank, pooling, seed):
    """Merge and forward: float64 reductions, held to elementwise error bounds (exactness.md)."""
    prof = f"{profile}/{pooling}"
    codes, scales, zeros = ref.quantize_groupwise(W, bits, group_size, profile)
    d_out, d_in = W.shape
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rank, d_in // group_size))
    B = rng.standard_normal((d_out, rank)) * 0.01
    x = rng.standard_normal((3, d_in))
    alpha = 16
    bk = [backend.from_numpy(a) for a in (codes, scales, zeros, A, B, x)]
    shift = _np(backend, backend.qalora_zero_shift(bk[1], bk[3], bk[4], alpha, group_size, d_in, profile, pooling))
    r_shift = ref.qalora_zero_shift(scales, A, B, alpha, group_size, d_in, profile, pooling)
    coef = abs(float(Fraction(alpha) / rank * pool_factor(pooling, d_in, group_size)))
    mag = coef * (np.abs(B) @ np.abs(A)) / (1.0 if profile == "minmax" else np.abs(scales))
    bound = 2 * (rank + 3) * U64 * mag
    err = np.abs(shift - r_shift)
    expect_certified(
        "qalora merge (zero shift)",
        prof,
        bool((err <= bound).all()),
        f"max error {err.max():.3g} > bound {bound.max():.3g}",
        backend,
    )
    # the spec's merge (qref.qalora.merge) in exact rational arithmetic: the same shift, within the bound
    from qref import groupwise as gw
    from qref import qalora as qa

    spec = qa.merge(gw.GroupQuant(codes, scales, zeros, bits, group_size, profile), A, B, alpha, pooling, "exact")
    err = np.abs(shift - (spec.zeros - gw.as_fractions(zeros)).astype(np.float64))
    expect_certified(
        "qalora merge (spec, exact)",
        prof,
        bool((err <= bound).all()),
        f"max error {err.max():.3g} > bound {bound.max():.3g}",
        backend,
    )
    y = _np(
        backend, backend.qalora_forward(bk[5], bk[0], bk[1], bk[2], bk[3], bk[4], alpha, group_size, profile, pooling)
    )
    r_y = ref.qalora_forward(x, codes, scales, zeros, A, B, alpha, group_size, profile, pooling)
    Wd = np.abs(ref.dequantize_groupwise(codes, scales, zeros, group_size, profile))
    pooled = np.abs(x).reshape(3, -1, group_size).sum(-1)
    mag = np.abs(x) @ Wd.T + (pooled @ np.abs(A).T) @ np.abs(B).T * alpha / rank
    bound = 2 * (d_in + rank + 4) * U64 * mag
    err = np.abs(y - r_y)
    expect_certified(
        "qalora forward",
        prof,
        bool((err <= bound).all()),
        f"max error {err.max():.3g} > bound {bound.max():.3g}",
        backend,
    )


def svd_factors(backend, ref, R, rank):
    """Eckart-Young certificate: ||R - L Rt||_F^2 = sum of the discarded sigma^2, and L^T L = Rt Rt^T."""
    L, Rt = (_np(backend, a) for a in backend.svd_factors(backend.from_numpy(R), rank))
    s = np.linalg.svd(R, compute_uv=False)
    tail = float((s[rank:] ** 2).sum())
    resid = float(np.linalg.norm(R - L @ Rt) ** 2)
    tol = 64 * max(R.shape) * 2.0**-52 * float((s**2).sum())
    balance = np.abs(L.T @ L - Rt @ Rt.T).max()
    ok = L.shape == (R.shape[0], rank) and Rt.shape == (rank, R.shape[1]) and abs(resid - tail) <= tol
    ok = ok and balance <= 1e-9 * max(s[0], 1e-300)
    expect_certified(
        "svd_factors",
        "float64",
        ok,
        f"||R-LRt||^2 {resid:.6g} vs tail {tail:.6g} (tol {tol:.2g}), balance {balance:.2g}",
        backend,
    )


def _out(backend, result: dict) -> dict:
    return {k: _np(backend, v) if not isinstance(v, (float, list)) else v for k, v in result.items()}


def _balance(B, A) -> float:
    """How far factors are from the balanced split B = U sqrt(S), A = sqrt(S) V^T: |B^T B - A A^T| / s_1."""
    s1 = max(float(np.linalg.norm(B @ A, 2)), 1e-300)
    return float(np.abs(B.T @ B - A @ A.T).max()) / s1


def initialisers(backend, ref, W, rank, bits, X, num_iter=2, fisher=None):
    """LoftQ / LQ-LoRA / QuAILoRA: the quantizer exact on the backend's own input, the factors in the
    spec's balanced split (LoftQ, PEFT's layout), the final SVD or solve optimal (certificate), the
    objective within 1e-6 relative of the reference's; LQ-LoRA with and without Fisher weights."""
    prof = f"nf{bits}"
    out = _out(backend, backend.loftq(backend.from_numpy(W), rank, num_iter, bits))
    r_out = ref.loftq(W, rank, num_iter, bits)
    expect_exact("loftq Q", prof, out["Q"], ref.nf_quantize(out["quantized_from"], bits), backend)
    err = float(np.linalg.norm(W - out["Q"] - out["lora_B"] @ out["lora_A"]))
    expect_certified(
        "loftq error",
        prof,
        abs(err - r_out["error"]) <= 1e-6 * r_out["error"] + 1e-12,
        f"{err!r} vs reference {r_out['error']!r}",
        backend,
    )
    fast = _out(backend, backend.loftq(backend.from_numpy(W), rank, num_iter, bits, svd="randomized"))
    expect_exact("loftq Q (randomized)", prof, fast["Q"], ref.nf_quantize(fast["quantized_from"], bits), backend)
    f_err = float(np.linalg.norm(W - fast["Q"] - fast["lora_B"] @ fast["lora_A"]))
    expect_certified(
        "loftq error (randomized)",
        prof,
        f_err <= 1.02 * r_out["error"] + 1e-12,
        f"{f_err!r} vs full-SVD reference {r_out['error']!r} (2% allowed)",
        backend,
    )
    balance = _balance(out["lora_B"], out["lora_A"])
    expect_certified("loftq factor split", prof, balance <= 1e-9, f"B^T B - A A^T = {balance:.3g} s_1", backend)
    wprof = prof + (" fisher" if fisher is not None else "")
    f_b = None if fisher is None else backend.from_numpy(fisher)
    lq = _out(backend, backend.lqlora(backend.from_numpy(W), rank, bits, max_iter=5, fisher=f_b))
    r_lq = ref.lqlora(W, rank, bits, max_iter=5, fisher=fisher)
    expect_exact("lqlora Q", wprof, lq["Q"], ref.nf_quantize(lq["quantized_from"], bits, 64, 256), backend)
    expect_certified(
        "lqlora error",
        wprof,
        abs(lq["error"] - r_lq["error"]) <= 1e-6 * r_lq["error"] + 1e-12,
        f"{lq['error']!r} vs reference {r_lq['error']!r}",
        backend,
    )
    C = X.T @ X / X.shape[0] + 1e-3 * np.eye(X.shape[1])
    Q = r_out["Q"]
    qa = backend.quailora(*(backend.from_numpy(a) for a in (W, Q)), rank, backend.from_numpy(C), max_iter=20)
    A, B = _np(backend, qa["lora_A"]), _np(backend, qa["lora_B"])
    r_qa = ref.quailora(W, Q, rank, C, max_iter=20)
    R = W - Q
    normal = np.abs(B @ (A @ C @ A.T) - R @ C @ A.T).max() / max(np.abs(R @ C @ A.T).max(), 1e-300)
    J = float((((R - B @ A) @ C) * (R - B @ A)).sum())
    ok = normal <= 1e-7 and abs(J - r_qa["objective"]) <= 1e-6 * r_qa["objective"] + 1e-12
    expect_certified(
        "quailora calibrated",
        prof,
        ok,
        f"J {J!r} vs reference {r_qa['objective']!r}; normal-equation residual {normal:.2g}",
        backend,
    )


def randomized_factors(backend, ref, R, rank):
    """svd="randomized": the factors are within 1e-6 ||R||_F of the best rank-r fit (Eckart-Young gap)
    and balanced (exactness.md)."""
    L, Rt, _ = backend.svd_factors_randomized(backend.from_numpy(R), rank)
    L, Rt = _np(backend, L), _np(backend, Rt)
    s = np.linalg.svd(R, compute_uv=False)
    norm = max(float(np.linalg.norm(R)), 1e-300)
    gap = (float(np.linalg.norm(R - L @ Rt)) - float(np.sqrt((s[rank:] ** 2).sum()))) / norm
    ok = L.shape == (R.shape[0], rank) and Rt.shape == (rank, R.shape[1]) and abs(gap) <= 1e-6
    expect_certified("svd_factors_randomized", "float64", ok, f"Eckart-Young gap {gap:.3g}", backend)


def allocation(backend, costs, bits, sizes, budget):
    """The ILP's choice: feasible (its bits within the budget), its reported bits and objective those
    of the choice, and optimal (equal to brute force over all assignments)."""
    alloc = backend.allocate(costs, bits, sizes, budget)
    m, k = costs.shape
    choice = np.asarray(alloc.choice)
    achieved = float((sizes * bits[np.arange(m), choice]).sum() / sizes.sum())
    obj = float(costs[np.arange(m), choice].sum())
    best = min(
        sum(costs[i, c] for i, c in enumerate(ch))
        for ch in itertools.product(range(k), repeat=m)
        if sum(sizes[i] * bits[i, c] for i, c in enumerate(ch)) <= budget * sizes.sum() + 1e-9
    )
    ok = achieved <= budget + 1e-9 and abs(alloc.bits_per_parameter - achieved) <= 1e-9 * max(1, achieved)
    ok = ok and abs(alloc.objective - obj) <= 1e-9 * max(1, abs(obj)) and abs(obj - best) <= 1e-9 * max(1, abs(best))
    expect_certified(
        "lqlora allocate (ILP)",
        "host (scipy milp)",
        ok,
        f"choice {choice.tolist()}: objective {obj!r} (reported {alloc.objective!r}) vs brute force {best!r}; "
        f"bits {achieved!r} (reported {alloc.bits_per_parameter!r}) vs budget {budget!r}",
        backend,
    )


def error_contract(bk, ref, op: str, call_ref, call_bk):
    """The reference refuses this input (ValueError or TypeError); the backend must raise the same type."""
    try:
        call_ref()
    except (ValueError, TypeError) as e:
        expect_error(op, "input errors", type(e), call_bk, bk)
        return
    raise AssertionError(f"the reference accepted the bad input of the {op} case")


def reference_api(bk, ref, x, quant_type, blocksize, double_quant, storage):
    """The backend's 4-bit state is the one the user-facing reference API writes and reads: the bytes
    and statistics of qref.quantize_4bit (any quant_storage view), and qref.dequantize_4bit of that
    state, also after a round trip through bitsandbytes' serialised dict, equal the backend's output."""
    import qref
    from qref.packing import from_storage

    prof = f"{quant_type}{' +dq' if double_quant else ''} as {storage}"
    shape = np.shape(x.bits if hasattr(x, "bits") else x)
    where = f"{bk} (block {blocksize}, shape {shape})"
    q = bk.quantize_4bit(bk.from_numpy(x), blocksize, quant_type, double_quant)
    try:
        packed, state = qref.quantize_4bit(
            x, blocksize, quant_type, compress_statistics=double_quant, quant_storage=storage
        )
    except ValueError:  # the bytes do not fill whole storage elements: the reference refuses the view
        storage = "uint8"
        packed, state = qref.quantize_4bit(x, blocksize, quant_type, compress_statistics=double_quant)
    expect_exact("quantize_4bit (API) packed", prof, _np(bk, q.packed).reshape(-1), from_storage(packed), where)
    if double_quant:
        expect_exact("quantize_4bit (API) qabsmax", prof, _np(bk, q.qabsmax), state.absmax, where)
        expect_exact("quantize_4bit (API) absmax2", prof, _np(bk, q.absmax2), state.nested.absmax2, where)
        expect_exact("quantize_4bit (API) offset", prof, np.float32(q.offset), np.float32(state.nested.offset), where)
    else:
        expect_exact("quantize_4bit (API) absmax", prof, _np(bk, q.absmax), state.absmax, where)
    loaded = qref.QuantState.from_dict(state.as_dict(packed=True))
    for fmt in FORMATS:
        try:
            want = qref.dequantize_4bit(packed, loaded, fmt)
        except ValueError:
            expect_error(
                "dequantize_4bit (API)",
                f"{prof} -> {fmt}",
                ValueError,
                lambda: bk.dequantize_4bit(q, shape, blocksize, quant_type, fmt),
                where,
            )
            continue
        got = _np(bk, bk.dequantize_4bit(q, shape, blocksize, quant_type, fmt))
        expect_exact("dequantize_4bit (API)", f"{prof} -> {fmt}", got, want, where)
