"""Side-by-side comparison of kernel knobs (backends/cuda_kernels.KNOBS) in one process on the GPU table's
largest size: every configuration is compiled once, then timed in interleaved rounds next to the device
copy, so the drift between processes and rounds (about 10% on an H100) cancels in the ratios. Each
configuration's bytes are checked against the first (diagnostic ones are expected to differ).

    python asv_bench/tune_kernels.py [--rounds 5] [--size 28672x8192]
"""

from __future__ import annotations

import argparse
import statistics

from gpu_common import median_ms  # asv_bench/, the script's folder

CONFIGS = [{}, {"DQ2_SHARED": 1}, {"CTAS_PER_SM": 16}]


def main(argv=None):
    import cupy as cp
    import numpy as np

    from qref.backends import cuda_kernels as K
    from qref.backends.cupy_backend import CupyBackend, CupyBF16

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="28672x8192")
    args = ap.parse_args(argv)
    r, c = map(int, args.size.split("x"))
    n = r * c
    bits = (cp.random.default_rng(0).standard_normal(n, dtype=cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
    xb = CupyBF16(bits)
    cb = CupyBackend("cuda")
    mods = [K.Module(0, **cfg) for cfg in CONFIGS]

    t = median_ms

    moved = 2 * n + n // 2 + 4 * (n // 64)
    dst = cp.empty_like(bits)
    digests, res = [], {i: {"q": [], "d": [], "qdq": []} for i in range(len(mods))}
    copy = []
    for rnd in range(args.rounds):
        copy.append(4 * n / t(lambda: dst.data.copy_from_device_async(bits.data, bits.nbytes)) / 1e6)
        for i, mod in enumerate(mods):
            with K.using(mod):
                q = cb.quantize_4bit(xb, 64, "nf4")
                if rnd == 0:
                    out = cb.dequantize_4bit(q, (n,), 64, "nf4", "bfloat16")
                    digests.append(
                        hash(
                            (
                                cp.asnumpy(q.packed).tobytes(),
                                cp.asnumpy(q.absmax).tobytes(),
                                cp.asnumpy(out.bits).tobytes(),
                            )
                        )
                    )
                res[i]["q"].append(moved / t(lambda: cb.quantize_4bit(xb, 64, "nf4")) / 1e6)
                res[i]["qdq"].append(moved / t(lambda: cb.quantize_4bit(xb, 64, "nf4", True)) / 1e6)
                res[i]["d"].append(moved / t(lambda: cb.dequantize_4bit(q, (n,), 64, "nf4", "bfloat16")) / 1e6)
    cm = statistics.median(copy)
    print(f"device copy {cm:.0f} GB/s (rounds: {' '.join(f'{v:.0f}' for v in copy)})")
    for i, cfg in enumerate(CONFIGS):
        q, qdq, d = (statistics.median(res[i][k]) for k in ("q", "qdq", "d"))
        print(
            f"{cfg or 'defaults'!s:42s} quantize {q:5.0f} GB/s ({q / cm:4.0%})  +dq {qdq:5.0f} "
            f"(time +{q / qdq - 1:4.0%})  dequantize {d:5.0f} ({d / cm:4.0%})  same bytes: {digests[i] == digests[0]}",
            flush=True,
        )
    del np


if __name__ == "__main__":
    main()
