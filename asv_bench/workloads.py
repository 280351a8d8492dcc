"""The benchmark workloads, shared by asv, pytest-benchmark and ratio.py: one definition each.

A workload is (setup, run) for an implementation ("qref" or "bitsandbytes") and an op
("quantize" or "dequantize") on an n x n float32 NF4 block-64 matrix.
"""
from __future__ import annotations

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
    from conformance.peers import bitsandbytes as bnb

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
