"""One call and a synchronize timed on the host, the way asv's `time_op` takes a sample, back to back and
after an idle pause: on a GPU a call after a pause pays the host's and the device's wake-up, which asv's
single samples include and the GPU table's interleaved rounds do not.

    python asv_bench/after_pause.py [--size 4096] [--calls 200] [--pause-ms 2]
    QREF_SPARE_MAX=0 python asv_bench/after_pause.py     # each call's state allocated in the call
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit

from workloads import backend_workload  # asv_bench/, the script's folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--pause-ms", type=float, default=2.0)
    ap.add_argument("--backends", default="torch:cuda,cupy")
    args = ap.parse_args(argv)
    spare = os.environ.get("QREF_SPARE_MAX", "default")
    for backend in args.backends.split(","):
        for op in ("quantize_4bit", "quantize_4bit+dq"):
            try:
                run, _, sync = backend_workload(backend, op, args.size)
            except NotImplementedError as e:
                print(f"{backend} {op}: skipped ({e})")
                continue

            def one(run=run, sync=sync):
                run()
                sync()

            samples = timeit.Timer(one).repeat(repeat=5, number=1)  # as asv: 5 samples of one call
            paused, tight = [], []
            for _ in range(args.calls):
                time.sleep(args.pause_ms / 1e3)
                t = time.perf_counter()
                one()
                paused.append(time.perf_counter() - t)
            for _ in range(args.calls):
                t = time.perf_counter()
                one()
                tight.append(time.perf_counter() - t)
            print(
                f"SPARE_MAX={spare} {backend:10s} {op:18s} 5 samples: {' '.join(f'{v * 1e6:.0f}' for v in samples)} us;"
                f" after a {args.pause_ms:g} ms pause (median) {statistics.median(paused) * 1e6:.1f} us;"
                f" back to back {statistics.median(tight) * 1e6:.1f} us",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
