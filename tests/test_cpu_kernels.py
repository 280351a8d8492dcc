"""torch:cpu's 4-bit kernels (backends/cpu_kernels.py, kernels/cpu4bit.c) give the reference's bits:
codes, absmax and dequantized values, on large inputs made of the battery's hard values and on every
battery case with the size floor removed, split among torch's OpenMP threads or a Python pool, over any
thread count; a wrong constant in them is caught; without a compiler the eager path gives the same bits;
a forked child runs them on its own pool."""

import hashlib
import time

import numpy as np
import pytest

import qref

torch = pytest.importorskip("torch")

from qref.backends import cpu_kernels  # noqa: E402
from qref.conformance import battery  # noqa: E402
from qref.dtypes import BFloat16Array, as_float32  # noqa: E402
from qref.registry import get_backend  # noqa: E402


def hard_input(quant_type: str, fmt: str, blocksize: int = 64) -> object:
    """Every float32 battery case of this codebook, tiled to just over MIN_ELEMENTS, with a ragged tail."""
    parts = [as_float32(x).reshape(-1) for _, x in battery.cases(quant_type, blocksize)]
    flat = np.concatenate(parts)
    reps = -(-(cpu_kernels.MIN_ELEMENTS + blocksize) // flat.size)
    x = np.tile(flat, reps)[: cpu_kernels.MIN_ELEMENTS + blocksize * 3 + 17]
    return BFloat16Array.from_float32(x) if fmt == "bfloat16" else x.astype(fmt)


@pytest.fixture(scope="module")
def backend():
    if not cpu_kernels.enabled():
        pytest.skip("the CPU kernels are switched off (QREF_CPU_KERNELS=0)")
    if cpu_kernels._lib() is None:
        pytest.skip(f"no C compiler here: {cpu_kernels._failed[0]}")
    return get_backend("torch:cpu")


@pytest.fixture(params=["openmp", "threads"])
def runtime(request, backend, monkeypatch):
    """The kernels' pieces on torch's OpenMP threads (where this build has them) or on the Python pool."""
    if request.param == "openmp" and cpu_kernels.parallel_runtime() != "openmp":
        pytest.skip("the kernels were built without OpenMP here (see test_the_kernels_share_torchs_openmp_threads)")
    monkeypatch.setattr(cpu_kernels, "parallel_runtime", lambda: request.param)
    return request.param


@pytest.fixture
def kernel_calls(monkeypatch):
    """How many times the kernels ran (each call of _launch is one kernel launch over all threads)."""
    calls = []
    launch = cpu_kernels._launch

    def counted(lib, name, *args):
        calls.append(name)
        launch(lib, name, *args)

    monkeypatch.setattr(cpu_kernels, "_launch", counted)
    return calls


def same_as_reference(be, x, blocksize, quant_type, out_dtype, double_quant=False):
    """Quantize and dequantize x on `be` and on the reference (the numpy backend, the same interface);
    assert every array equal bit for bit."""
    ref = get_backend("numpy")
    try:
        r = ref.quantize_4bit(x, blocksize, quant_type, double_quant)
    except ValueError as exc:  # e.g. a float32 case that overflows to Inf in bfloat16: refused by both
        with pytest.raises(ValueError, match="non-finite" if "non-finite" in str(exc) else None):
            be.quantize_4bit(be.from_numpy(x), blocksize, quant_type, double_quant)
        return
    q = be.quantize_4bit(be.from_numpy(x), blocksize, quant_type, double_quant)
    for name in ("packed", "absmax", "qabsmax", "absmax2"):
        ours, theirs = getattr(q, name), getattr(r, name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            assert np.array_equal(be.to_numpy(ours).reshape(-1), np.asarray(theirs).reshape(-1)), name
    try:
        expected = ref.dequantize_4bit(r, x.shape, blocksize, quant_type, out_dtype)
    except ValueError as exc:  # a double-quantized absmax that overflows: refused by both
        with pytest.raises(ValueError, match="non-finite" if "non-finite" in str(exc) else None):
            be.dequantize_4bit(q, x.shape, blocksize, quant_type, out_dtype)
        return
    out = be.to_numpy(be.dequantize_4bit(q, x.shape, blocksize, quant_type, out_dtype))
    assert bits(out) == bits(expected)


def bits(a) -> bytes:
    """The bytes of a float array (bfloat16 as its bits): equality of these is bit-for-bit equality."""
    return np.ascontiguousarray(getattr(a, "bits", a)).tobytes() + str(getattr(a, "dtype", "bf16")).encode()


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_kernels_give_the_references_bits(backend, runtime, kernel_calls, quant_type, fmt):
    x = hard_input(quant_type, fmt)
    for out_dtype in ("float32", "bfloat16", "float16"):
        same_as_reference(backend, x, 64, quant_type, out_dtype)
    assert len(kernel_calls) == 3 + 2  # three quantizes; dequantize to float32 and bfloat16 (float16: eager)


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_unpacked_codes_are_the_references(backend, runtime, kernel_calls, quant_type, fmt):
    """quantize_blockwise's codes, one per byte, from the same kernels (quantize_4bit's are packed)."""
    x = hard_input(quant_type, fmt)
    codes, absmax = backend.quantize_blockwise(backend.from_numpy(x), quant_type, 64)
    ref_codes, ref_absmax = get_backend("numpy").quantize_blockwise(x, quant_type, 64)
    assert np.array_equal(backend.to_numpy(codes).reshape(-1), np.asarray(ref_codes).reshape(-1))
    assert np.array_equal(backend.to_numpy(absmax), np.asarray(ref_absmax))
    assert kernel_calls == ["qref_codes4" if fmt == "float32" else "qref_codes4_bf16"]


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
def test_every_battery_case_without_the_size_floor(backend, runtime, kernel_calls, monkeypatch, blocksize, fmt):
    """Tiny, ragged and odd-length inputs through the kernels: the block edges, the odd last byte."""
    monkeypatch.setattr(cpu_kernels, "MIN_ELEMENTS", 0)
    for quant_type in ("nf4", "fp4"):
        for _, x in battery.cases(quant_type, blocksize):
            x = as_float32(x)
            if fmt == "bfloat16":
                x = BFloat16Array.from_float32(x)
            for out_dtype in ("float32", "bfloat16"):
                same_as_reference(backend, x, blocksize, quant_type, out_dtype, double_quant=True)
    assert kernel_calls


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
def test_non_finite_input_is_refused_on_the_kernel_path(backend, kernel_calls, fmt):
    for bad in (np.nan, np.inf, -np.inf):
        x = as_float32(hard_input("nf4", "float32"))
        x[cpu_kernels.MIN_ELEMENTS // 2] = bad
        x = BFloat16Array.from_float32(x) if fmt == "bfloat16" else x
        with pytest.raises(ValueError, match="non-finite"):
            backend.quantize_4bit(backend.from_numpy(x), 64, "nf4")
    assert len(kernel_calls) == 3


@pytest.mark.parametrize("threads", [1, 3, 7])
def test_any_thread_count_gives_the_references_bits(backend, runtime, kernel_calls, threads):
    """Pieces of uneven length, a last piece shorter or empty (7 threads over few blocks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fmt in ("float32", "bfloat16"):
            for out_dtype in ("float32", "bfloat16"):
                same_as_reference(backend, hard_input("nf4", fmt), 64, "nf4", out_dtype)
    finally:
        torch.set_num_threads(before)
    assert len(kernel_calls) == 8


def test_threads_of_the_caller_run_the_kernels_at_once(backend, runtime, kernel_calls):
    """Four Python threads quantize and dequantize at the same time (ctypes lets go of the GIL: on OpenMP
    each starts a parallel region of its own): every result is the reference's, none waits forever."""
    from concurrent.futures import ThreadPoolExecutor

    inputs = [hard_input(qt, fmt) for qt in ("nf4", "fp4") for fmt in ("float32", "bfloat16")]

    def both(x):
        q = backend.quantize_4bit(backend.from_numpy(x), 64, "nf4")
        return backend.to_numpy(q.packed), backend.to_numpy(backend.dequantize_4bit(q, x.shape, 64, "nf4"))

    with ThreadPoolExecutor(4) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(both, x) for x in inputs for _ in range(3)]]
    for x, (packed, values) in zip([x for x in inputs for _ in range(3)], results):
        ref_packed, state = qref.quantize_4bit(as_float32(x), 64, "nf4")
        assert np.array_equal(packed.reshape(-1), ref_packed.reshape(-1))
        assert bits(values) == bits(qref.dequantize_4bit(ref_packed, state))
    assert len(kernel_calls) == 2 * len(results)


def test_the_kernels_share_torchs_openmp_threads(backend):
    """Where torch runs on GNU OpenMP and the compiler takes -fopenmp, the kernels run on torch's runtime:
    one OpenMP runtime in the process after the library loaded."""
    if not cpu_kernels._torch_gomp():
        pytest.skip(f"torch's OpenMP runtime here: {sorted(cpu_kernels._openmp_runtimes()) or 'none found'}")
    if not hasattr(cpu_kernels._lib(), "qref_dequant4_omp"):
        pytest.skip("the C compiler here refused -fopenmp: the kernels run on the Python pool")
    assert cpu_kernels.parallel_runtime() == "openmp"
    assert len(cpu_kernels._openmp_runtimes()) == 1


def test_a_wrong_midpoint_in_the_kernels_is_caught(backend, monkeypatch):
    cb = qref.codebooks.get_codebook("nf4")
    mid, order = cpu_kernels._search_table("nf4", cb.midpoints, cb.order)
    wrong = mid.copy()
    wrong[7] = np.nextafter(wrong[7], np.float32(1))  # one ulp: only values on that midpoint move
    monkeypatch.setitem(cpu_kernels._tables, ("search", "nf4"), (wrong, order))
    x = hard_input("nf4", "float32")
    packed = backend.to_numpy(backend.quantize_4bit(backend.from_numpy(x), 64, "nf4").packed)
    assert not np.array_equal(packed.reshape(-1), qref.quantize_4bit(x, 64, "nf4")[0].reshape(-1))


@pytest.mark.parametrize("out_dtype", ["float32", "bfloat16"])
def test_a_wrong_code_value_in_the_kernels_is_caught(backend, monkeypatch, out_dtype):
    values = cpu_kernels._values("nf4").copy()
    ulps = 1 if out_dtype == "float32" else 1 << 16  # one unit in the output format's last place
    values[3:4] = (values[3:4].view(np.uint32) - np.uint32(ulps)).view(np.float32)
    monkeypatch.setitem(cpu_kernels._tables, ("values", "nf4"), values)
    x = hard_input("nf4", "float32")
    q = backend.quantize_4bit(backend.from_numpy(x), 64, "nf4")
    out = backend.to_numpy(backend.dequantize_4bit(q, x.shape, 64, "nf4", out_dtype))
    assert bits(out) != bits(qref.dequantize_4bit(*qref.quantize_4bit(x, 64, "nf4"), out_dtype=out_dtype))


def test_without_a_compiler_the_eager_path_gives_the_same_bits(monkeypatch):
    """A compiler that fails: the failure is recorded once, and the eager path answers."""
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(cpu_kernels, "_failed", [])
    assert cpu_kernels._lib() is None and "false failed" in cpu_kernels._failed[0]
    be = get_backend("torch:cpu")
    for out_dtype in ("float32", "bfloat16"):
        same_as_reference(be, hard_input("nf4", "float32"), 64, "nf4", out_dtype)


def test_the_switch_turns_the_kernels_off(monkeypatch, kernel_calls):
    monkeypatch.setenv("QREF_CPU_KERNELS", "0")
    be = get_backend("torch:cpu")
    same_as_reference(be, hard_input("fp4", "float32"), 64, "fp4", "float32")
    assert not kernel_calls


def _pool_in_child(queue, parent_pool):
    pool = cpu_kernels._pool(1)
    done = []
    cpu_kernels._run([lambda: done.append(1), lambda: done.append(2)])
    queue.put((pool is not parent_pool, pool.submit(lambda: 7).result(timeout=10), sorted(done)))


def test_a_forked_child_gets_its_own_pool():
    """The parent's pool threads do not exist in a forked child: a pool inherited as it is takes the
    child's work and never runs it. The kernels' pools are per process. (torch's own ops need
    torch.set_num_threads(1) in such a child, as its DataLoader workers do.)"""

    parent_pool = cpu_kernels._pool(1)
    assert parent_pool.submit(lambda: 7).result() == 7  # a thread, now idle
    time.sleep(0.2)
    assert in_forked_child(_pool_in_child, parent_pool) == (True, 7, [1, 2])


def in_forked_child(target, *args):
    """What target(queue, *args) puts on the queue, run in a forked child (which must end within 30 s)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(queue, *args))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child hung"
    assert child.exitcode == 0
    return queue.get(timeout=10)


def _kernels_in_child(queue, q, n):
    out = cpu_kernels.dequantize("nf4", q.packed.reshape(-1), q.absmax, n, 64, "float32")  # no torch op first
    queue.put((cpu_kernels.parallel_runtime(), hashlib.sha256(out.numpy().tobytes()).hexdigest()))


def test_a_forked_child_runs_the_kernels_on_its_own_pool(backend):
    """After the parent ran the kernels on torch's OpenMP threads, a forked child runs them on its Python
    pool: GNU OpenMP's threads do not exist in the child, and a parallel region there never ends."""
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: no parallel region of several threads to hang")
    x = hard_input("nf4", "float32")
    q = backend.quantize_4bit(backend.from_numpy(x), 64, "nf4")
    expected = cpu_kernels.dequantize("nf4", q.packed.reshape(-1), q.absmax, x.size, 64, "float32")
    digest = hashlib.sha256(expected.numpy().tobytes()).hexdigest()
    assert in_forked_child(_kernels_in_child, q, x.size) == ("threads", digest)


def test_a_big_endian_machine_runs_the_eager_path(monkeypatch, kernel_calls):
    """The loops store a byte's two values as one little-endian word: elsewhere they must not run."""
    monkeypatch.setattr(cpu_kernels.sys, "byteorder", "big")
    same_as_reference(get_backend("torch:cpu"), hard_input("nf4", "float32"), 64, "nf4", "float32")
    assert not kernel_calls
