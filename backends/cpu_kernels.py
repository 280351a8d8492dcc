"""The torch:cpu backend's 4-bit kernels (backends/kernels/cpu4bit.c), compiled at first use.

The eager torch path makes one pass over memory per step (absmax, scale, clamp, bucket, gathers; or
index conversion, gather, scale), which on a few cores is several times slower than one loop. The
loops of kernels/cpu4bit.c do the same arithmetic in one pass per block:

    quantize:   absmax = max |w|;  scaled = clamp(w * RN(1 / max(absmax, floor)), -1, 1);
                code = order[#{j : scaled > m_j}]
    dequantize: out[i] = value[code i] * absmax[i / blocksize]

compiled by the system C compiler (`$CC`, else `cc`) with -O3 -march=native -ffp-contract=off and no
fast-math flag, so each operation is the IEEE float32 one the reference states (bfloat16 input is
widened exactly as it is read); tests/test_cpu_kernels.py holds them to the reference on the battery's
hard values. The blocks are split among torch's intra-op thread count (`_launch`): on torch's own
OpenMP threads where torch's runtime is GNU OpenMP and the compiler takes -fopenmp (the library then
links the runtime torch loaded, so no second pool competes with torch's threads for the cores: a
torch op just before a kernel left its threads spinning, which on two cores doubled a dequantize's
time); else, and in a forked child (GNU OpenMP's threads do not exist there, and its next parallel
region hangs), on a pool of Python threads per process (ctypes releases the GIL during a call). Where
no compiler works, on a big-endian machine (the loops store two values as one little-endian word),
or with QREF_CPU_KERNELS=0, `codes` and `dequantize` return None and the eager path runs.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qref.blockwise import ABSMAX_FLOOR
from qref.codebooks import get_codebook

SOURCE = Path(__file__).with_name("kernels") / "cpu4bit.c"
FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing"]
NATIVE = ["-march=native"]  # the library is built where it runs; tried first, dropped if refused
OPENMP = ["-fopenmp"]  # tried first where torch's runtime is GNU OpenMP (_torch_gomp), dropped if refused
MIN_ELEMENTS = 1 << 16  # below this the eager path's few passes cost less than a thread hand-off
MAX_CODES = 16
_state: dict = {}
_failed: list[str] = []
_tables: dict = {}
_CODES = {"torch.float32": "qref_codes4", "torch.bfloat16": "qref_codes4_bf16"}  # input dtype -> kernel
_pools: dict = {}  # (process id, size) -> ThreadPoolExecutor
_lock = threading.Lock()
_forked: list[int] = []  # set in a forked child: its kernels run on the Python pool
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _forked.append(os.getpid()))


def enabled() -> bool:
    return os.environ.get("QREF_CPU_KERNELS", "1") != "0" and sys.byteorder == "little" and not _failed


def _compile() -> ctypes.CDLL:
    """Compile SOURCE into a private temporary folder and load it (the folder is removed at once; the
    loaded library stays mapped). Nothing is written outside that folder."""
    cc = os.environ.get("CC") or "cc"
    folder = tempfile.mkdtemp(prefix="qref-cpu4bit-")
    first = [NATIVE + OPENMP, OPENMP] if _torch_gomp() else []
    try:
        lib = os.path.join(folder, "cpu4bit.so")
        for extra in (*first, NATIVE, []):
            command = [cc, *FLAGS, *extra, str(SOURCE), "-o", lib]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[:500]}")
        dll = ctypes.CDLL(lib)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    dll.qref_codes4.argtypes = dll.qref_codes4_bf16.argtypes = [
        ptr,
        i64,
        i64,
        i64,
        ptr,
        ptr,
        ctypes.c_int,
        f32,
        ptr,
        ptr,
        ctypes.c_int,
    ]
    dll.qref_dequant4.argtypes = dll.qref_dequant4_bf16.argtypes = [ptr, ptr, ptr, i64, i64, i64, ptr]
    dll.qref_huge_pages.argtypes = [ptr, i64]
    for fn in (dll.qref_codes4, dll.qref_codes4_bf16, dll.qref_dequant4, dll.qref_dequant4_bf16, dll.qref_huge_pages):
        fn.restype = None
    _state["openmp"] = hasattr(dll, "qref_dequant4_omp") and _torch_gomp()  # still torch's runtime alone
    if _state["openmp"]:
        c_int = ctypes.c_int  # the whole range (count) where the pool's kernels take [lo, hi); threads last
        codes = [ptr, i64, i64, ptr, ptr, c_int, f32, ptr, ptr, c_int, c_int]
        dll.qref_codes4_omp.argtypes = dll.qref_codes4_bf16_omp.argtypes = codes
        dll.qref_dequant4_omp.argtypes = dll.qref_dequant4_bf16_omp.argtypes = [ptr, ptr, ptr, i64, i64, ptr, c_int]
        for fn in (dll.qref_codes4_omp, dll.qref_codes4_bf16_omp, dll.qref_dequant4_omp, dll.qref_dequant4_bf16_omp):
            fn.restype = None
    return dll


def _openmp_runtimes() -> set[str]:
    """The OpenMP runtimes mapped into this process (Linux: /proc/self/maps), by file."""
    try:
        with open("/proc/self/maps") as maps:
            files = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return set()
    return {f for f in files if os.path.basename(f).startswith(("libgomp", "libiomp", "libomp"))}


def _torch_gomp() -> bool:
    """torch is loaded and GNU OpenMP is the one OpenMP runtime in the process (the library's -fopenmp
    build then binds to it: the loader reuses the loaded libgomp.so.1)."""
    import torch  # noqa: F401 - loads torch's runtime first

    runtimes = _openmp_runtimes()
    return len(runtimes) == 1 and os.path.basename(runtimes.pop()).startswith("libgomp")


def parallel_runtime() -> str:
    """Where the kernels' pieces run in this process: "openmp" (torch's threads) or "threads" (a pool)."""
    if "lib" not in _state:
        _lib()  # built at first use
    return "openmp" if _state.get("openmp") and not _forked else "threads"


def _launch(lib, name: str, head: tuple, count: int, step: int, tail: tuple) -> None:
    """Kernel `name`(*head, lo, hi, *tail) over [0, count) split among torch's thread count, each piece a
    multiple of `step` long but the last: one OpenMP region (`name`_omp(*head, count, *tail, threads), which
    splits alike) or the Python pool."""
    threads = _threads()
    if parallel_runtime() == "openmp":
        getattr(lib, name + "_omp")(*head, count, *tail, threads)
        return
    kernel = getattr(lib, name)
    _run([lambda lo=lo, hi=hi: kernel(*head, lo, hi, *tail) for lo, hi in _split(count, threads, step)])


def _lib():
    """The loaded kernels, or None (disabled, or compilation failed: recorded once in _failed)."""
    if not enabled():
        return None
    with _lock:  # one build per process, whichever thread asks first
        if "lib" not in _state and not _failed:
            try:
                _state["lib"] = _compile()
            except Exception as exc:  # noqa: BLE001 - no compiler, a failed build: the eager path runs
                _failed.append(f"{type(exc).__name__}: {exc}")
    return _state.get("lib")


def _split(count: int, threads: int, step: int = 1) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering 0..count in about `threads` pieces, each edge a multiple of step."""
    units = -(-count // step)
    per = -(-units // max(1, threads))
    return [(u * step, min(count, (u + per) * step)) for u in range(0, units, per)]


def _run(calls) -> None:
    """Run the zero-argument calls: the first in the caller's thread, the others in a pool of threads
    of this process (a forked child makes its own: the parent's threads do not exist there)."""
    rest = [_pool(len(calls) - 1).submit(c) for c in calls[1:]] if len(calls) > 1 else []
    calls[0]()
    for f in rest:
        f.result()


def _pool(size: int) -> ThreadPoolExecutor:
    key = (os.getpid(), size)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(size, thread_name_prefix="qref-cpu4bit")
    return pool


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def codes(codebook: str, midpoints, order, head, packed: bool = False):
    """(codes, absmax) of `head` (full, blocksize) float32 or bfloat16 (read as it is, widened exactly)
    on the CPU, or None when the kernels do not apply or are unavailable (the caller then runs the
    eager path). packed (blocksize even): the codes two per byte, the first in the high nibble, as
    quantize_4bit packs them. A block holding NaN or Inf has a non-finite absmax: the caller refuses the
    input on it, as on the eager path."""
    if head.numel() < max(MIN_ELEMENTS, 1) or len(order) > MAX_CODES or str(head.dtype) not in _CODES:
        return None
    if packed and head.shape[1] % 2:
        raise ValueError("packed codes need an even block size")
    lib = _lib()
    if lib is None:
        return None
    import torch

    mid, table = _search_table(codebook, midpoints, order)
    head = head.contiguous()
    full, blocksize = head.shape
    out = huge_pages(torch.empty(full * blocksize // (2 if packed else 1), dtype=torch.uint8))
    absmax = torch.empty(full, dtype=torch.float32)
    floor = np.float32(ABSMAX_FLOOR)
    args = (blocksize, mid.ctypes.data, table.ctypes.data, len(order) - 1, floor, out.data_ptr(), absmax.data_ptr())
    args += (int(packed),)
    _launch(lib, _CODES[str(head.dtype)], (head.data_ptr(),), full, 1, args)
    return out, absmax


def _search_table(codebook: str, midpoints, order) -> tuple[np.ndarray, np.ndarray]:
    """The midpoints padded to 16 with +inf (float32) and the code order padded to 16 (uint8)."""
    key = ("search", codebook)
    if key not in _tables:
        mid = np.full(16, np.inf, dtype=np.float32)
        m = np.asarray(midpoints, dtype=np.float32)
        mid[: m.size] = m
        table = np.zeros(16, dtype=np.uint8)
        table[: len(order)] = np.asarray(order, dtype=np.int64)
        _tables[key] = (mid, table)
    return _tables[key]


def _values(quant_type: str) -> np.ndarray:
    """The 16 float32 values of a 4-bit codebook, kept for the kernels' lifetime."""
    key = ("values", quant_type)
    if key not in _tables:
        values = np.ascontiguousarray(get_codebook(quant_type).values, dtype=np.float32)
        if values.shape != (16,):
            raise ValueError(f"{quant_type} is not a 16-code codebook")
        _tables[key] = values
    return _tables[key]


def huge_pages(fresh):
    """`fresh` (a CPU tensor not yet written), its memory advised to fault in 2 MiB pages where the kernels
    are built (a hint, as for the kernels' own outputs; no effect on values)."""
    lib = _lib()
    if lib is not None:
        lib.qref_huge_pages(fresh.data_ptr(), fresh.element_size() * fresh.numel())
    return fresh


def dequantize(quant_type: str, packed, absmax, n: int, blocksize: int, out_dtype: str = "float32"):
    """Values (n,) of the packed codes (uint8, two per byte, high nibble first), each code's value in
    the 16-code codebook times its block's absmax, as float32 or rounded to bfloat16; or None where the
    kernels do not apply (the caller then runs the eager path)."""
    if n < max(MIN_ELEMENTS, 1) or blocksize % 2 or out_dtype not in ("float32", "bfloat16"):
        return None
    lib = _lib()
    if lib is None:
        return None
    import torch

    values = _values(quant_type)
    packed, absmax = packed.contiguous(), absmax.contiguous()
    out = huge_pages(torch.empty(n, dtype=getattr(torch, out_dtype)))
    name = "qref_dequant4" if out_dtype == "float32" else "qref_dequant4_bf16"
    args = (packed.data_ptr(), absmax.data_ptr(), values.ctypes.data, blocksize)
    _launch(lib, name, args, n, blocksize, (out.data_ptr(),))
    return out
