"""One call and a synchronize timed on the host, the way asv's `time_op` takes a sample, back to back and
after idle pauses: on a GPU a call after a pause pays the host's and the device's wake-up, which asv's
single samples include and the GPU table's interleaved rounds do not.

    python asv_bench/after_pause.py [--size 4096] [--calls 200] [--pause-ms 2] [--pause-ms 0.1 ...]
    python asv_bench/after_pause.py --sync stream      # torch: the current stream's synchronize, not the device's
    QREF_SPARE_MAX=0 python asv_bench/after_pause.py   # each call's state allocated in the call

Per backend, op and pause: the median and quartiles of `calls` samples, and of the call alone (the time to
its return) in the same samples.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit

from workloads import backend_workload  # asv_bench/, the script's folder


def _quartiles(values) -> str:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2 * 1e6:.1f} ({q1 * 1e6:.1f}-{q3 * 1e6:.1f})"


def _stream_sync(backend, sync):
    """torch:cuda's synchronize of its current stream in place of the device's (--sync stream)."""
    if backend != "torch:cuda":
        return sync
    import torch

    return lambda: torch.cuda.current_stream().synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--pause-ms", type=float, action="append", help="repeatable (default 2)")
    ap.add_argument("--backends", default="torch:cuda,cupy")
    ap.add_argument("--ops", default="quantize_4bit,quantize_4bit+dq")
    ap.add_argument("--sync", choices=("device", "stream"), default="device", help="torch:cuda's synchronize")
    args = ap.parse_args(argv)
    pauses = args.pause_ms or [2.0]
    spare = os.environ.get("QREF_SPARE_MAX", "default")
    for backend in args.backends.split(","):
        for op in args.ops.split(","):
            try:
                run, _, sync = backend_workload(backend, op, args.size)
            except NotImplementedError as e:
                print(f"{backend} {op}: skipped ({e})")
                continue
            if args.sync == "stream":
                sync = _stream_sync(backend, sync)

            def one(run=run, sync=sync):
                run()
                sync()

            samples = timeit.Timer(one).repeat(repeat=5, number=1)  # as asv: 5 samples of one call
            head = f"SPARE_MAX={spare} sync={args.sync} {backend:10s} {op:18s}"
            print(f"{head} 5 samples: {' '.join(f'{v * 1e6:.0f}' for v in samples)} us", flush=True)
            for pause in [*pauses, None]:
                whole, call = [], []
                for _ in range(args.calls):
                    if pause is not None:
                        time.sleep(pause / 1e3)
                    t0 = time.perf_counter()
                    run()
                    t1 = time.perf_counter()
                    sync()
                    t2 = time.perf_counter()
                    whole.append(t2 - t0)
                    call.append(t1 - t0)
                what = "back to back" if pause is None else f"after {pause:g} ms"
                print(f"{head} {what}: sample {_quartiles(whole)} us, call {_quartiles(call)} us", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
