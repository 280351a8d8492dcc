"""The benchmark workloads, shared by asv, pytest-benchmark and ratio.py: one definition each.

A workload is (setup, run) for an implementation ("qref" or "bitsandbytes") and an op
("quantize" or "dequantize") on an n x n float32 NF4 block-64 matrix.
"""

from __future__ import annotations

import importlib
import os
import time

import numpy as np

import qref

IMPLS = ("qref", "bitsandbytes")
OPS = ("quantize", "dequantize")


def make(impl: str, op: str, n: int = 4096):
    """A zero-argument callable running one op once; raises NotImplementedError if impl is missing."""
    x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    if impl == "qref":
        packed, state = qref.quantize_4bit(x, 64, "nf4")
        if op == "quantize":
            return lambda: qref.quantize_4bit(x, 64, "nf4")
        return lambda: qref.dequantize_4bit(packed, state)
    from qref.conformance.peers import bitsandbytes as bnb

    ok, why = bnb.available()
    if not ok:
        raise NotImplementedError(why)
    import bitsandbytes.functional as F

    xt = bnb.to_torch(x)
    packed_t, state_t = F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
    if op == "quantize":
        return lambda: F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
    return lambda: F.dequantize_4bit(packed_t, state_t)


def best_of(fn, repeats: int = 5) -> float:
    fn()  # warm-up (bitsandbytes compiles its PyTorch kernels on first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ratios(n: int = 4096, repeats: int = 5) -> dict[str, float]:
    """Speed of qref relative to bitsandbytes (bitsandbytes time / qref time), measured in one run."""
    return {op: best_of(make("bitsandbytes", op, n), repeats) / best_of(make("qref", op, n), repeats) for op in OPS}


# ---- backends x device x size x op (asv_bench/benchmarks/backends.py, tests/test_bench_fourbit.py) ----
BACKENDS = ("numpy", "torch:cpu", "torch:cuda", "cupy")
BACKEND_OPS = ("quantize_4bit", "dequantize_4bit", "quantize_4bit+dq", "dequantize_4bit+dq", "quantize_groupwise")
SIZES = (1024, 4096)


def _sync(backend):
    """A callable that waits for the backend's device (no-op on the CPU)."""
    if backend.device.startswith("cuda"):
        if backend.name == "cupy":
            import cupy

            return cupy.cuda.get_current_stream().synchronize
        import torch

        return torch.cuda.synchronize
    return _no_sync


def _no_sync():
    """A CPU backend's op has ended when it returns."""


def traffic(n: int, dq: bool = False, width: int = 2) -> int:
    """Bytes read + written by NF4 block-64 quantize or dequantize of n values of `width` bytes: the
    values, the packed codes and the scales (float32 absmax; or uint8 codes and a float32 absmax per
    256 blocks with double quantization)."""
    blocks = -(-n // 64)
    scale_bytes = blocks + 4 * -(-blocks // 256) if dq else 4 * blocks
    return width * n + (n + 1) // 2 + scale_bytes


#: A backend's op runs this long before it is timed: a new process's first calls are several times slower
#: than later ones, which a timing of a few calls would record: on a GPU (clocks, caches, the allocator),
#: and on a CPU where memory the process has not used before is slow to fault in (on a 2-core virtual
#: machine the first four 4096 x 4096 dequantize calls took 70 ms each, the next ones 5.5 ms).
WARMUP_S = 0.25


def backend_workload(name: str, op: str, n: int):
    """(run, bytes moved, sync) for one backend op on an n x n bfloat16 weight (float32 for
    group-wise), run once already (kernels compiled, tables built: a timing, even asv's single quick
    one, is of the op alone), and again for WARMUP_S; raises NotImplementedError when the
    backend is not available here."""
    check_selected(name)
    run, moved, sync = _backend_workload(name, op, n)
    run()
    sync()
    until = time.perf_counter() + WARMUP_S
    while time.perf_counter() < until:
        run()
        sync()
    return run, moved, sync


def check_selected(name: str) -> None:
    """NotImplementedError (asv: skipped) for a backend outside QREF_ASV_BACKENDS, a comma-separated list,
    where it is set: a GPU machine's record times its GPU backends only, with the same parameters."""
    selected = os.environ.get("QREF_ASV_BACKENDS")
    if selected and name not in selected.split(","):
        raise NotImplementedError(f"{name} is not in QREF_ASV_BACKENDS ({selected})")


def _backend_workload(name: str, op: str, n: int):
    from qref.dtypes import BFloat16Array
    from qref.registry import BackendUnavailable, get_backend

    try:
        be = get_backend(name)
    except BackendUnavailable as exc:
        raise NotImplementedError(str(exc)) from exc
    w32 = (np.random.default_rng(0).standard_normal((n, n)) * 0.02).astype(np.float32)
    if op == "quantize_groupwise":
        W = be.from_numpy(w32)
        groups = n * n // 32
        return (lambda: be.quantize_groupwise(W, 4, 32, "gptq-asym"), 4 * n * n + n * n + 8 * groups, _sync(be))
    x = be.from_numpy(BFloat16Array.from_float32(w32))
    dq = op.endswith("+dq")
    moved = traffic(n * n, dq)
    if op.startswith("quantize"):
        return (lambda: be.quantize_4bit(x, 64, "nf4", dq)), moved, _sync(be)
    q = be.quantize_4bit(x, 64, "nf4", dq)
    return (lambda: be.dequantize_4bit(q, (n, n), 64, "nf4", "bfloat16")), moved, _sync(be)


def copy_gbps(name: str, n: int = 4096) -> float:
    """The device's copy bandwidth for the backend (read + write of an n x n float32 array), GB/s."""
    from qref.registry import get_backend

    be = get_backend(name)
    if be.device.startswith("cuda"):
        import torch

        a = torch.empty(n * n, device="cuda")
        run = a.clone
        sync = torch.cuda.synchronize
    else:
        a = np.ones(n * n, np.float32)
        run, sync = a.copy, (lambda: None)
    return 8 * n * n / timed(run, sync) / 1e9


def timed(run, sync, repeats: int = 5) -> float:
    """Best-of wall time of run() (synchronised), seconds."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


# `history.py record --quick` (CI's smoke run of the suite) runs asv with its forkserver: the suite's modules,
# this one among them, are imported once and every benchmark is forked from that process. Imported here, the
# frameworks the benchmarks' setups import are paid for once instead of in each of about 150 processes.
if os.environ.get("QREF_ASV_PRELOAD"):
    for _name in ("torch", "bitsandbytes"):
        try:
            importlib.import_module(_name)
        except ImportError:
            pass
