"""Where the torch:cpu kernels' pieces run, side by side in one process: on torch's own OpenMP threads
(the default where backends/cpu_kernels.py builds them with -fopenmp against torch's GNU OpenMP) or on
the Python pool (the fallback), each call alone and each right after a torch op (a sum of 1M float32, on
torch's threads, which leaves them spinning for a while). torch:cpu's quantize_4bit and dequantize_4bit,
4096 x 4096 NF4 block 64, float32 and bfloat16; median (and best) of 30 calls per row, the rows
interleaved round by round.

python asv_bench/cpu_threads.py
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np


def main(n: int = 4096, calls: int = 30, rounds: int = 3) -> int:
    import torch

    from qref.backends import cpu_kernels
    from qref.dtypes import BFloat16Array
    from qref.registry import get_backend

    be = get_backend("torch:cpu")
    if cpu_kernels.parallel_runtime() != "openmp":
        print(f"the kernels run on the Python pool here ({cpu_kernels._failed or 'no shared OpenMP runtime'})")
        return 1
    w = (np.random.default_rng(0).standard_normal((n, n)) * 0.02).astype(np.float32)
    other = torch.rand(1 << 20)
    rows: dict[tuple, list[float]] = {}
    for fmt in ("float32", "bfloat16"):
        x = be.from_numpy(w if fmt == "float32" else BFloat16Array.from_float32(w))
        q = be.quantize_4bit(x, 64, "nf4", False)
        ops = {
            "quantize": lambda x=x: be.quantize_4bit(x, 64, "nf4", False),
            "dequantize": lambda q=q, fmt=fmt: be.dequantize_4bit(q, (n, n), 64, "nf4", fmt),
        }
        for _ in range(rounds):
            for runtime in ("openmp", "threads"):
                cpu_kernels.parallel_runtime = lambda runtime=runtime: runtime  # type: ignore[assignment]
                for op, fn in ops.items():
                    for after in (False, True):
                        times = timed(fn, other if after else None, calls)
                        rows.setdefault((fmt, op, runtime, after), []).extend(times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {n} x {n} NF4 block 64; ms, median (best)")
    print("| input | op | before the call | torch's OpenMP threads | Python pool | pool / OpenMP |")
    print("| --- | --- | --- | --- | --- | --- |")
    for fmt in ("float32", "bfloat16"):
        for op in ("quantize", "dequantize"):
            for after in (False, True):
                omp, pool = rows[fmt, op, "openmp", after], rows[fmt, op, "threads", after]
                m_omp, m_pool = statistics.median(omp), statistics.median(pool)
                print(
                    f"| {fmt} | {op} | {'a torch sum' if after else 'nothing'} | {m_omp:.2f} ({min(omp):.2f}) "
                    f"| {m_pool:.2f} ({min(pool):.2f}) | {m_pool / m_omp:.2f} |"
                )
    return 0


def timed(fn, other, calls: int) -> list[float]:
    """ms of each of `calls` calls of fn (after one untimed), each after other.sum() where other is given."""
    fn()
    out = []
    for _ in range(calls):
        if other is not None:
            other.sum()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


if __name__ == "__main__":
    sys.exit(main())
