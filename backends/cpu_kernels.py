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
hard values. The blocks are split among torch's intra-op thread count of Python threads, a pool per
process (ctypes releases the GIL during a call). Where no compiler works, on a big-endian machine (the
loops store two values as one little-endian word), or with QREF_CPU_KERNELS=0, `codes` and
`dequantize` return None and the eager path runs.
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
MIN_ELEMENTS = 1 << 16  # below this the eager path's few passes cost less than a thread hand-off
MAX_CODES = 16
_state: dict = {}
_failed: list[str] = []
_tables: dict = {}
_CODES = {"torch.float32": "qref_codes4", "torch.bfloat16": "qref_codes4_bf16"}  # input dtype -> kernel
_pools: dict = {}  # (process id, size) -> ThreadPoolExecutor
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("QREF_CPU_KERNELS", "1") != "0" and sys.byteorder == "little" and not _failed


def _compile() -> ctypes.CDLL:
    """Compile SOURCE into a private temporary folder and load it (the folder is removed at once; the
    loaded library stays mapped). Nothing is written outside that folder."""
    cc = os.environ.get("CC") or "cc"
    folder = tempfile.mkdtemp(prefix="qref-cpu4bit-")
    try:
        lib = os.path.join(folder, "cpu4bit.so")
        for extra in (NATIVE, []):
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
    ]
    dll.qref_dequant4.argtypes = dll.qref_dequant4_bf16.argtypes = [ptr, ptr, ptr, i64, i64, i64, ptr]
    dll.qref_huge_pages.argtypes = [ptr, i64]
    for fn in (dll.qref_codes4, dll.qref_codes4_bf16, dll.qref_dequant4, dll.qref_dequant4_bf16, dll.qref_huge_pages):
        fn.restype = None
    return dll


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


def codes(codebook: str, midpoints, order, head):
    """(codes, absmax) of `head` (full, blocksize) float32 or bfloat16 (read as it is, widened exactly)
    on the CPU, or None when the kernels do not apply or are unavailable (the caller then runs the
    eager path). A block holding NaN or Inf has a non-finite absmax: the caller refuses the input on
    it, as on the eager path."""
    if head.numel() < max(MIN_ELEMENTS, 1) or len(order) > MAX_CODES or str(head.dtype) not in _CODES:
        return None
    lib = _lib()
    if lib is None:
        return None
    import torch

    mid, table = _search_table(codebook, midpoints, order)
    head = head.contiguous()
    full, blocksize = head.shape
    out = torch.empty(full * blocksize, dtype=torch.uint8)
    absmax = torch.empty(full, dtype=torch.float32)
    floor = np.float32(ABSMAX_FLOOR)
    args = (blocksize, mid.ctypes.data, table.ctypes.data, len(order) - 1, floor, out.data_ptr(), absmax.data_ptr())
    x, kernel = head.data_ptr(), getattr(lib, _CODES[str(head.dtype)])
    _run([lambda lo=lo, hi=hi: kernel(x, lo, hi, *args) for lo, hi in _split(full, _threads())])
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
    out = torch.empty(n, dtype=getattr(torch, out_dtype))
    lib.qref_huge_pages(out.data_ptr(), out.element_size() * n)
    kernel = lib.qref_dequant4 if out_dtype == "float32" else lib.qref_dequant4_bf16
    args = (packed.data_ptr(), absmax.data_ptr(), values.ctypes.data, blocksize)
    o = out.data_ptr()
    _run([lambda lo=lo, hi=hi: kernel(*args, lo, hi, o) for lo, hi in _split(n, _threads(), blocksize)])
    return out
