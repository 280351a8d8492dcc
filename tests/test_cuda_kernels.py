"""qref's CUDA kernels on their decision points (skipped without a CUDA device and CuPy): the block-64
bucket-table kernel against the reference on every input format, block edges (tails, unaligned
input), non-finite input; the device-side exact mean (double quantization) against
qref.double_quant.offset_from_exponent_sums, rounding ties included."""

import threading

import numpy as np
import pytest

import qref
from qref.double_quant import offset_from_exponent_sums
from qref.dtypes import BFloat16Array
from qref.numpy_backend import NumpyBackend

cp = pytest.importorskip("cupy")
try:
    _GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001
    _GPU = False
pytestmark = pytest.mark.skipif(not _GPU, reason="needs a CUDA device and CuPy")


@pytest.fixture(scope="module")
def cb():
    from qref.backends.cupy_backend import CupyBackend

    return CupyBackend("cuda")


def weights(n, fmt, seed):
    """LLM-like rows (scales spread over 2^-6..2^2), zero blocks, a block of subnormals, ties at midpoints."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.repeat(2.0 ** rng.uniform(-6, 2, -(-n // 64)), 64)[:n]).astype(np.float32)
    if n >= 256:
        x[64:128] = 0.0
        x[128:192] = rng.standard_normal(64) * 1e-40
        mids = qref.get_codebook("nf4").midpoints
        x[192:256] = mids[rng.integers(0, 15, 64)]
        x[192] = 1.0
    return as_format(x, fmt)


def as_format(x, fmt):
    return BFloat16Array.from_float32(x) if fmt == "bfloat16" else x.astype(fmt)


@pytest.mark.parametrize("fmt", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("n", [64, 64 * 1000 + 10, 64 * 8 * 1321, 64 * 8 * 1321 + 1])
@pytest.mark.parametrize("dq", [False, True])
def test_fused_4bit_matches_reference(cb, fmt, quant_type, n, dq):
    x = weights(n, fmt, n % 97)
    ref = NumpyBackend()
    r = ref.quantize_4bit(x, 64, quant_type, dq)
    q = cb.quantize_4bit(cb.from_numpy(x), 64, quant_type, dq)
    assert np.array_equal(cb.to_numpy(q.packed), r.packed)
    if dq:
        assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
        assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax)
        assert np.array_equal(cb.to_numpy(q.absmax2).view(np.int32), r.absmax2.view(np.int32))
    else:
        assert np.array_equal(cb.to_numpy(q.absmax).view(np.int32), r.absmax.view(np.int32))
    for out in ("float32", "float16", "bfloat16"):
        got = cb.to_numpy(cb.dequantize_4bit(q, (n,), 64, quant_type, out))
        want = ref.dequantize_4bit(r, (n,), 64, quant_type, out)
        g = got.bits if isinstance(got, BFloat16Array) else got.view(np.uint16 if out != "float32" else np.uint32)
        w = want.bits if isinstance(want, BFloat16Array) else want.view(np.uint16 if out != "float32" else np.uint32)
        assert np.array_equal(g, w), out


def test_unaligned_input_takes_the_general_kernel(cb):
    x = weights(64 * 50 + 1, "float32", 1)
    r = qref.quantize_4bit(x[1:], 64, "nf4")
    dev = cb.from_numpy(x)[1:]  # 4 bytes past a 256-byte boundary: not 16-byte aligned
    q = cb.quantize_4bit(dev, 64, "nf4")
    assert np.array_equal(cb.to_numpy(q.packed), r[0].reshape(-1))


@pytest.mark.parametrize("fmt", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 64 * 8 * 300 - 1, 64 * 8 * 300 + 5])
def test_non_finite_input_is_refused(cb, fmt, bad, where):
    x = np.random.default_rng(0).standard_normal(64 * 8 * 300 + 10).astype(np.float32)
    x[where] = bad
    dev = cb.from_numpy(as_format(x, fmt))
    for dq in (False, True):
        with pytest.raises(ValueError, match="non-finite"):
            cb.quantize_4bit(dev, 64, "nf4", dq)


@pytest.mark.parametrize("backend", ["cupy", "torch"])
@pytest.mark.parametrize("where", [None, 0, 64 * 8 * 300 - 1, 64 * 8 * 150 + 5])
def test_block64_call_ends_on_its_first_levels_signal(cb, backend, where):
    """The block-64 quantize polls the end signal of its first level's kernel (kernels/common.cuh
    signal_end; a double-quantized call's second level runs after it): a non-finite value anywhere is still
    refused (every CTA's flag write is ordered before the signal), the kernel did signal (fin set), the CTA
    counter is left 0 for the next grid, and the next call's state is the reference's, plain and
    double-quantized, through the CuPy and the torch backend."""
    from qref.backends import cuda_kernels as K

    x = np.random.default_rng(1).standard_normal(64 * 8 * 300).astype(np.float32)
    if where is not None:
        x[where] = np.nan
    if backend == "cupy":
        run, dev = cb.quantize_4bit, cb.from_numpy(x)
    else:
        torch = pytest.importorskip("torch")
        from qref.backends.torch_backend import TorchBackend

        run, dev = TorchBackend("cuda").quantize_4bit, torch.from_numpy(x).cuda()
    ref = NumpyBackend()
    for dq in (False, True):
        if where is not None:
            with pytest.raises(ValueError, match="non-finite"):
                run(dev, 64, "nf4", dq)
        flag = K.Flag.get(cp)
        cp.cuda.runtime.deviceSynchronize()
        mem, _ = flag.counters[0]
        assert int(mem.item()) == 0
        y = np.random.default_rng(2).standard_normal(64 * 8 * 301).astype(np.float32)
        q = run(cb.from_numpy(y) if backend == "cupy" else torch.from_numpy(y).cuda(), 64, "nf4", dq)
        assert flag.value[1] == 1  # the first level's kernel signalled its end
        r = ref.quantize_4bit(y, 64, "nf4", dq)
        got = cb.to_numpy(q.packed) if backend == "cupy" else q.packed.cpu().numpy()
        assert np.array_equal(got, r.packed)


def random_sums(rng):
    sums = np.zeros(277, dtype=np.uint64)
    for _ in range(int(rng.choice([1, 2, 3, 8, 277]))):
        i = int(rng.integers(0, 277))
        sums[i] = rng.choice(
            [
                int(rng.integers(1, 2**63, dtype=np.uint64)),
                (1 << 53) + 1,
                (1 << 54) + 3,
                (1 << 63) - 1,
                1,
                int(rng.integers(1, 2**20)),
            ]
        )
    return sums


def test_device_offset_equals_reference():
    from qref.backends import cuda_kernels as K

    rng = np.random.default_rng(0)
    cases = [(np.zeros(277, np.uint64), 5)]
    tie = np.zeros(277, np.uint64)
    tie[10] = (1 << 53) + 1  # exactly halfway between two doubles: to even
    cases += [(tie, 1), (tie.copy(), 3)]
    sticky = tie.copy()
    sticky[0] = 1  # just above halfway: up
    cases.append((sticky, 1))
    far = np.zeros(277, np.uint64)
    far[200], far[0] = (1 << 53) + 1, 1  # a sticky bit limbs below the leading two (float32 hides it: `double`)
    cases += [(far, 1), (np.full(277, (1 << 63) - 1, np.uint64), 2**31 - 1)]  # every bin full: every carry
    # A float32 midpoint m = (2^24 + 1) 2^200 plus half a float64 ulp plus a bit three limbs down: rounded to
    # float64 with that sticky bit, m + ulp, then float32 rounds up; without it, a float64 tie to even (m),
    # then float32's tie to even rounds down. The cases above end equal in float32 either way.
    double = np.zeros(277, np.uint64)
    double[[224, 200, 171, 21]] = 1
    cases.append((double, 1))
    cases += [(random_sums(rng), int(rng.choice([1, 3, 1000, 2**31 - 1]))) for _ in range(300)]
    for sums, n in cases:
        want = offset_from_exponent_sums(sums.astype(object), n)
        got = K.device_offset(cp.asarray(sums), n)
        assert got.view(np.int32) == np.float32(want).view(np.int32), (np.flatnonzero(sums), n)


@pytest.mark.parametrize("nb", [8 * 2000, 8 * 2000 + 1, 8 * 2000 + 3])
@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"DQ_FUSED": 0},
        {"SUMS_PASS_MIN": 1},
        {"SUMS_PASS_MIN": 1, "PDL": 1},
        {"DQ2_OFFSET": 0},
        {"DQ2_OFFSET": 0, "SUMS_PASS_MIN": 1},
        {"BAR_RELEASE": 0},
    ],
)
def test_fused_sums_of_absmax_equal_reference_exponent_sums(cb, nb, knobs):
    """The windowed per-lane sums and the shared bins, inside quant_lut or in their own kernel (SUMS_PASS_MIN,
    its last nb % 4 absmax included): the exact total of absmax values spread over many exponents
    (2^-140 .. 2^100), zero blocks among them, gives the reference's offset, computed by the one cooperative
    kernel's CTAs (the default; its barrier with full fences instead of acquire-release atomics:
    BAR_RELEASE 0), by quant_dq256's (DQ_FUSED 0, or the sums' own pass; with or without programmatic
    serialization, PDL) or by the summing kernel's last CTA (DQ2_OFFSET 0); a refused input (an inf) leaves
    the workspace fit for the next call, and so does each call."""
    from qref.backends import cuda_kernels as K

    rng = np.random.default_rng(3)
    scales = (2.0 ** rng.integers(-140, 100, nb)).astype(np.float32)
    scales[rng.integers(0, nb, 50)] = 0.0
    x = (rng.uniform(-1, 1, (nb, 64)) * scales[:, None]).astype(np.float32).reshape(-1)
    r = NumpyBackend().quantize_4bit(x, 64, "nf4", True)
    bad = x.copy()
    bad[64 * 7 + 3] = np.inf
    with K.using(K.Module(0, **knobs) if knobs else K.module(0)):
        for _ in range(2):
            with pytest.raises(ValueError, match="non-finite"):
                cb.quantize_4bit(cb.from_numpy(bad), 64, "nf4", True)
            q = cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", True)
            assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
            assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax)
            assert np.array_equal(cb.to_numpy(q.packed), r.packed)


def test_strided_state_is_read_as_its_values(cb):
    """The kernels read raw addresses: a non-contiguous view of a valid state gives the same values."""
    x = weights(64 * 40, "float32", 5)
    q = cb.quantize_4bit(cb.from_numpy(x), 64, "nf4")
    wide = cp.zeros((q.packed.size, 2), dtype=cp.uint8)
    wide[:, 0] = q.packed
    strided = type(q)(wide[:, 0], q.absmax)
    assert not strided.packed.flags.c_contiguous
    assert cp.array_equal(
        cb.dequantize_4bit(strided, (x.size,), 64, "nf4"), cb.dequantize_4bit(q, (x.size,), 64, "nf4")
    )


def test_torch_state_on_the_host_is_refused():
    torch = pytest.importorskip("torch")
    from qref.backends.torch_backend import TorchBackend

    tb = TorchBackend("cuda")
    q = tb.quantize_4bit(torch.randn(64 * 8, device="cuda"), 64, "nf4")
    host = type(q)(q.packed.cpu(), q.absmax)
    with pytest.raises(ValueError, match="packed is on cpu"):
        tb.dequantize_4bit(host, (64 * 8,), 64, "nf4", "float32")


def test_double_quant_paths_interleaved(cb, monkeypatch):
    """The fused (cooperative) launch (the default), the two-kernel path (DQ_FUSED 0, and the fallback when
    the driver refuses the cooperative launch) and the general kernel (unaligned input) share one
    workspace: interleaved, each keeps the reference's bits (the barrier's word over many calls)."""
    from qref.backends import cuda_kernels as K

    ref = NumpyBackend()
    xs = [weights(64 * 8 * 97 + 64 * k, "bfloat16", k) for k in range(3)]
    want = [ref.quantize_4bit(x, 64, "nf4", True) for x in xs]
    unaligned = np.concatenate([np.zeros(1, np.float32), weights(64 * 300, "float32", 9)])
    want_u = ref.quantize_4bit(unaligned[1:], 64, "nf4", True)
    fused = K.Module(0, DQ_FUSED=1)

    def check(q, r):
        assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
        assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax) and np.array_equal(cb.to_numpy(q.packed), r.packed)

    two = K.Module(0, DQ_FUSED=0)
    for mod, refuse in ((fused, False), (two, False), (fused, True), (fused, False), (fused, False)):
        if refuse:
            monkeypatch.setattr(K.Module, "launch_cooperative", lambda *a, **k: False)
        else:
            monkeypatch.undo()
        with K.using(mod):
            for x, r in zip(xs, want):
                q = cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", True)
                check(q, r)
            check(cb.quantize_4bit(cb.from_numpy(unaligned)[1:], 64, "nf4", True), want_u)


def test_second_level_table_read_in_place_or_from_shared_memory(cb):
    """quant_dq256 (DQ_FUSED 0) with its bucket table read through the read-only cache and copied to shared
    memory (DQ2_SHARED=1, the default), one or several blocks loaded per warp (DQ2_BLOCKS), in its compact
    form (DQ2_NEXT=1; in the cooperative kernel too, the default): the reference's bits every way, a tail
    block of absmax included."""
    from qref.backends import cuda_kernels as K

    x = weights(64 * (256 * 37 + 5), "bfloat16", 11)
    r = NumpyBackend().quantize_4bit(x, 64, "nf4", True)
    for mod in (
        K.module(0),
        K.Module(0, DQ_FUSED=0),
        K.Module(0, DQ_FUSED=0, DQ2_NEXT=0, DQ2_SHARED=0),
        K.Module(0, DQ_FUSED=0, DQ2_NEXT=0, DQ2_SHARED=1),
        K.Module(0, DQ_FUSED=0, DQ2_NEXT=0, DQ2_SHARED=0, DQ2_BLOCKS=3),
        K.Module(0, DQ_FUSED=0, DQ2_NEXT=1, DQ2_SHARED=0),
        K.Module(0, DQ_FUSED=0, DQ2_BLOCKS=2),
        K.Module(0, DQ2_NEXT=0),
    ):
        with K.using(mod):
            q = cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", True)
        assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax)
        assert np.array_equal(cb.to_numpy(q.absmax2).view(np.int32), r.absmax2.view(np.int32))


def test_results_outlive_the_next_call(cb):
    """The block-64 path returns views of one allocation and keeps the first level's absmax in reused
    scratch memory: a result stays the reference's after later calls, a larger one (the scratch grows)
    and a smaller one."""
    ref = NumpyBackend()
    xs = [weights(64 * k, "float16", k) for k in (8 * 50, 8 * 4000, 8 * 3)]
    want = [ref.quantize_4bit(x, 64, "nf4", dq) for x in xs for dq in (False, True)]
    got = [cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", dq) for x in xs for dq in (False, True)]
    for q, r, x in zip(got, want, [x for x in xs for _ in range(2)]):
        assert np.array_equal(cb.to_numpy(q.packed), r.packed)
        assert q.packed.size == x.size // 2
        if r.qabsmax is None:
            assert np.array_equal(cb.to_numpy(q.absmax).view(np.int32), r.absmax.view(np.int32))
        else:
            assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax) and q.absmax2.size == r.absmax2.size
            assert np.float32(q.offset) == np.float32(r.offset)


@pytest.mark.parametrize("fmt", ["float32", "float16", "bfloat16"])
def test_wide_kernel_equals_reference(cb, fmt):
    """quant_lut's NEXT lookup compiled for more CTAs an SM (QUANT_WIDE_MIN 1: used at every size here), with
    and without the sums of double quantization: the reference's bits."""
    from qref.backends import cuda_kernels as K

    x = weights(64 * 8 * 300 + 64 * 5, fmt, 12)
    ref = NumpyBackend()
    with K.using(K.Module(0, QUANT_WIDE_MIN=1)):
        for dq in (False, True):
            r, q = ref.quantize_4bit(x, 64, "nf4", dq), cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", dq)
            assert np.array_equal(cb.to_numpy(q.packed), r.packed)
            if dq:
                assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax)
                assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
            else:
                assert np.array_equal(cb.to_numpy(q.absmax).view(np.int32), r.absmax.view(np.int32))


@pytest.mark.parametrize("diag", [1, 2, 3])
def test_a_diagnostic_one_launch_leaves_the_sums_for_the_next_call(cb, diag):
    """The one launch's diagnostic forms (FUSED_DIAG: wrong results, timing only) leave the workspace's sums
    zero, as the kernel does, so a call of another module after them (asv_bench/tune_kernels.py interleaves
    them in one process) still gives the reference's offset and codes."""
    from qref.backends import cuda_kernels as K

    x = weights(64 * 8 * 1321, "bfloat16", 9)
    r = NumpyBackend().quantize_4bit(x, 64, "nf4", True)
    with K.using(K.Module(0, FUSED_DIAG=diag)):
        cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", True)
    q = cb.quantize_4bit(cb.from_numpy(x), 64, "nf4", True)
    assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
    assert np.array_equal(cb.to_numpy(q.qabsmax), r.qabsmax)


@pytest.mark.parametrize("backend", ["cupy", "torch"])
def test_states_of_one_shape_stay_apart(cb, backend):
    """Calls of one shape launch into the state the call before made while it waited (the spare): each
    state keeps its own values after the calls that follow it, refused inputs among them."""
    ref = NumpyBackend()
    if backend == "torch":
        pytest.importorskip("torch")
        from qref.backends.torch_backend import TorchBackend

        bk = TorchBackend("cuda")
    else:
        bk = cb
    xs = [weights(64 * 8 * 50, "float32", 20 + k) for k in range(4)]
    bad = xs[0].copy()
    bad[3] = np.nan
    for dq in (False, True):
        got = []
        for k, x in enumerate(xs):
            got.append(bk.quantize_4bit(bk.from_numpy(x), 64, "nf4", dq))
            if k == 1:  # a refused call of the same shape takes the spare and makes the next one
                with pytest.raises(ValueError, match="non-finite"):
                    bk.quantize_4bit(bk.from_numpy(bad), 64, "nf4", dq)
        for q, x in zip(got, xs):
            r = ref.quantize_4bit(x, 64, "nf4", dq)
            assert np.array_equal(bk.to_numpy(q.packed), r.packed)
            scales = (q.absmax, r.absmax) if not dq else (q.qabsmax, r.qabsmax)
            assert np.array_equal(bk.to_numpy(scales[0]).view(np.uint8), scales[1].view(np.uint8))


def test_non_contiguous_input_is_read_as_its_values(cb):
    x = weights(64 * 8 * 20 * 2, "float32", 4)
    r = NumpyBackend().quantize_4bit(x[::2], 64, "nf4")
    q = cb.quantize_4bit(cb.from_numpy(x)[::2], 64, "nf4")
    assert np.array_equal(cb.to_numpy(q.packed), r.packed)
    assert np.array_equal(cb.to_numpy(q.absmax).view(np.int32), r.absmax.view(np.int32))


def test_verified_state_still_refuses_scales_made_non_finite():
    """torch:cuda's dequantize skips the wait for the non-finite flag only for scales it found finite and
    that are unchanged since: a state made non-finite in place (any view), or a new state at a reused
    address, is checked again and refused; the values stay the reference's."""
    torch = pytest.importorskip("torch")
    from qref.backends.torch_backend import TorchBackend

    tb = TorchBackend("cuda")
    x = torch.randn(64 * 64, device="cuda")
    for dq in (False, True):
        q = tb.quantize_4bit(x, 64, "nf4", dq)
        first = tb.dequantize_4bit(q, (x.numel(),), 64, "nf4", "bfloat16")
        again = tb.dequantize_4bit(q, (x.numel(),), 64, "nf4", "bfloat16")  # no wait: known finite
        assert torch.equal(first, again)
        scale = q.absmax if not dq else q.absmax2
        scale[0] = float("inf")  # in place, through the state's own view
        with pytest.raises(ValueError, match="not finite"):
            tb.dequantize_4bit(q, (x.numel(),), 64, "nf4", "bfloat16")
    bad = type(q)(q.packed, torch.full((64,), float("nan"), device="cuda"))
    with pytest.raises(ValueError, match="not finite"):
        tb.dequantize_4bit(bad, (x.numel(),), 64, "nf4", "float32")


def _in_a_new_thread(fn):
    """fn() run by a thread that has not called CUDA yet; its value, or its exception raised here."""
    out = []

    def run():
        try:
            out.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            out.append((False, e))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


@pytest.mark.parametrize("dq", [False, True])
def test_a_new_threads_first_call_launches(cb, dq):
    """A thread that has not called CUDA yet has no current context, which the kernels' driver launches need:
    a new thread's first call on each backend, a dequantize of a state another thread made ready (the
    prepared launch) or a quantize of a shape quantized before (the known recipe's path), gives the calling
    thread's bytes."""
    torch = pytest.importorskip("torch")
    from qref.backends.torch_backend import TorchBackend

    tb = TorchBackend("cuda")
    x = torch.from_numpy(weights(64 * 512, "float32", 5)).cuda()
    for backend, xin in ((tb, x), (cb, cb.from_numpy(x.cpu().numpy()))):
        q = backend.quantize_4bit(xin, 64, "nf4", dq)
        want = [backend.dequantize_4bit(q, (512, 64), 64, "nf4", "bfloat16") for _ in range(2)][-1]
        got = _in_a_new_thread(lambda b=backend, q=q: b.dequantize_4bit(q, (512, 64), 64, "nf4", "bfloat16"))
        q2 = _in_a_new_thread(lambda b=backend, xin=xin: b.quantize_4bit(xin, 64, "nf4", dq))
        torch.cuda.synchronize()
        assert np.array_equal(_bits(backend.to_numpy(got)), _bits(backend.to_numpy(want)))
        assert np.array_equal(backend.to_numpy(q2.packed), backend.to_numpy(q.packed))


def _bits(a):
    return a.bits if isinstance(a, BFloat16Array) else a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32"])
def test_prepared_dequantize_follows_the_state(dq, out_dtype):
    """Repeated dequantizes of one state take the prepared launch: the reference's values each time (from
    another thread too), the codes read afresh (written in place between calls), a new output per call, on
    the caller's stream; a scale memory swapped behind the version counter is checked again and refused."""
    torch = pytest.importorskip("torch")
    from qref.backends.torch_backend import TorchBackend

    tb, ref = TorchBackend("cuda"), NumpyBackend()
    x = weights(64 * 512, "float32", 9)
    q = tb.quantize_4bit(torch.from_numpy(x).cuda(), 64, "nf4", dq)
    shape = (512, 64)

    def expected():
        arrays = (None if a is None else a.cpu().numpy() for a in (q.packed, q.absmax, q.qabsmax, q.absmax2))
        state = type(q)(*arrays, np.float32(q.offset) if dq else None)
        return _bits(ref.dequantize_4bit(state, shape, 64, "nf4", out_dtype))

    outs = [tb.dequantize_4bit(q, shape, 64, "nf4", out_dtype) for _ in range(3)]
    assert len(tb._fused._ready) >= 1  # the second and third call took the prepared launch
    want = expected()
    assert len({o.data_ptr() for o in outs}) == 3
    for out in outs:
        assert tuple(out.shape) == shape and str(out.dtype) == f"torch.{out_dtype}"
        assert np.array_equal(_bits(tb.to_numpy(out)), want)
    other = _in_a_new_thread(lambda: tb.dequantize_4bit(q, shape, 64, "nf4", out_dtype))  # packs its own parameter
    torch.cuda.synchronize()
    assert np.array_equal(_bits(tb.to_numpy(other)), want)
    q.packed[:100] = 0x11  # codes written in place: read afresh by the prepared launch
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = tb.dequantize_4bit(q, shape, 64, "nf4", out_dtype)
    side.synchronize()
    assert np.array_equal(_bits(tb.to_numpy(out)), expected())
    scale = q.absmax2 if dq else q.absmax
    scale.data = torch.full_like(scale, float("inf"))
    with pytest.raises(ValueError, match="not finite"):
        tb.dequantize_4bit(q, shape, 64, "nf4", out_dtype)
