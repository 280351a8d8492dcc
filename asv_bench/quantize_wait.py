"""What the wait costs a torch:cuda quantize: whole calls (CUDA events around the call, as the GPU table) and
host time (perf_counter) of a 4096 x 4096 bf16 NF4 quantize, with and without double quantization, as
shipped (the call waits for its kernels' non-finite flag) and with the wait skipped (the flag deferred, as
inside a batch: the figure a call without a wait would have). Median of `--reps` calls.

    python asv_bench/quantize_wait.py [--size 4096x4096] [--reps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gpu_common import bf16_weight, median_ms  # asv_bench/, the script's folder


def host_us(fn, reps: int) -> float:
    import torch

    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3


def main(argv=None) -> int:
    import cupy as cp

    from qref.backends import cuda_kernels as K
    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    tb = TorchBackend("cuda")
    x, _ = bf16_weight(args.size)
    for dq in (False, True):
        fn = lambda dq=dq: tb.quantize_4bit(x, 64, "nf4", dq)  # noqa: E731
        name = f"quantize{' +dq' if dq else ''}"
        whole, host = median_ms(fn, args.reps, 5) * 1e3, host_us(fn, args.reps)
        flag = K.Flag.get(cp)
        flag.deferred = True  # no wait (diagnostics only: a non-finite input would go unnoticed)
        try:
            whole_nw, host_nw = median_ms(fn, args.reps, 5) * 1e3, host_us(fn, args.reps)
        finally:
            flag.deferred = False
        print(
            f"{args.size} {name:12s} whole call {whole:6.1f} us (host {host:6.1f}); "
            f"without the wait {whole_nw:6.1f} us (host {host_nw:6.1f})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
