"""Side-by-side comparison of kernel knobs (backends/cuda_kernels.KNOBS) in one process: every configuration
is compiled once, then timed in interleaved rounds next to the device copy, so the drift between processes
and rounds (about 10% on an H100) cancels in the ratios (whole calls: the CuPy backend's quantize, with
double quantization and dequantize, and the torch backend's quantize); after the rounds, each
configuration's kernels alone (the GPU's activity records, no host time).
Each configuration's bytes are checked against the first, the double-quantized state too (diagnostic ones
are expected to differ).

    python asv_bench/tune_kernels.py [--rounds 5] [--size 28672x8192] [--configs '[{}, {"CTAS_PER_SM": 16}]']
"""

from __future__ import annotations

import argparse
import json
import statistics

from gpu_common import median_ms  # asv_bench/, the script's folder
from kernel_times import kernel_us
from workloads import traffic

CONFIGS = [{}, {"SUMS_PASS_MIN": 0, "DQ2_NEXT": 0, "DQ2_SHARED": 0}, {"SUMS_PASS_MIN": 1}, {"LUT_NEXT": 0}]


def main(argv=None):
    import cupy as cp
    import torch

    from qref.backends import cuda_kernels as K
    from qref.backends.cupy_backend import CupyBackend, CupyBF16
    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="28672x8192")
    ap.add_argument("--configs", type=json.loads, default=CONFIGS, help="a JSON list of knob dicts")
    args = ap.parse_args(argv)
    r, c = map(int, args.size.split("x"))
    n = r * c
    bits = (cp.random.default_rng(0).standard_normal(n, dtype=cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
    xb = CupyBF16(bits)
    cb = CupyBackend("cuda")
    tb, xt = TorchBackend("cuda"), torch.from_dlpack(bits.view(cp.int16)).view(torch.bfloat16)  # same memory
    mods = [K.Module(0, **cfg) for cfg in args.configs]
    moved = {"q": traffic(n), "qdq": traffic(n, True), "d": traffic(n), "tq": traffic(n), "tqdq": traffic(n, True)}
    dst = cp.empty_like(bits)
    ops = {
        "q": lambda: cb.quantize_4bit(xb, 64, "nf4"),
        "qdq": lambda: cb.quantize_4bit(xb, 64, "nf4", True),
        "d": lambda: cb.dequantize_4bit(q, (n,), 64, "nf4", "bfloat16"),
        "tq": lambda: tb.quantize_4bit(xt, 64, "nf4"),
        "tqdq": lambda: tb.quantize_4bit(xt, 64, "nf4", True),
    }
    digests, res = [], {i: {k: [] for k in ops} for i in range(len(mods))}
    copy = []
    for rnd in range(args.rounds):
        copy.append(4 * n / median_ms(lambda: dst.data.copy_from_device_async(bits.data, bits.nbytes)) / 1e6)
        for i, mod in enumerate(mods):
            with K.using(mod):
                q = cb.quantize_4bit(xb, 64, "nf4")
                if rnd == 0:
                    out = cb.dequantize_4bit(q, (n,), 64, "nf4", "bfloat16")
                    qd = cb.quantize_4bit(xb, 64, "nf4", True)
                    tq = tb.quantize_4bit(xt, 64, "nf4")
                    arrays = (q.packed, q.absmax, out.bits, qd.packed, qd.qabsmax, qd.absmax2, qd.offset.item())
                    host = [cp.asnumpy(cp.asarray(a)) for a in arrays]
                    host += [t.cpu().numpy() for t in (tq.packed, tq.absmax)]
                    digests.append(hash(tuple(a.tobytes() for a in host)))
                for k, fn in ops.items():
                    res[i][k].append(moved[k] / median_ms(fn) / 1e6)
    kernels = {}
    for i, mod in enumerate(mods):  # the profiler last: once started, it slows later launches
        with K.using(mod):
            q = cb.quantize_4bit(xb, 64, "nf4")
            kernels[i] = {k: kernel_us(fn, 10) for k, fn in ops.items()}
    cm = statistics.median(copy)
    print(f"{args.size}: device copy {cm:.0f} GB/s (rounds: {' '.join(f'{v:.0f}' for v in copy)})")
    for i, cfg in enumerate(args.configs):
        q, qdq, d, tq, tqdq = (statistics.median(res[i][k]) for k in ("q", "qdq", "d", "tq", "tqdq"))
        kq, kqdq, kd = (sum(kernels[i][k].values()) for k in ("q", "qdq", "d"))
        print(
            f"{json.dumps(cfg) if cfg else 'defaults':42s} quantize {q:5.0f} GB/s ({q / cm:4.0%}, kernels {kq:6.1f} us)"
            f"  +dq {qdq:5.0f} (kernels {kqdq:6.1f} us)  dequantize {d:5.0f} ({d / cm:4.0%}, kernels {kd:6.1f} us)"
            f"  torch:cuda quantize {tq:5.0f} ({tq / cm:4.0%}) +dq {tqdq:5.0f}  same bytes: {digests[i] == digests[0]}",
            flush=True,
        )
        print("    +dq kernels: " + ", ".join(f"{k} {v:.1f} us" for k, v in kernels[i]["qdq"].items()), flush=True)


if __name__ == "__main__":
    main()
