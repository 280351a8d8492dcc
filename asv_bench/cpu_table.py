"""The torch:cpu backend against bitsandbytes' CPU kernels, in one run: 4096 x 4096 NF4, block 64,
float32 and bfloat16 input, the median of 9 calls each, the two implementations' calls alternating (so
that a slow spell of a shared machine falls on both; a median, not the best, since a call whose fresh
output the allocator happens to hand back already written skips its page faults), after a warm-up that
also compiles the torch:cpu kernels (backends/cpu_kernels.py). Prints a markdown table of times and
ratios.

python asv_bench/cpu_table.py        # targets: quantize >= 2x, dequantize >= 1x (bitsandbytes time / ours)

Each row's bandwidth counts the bytes it must move (the weight, the packed codes and absmax) and is
compared with the machine's copy bandwidth, measured in the same run into memory already written (no page
faults: the memory's own bandwidth, the physical limit); the write-only fill is printed beside it, and
both into a fresh output each call, as the ops write theirs (advised to fault in huge pages, as the
kernels advise theirs: backends/cpu_kernels.py, `huge_pages`), which is what a fresh output costs here
(the page faults; it varies from run to run with the huge pages the kernel finds).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from workloads import traffic  # noqa: E402


def main(n: int = 4096) -> int:
    import bitsandbytes
    import bitsandbytes.functional as F
    import torch

    from qref.dtypes import BFloat16Array
    from qref.registry import get_backend

    w = (np.random.default_rng(0).standard_normal((n, n)) * 0.02).astype(np.float32)
    be = get_backend("torch:cpu")
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, bitsandbytes "
        f"{bitsandbytes.__version__}; {n} x {n} NF4 block 64, median of 9 alternating calls\n"
    )
    (copy, fill), (copy_fresh, fill_fresh) = limits(n, fresh=False), limits(n, fresh=True)
    print(
        f"physical limits ({n} x {n} float32, into memory already written): copy {copy:.1f} GB/s, fill "
        f"{fill:.1f} GB/s; into a fresh output each call: copy {copy_fresh:.1f} GB/s, fill {fill_fresh:.1f} GB/s\n"
    )
    print(
        "| input | op | bitsandbytes | torch:cpu | bitsandbytes time / torch:cpu time "
        "| torch:cpu GB/s (of copy) | gap to copy |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for fmt in ("float32", "bfloat16"):
        xt = torch.from_numpy(w).to(getattr(torch, fmt))
        x = be.from_numpy(w if fmt == "float32" else BFloat16Array.from_float32(w))
        packed, state = F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
        q = be.quantize_4bit(x, 64, "nf4", False)
        pairs = {
            "quantize": (
                lambda: F.quantize_4bit(xt, blocksize=64, quant_type="nf4"),
                lambda: be.quantize_4bit(x, 64, "nf4", False),
                2.0,
            ),
            "dequantize": (
                lambda: F.dequantize_4bit(packed, state),
                lambda: be.dequantize_4bit(q, (n, n), 64, "nf4", fmt),
                1.0,
            ),
        }
        moved = traffic(n * n, width=4 if fmt == "float32" else 2)  # the weight, the packed codes, absmax
        for op, (theirs, ours, target) in pairs.items():
            t_b, t_o = alternating(theirs, ours)
            ok &= t_b / t_o >= target
            gbps = moved / t_o / 1e9
            print(
                f"| {fmt} | {op} | {t_b * 1e3:.1f} ms | {t_o * 1e3:.1f} ms | {t_b / t_o:.2f} (target {target:g}) "
                f"| {gbps:.1f} ({gbps / copy:.0%}) | {1 - gbps / copy:.0%} |"
            )
    return 0 if ok else 1


def alternating(*fns, calls: int = 9) -> list[float]:
    """Median wall times (s) of `calls` calls of each function, one of each in turn, after one of each."""
    times: list[list[float]] = [[] for _ in fns]
    for k in range(calls + 1):
        for fn, mine in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            if k:
                mine.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def limits(n: int, fresh: bool) -> tuple[float, float]:
    """GB/s of a copy (read + write of n x n float32) and of a write-only fill (set to zero), median of 9:
    into a fresh array each call, advised as the kernels advise their outputs (fresh), or into one array
    written before."""
    import torch

    from qref.backends.cpu_kernels import huge_pages

    a, kept = torch.ones(n * n), torch.zeros(n * n)
    out = (lambda: huge_pages(torch.empty(n * n))) if fresh else (lambda: kept)
    copy, fill = alternating(lambda: out().copy_(a), lambda: out().zero_())
    return 8 * n * n / copy / 1e9, 4 * n * n / fill / 1e9


if __name__ == "__main__":
    sys.exit(main())
