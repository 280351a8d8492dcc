"""Device time of every kernel a call launches, from the GPU's own activity records (CUPTI, through
torch.profiler: no host time, no event overhead), for qref's fused 4-bit calls under each knob
configuration, bitsandbytes and the copy. Says which kernel a call's time is in and what a knob changes
inside it, where tune_kernels.py and the GPU table time whole calls.

    python asv_bench/kernel_times.py [--sizes 4096x4096 28672x8192] [--reps 20]
        [--configs '[{}, {"DQ_WORDS": 8}]'] [--ops quantize dequantize]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from gpu_common import bf16_weight, bitsandbytes_functional  # asv_bench/, the script's folder

CONFIGS = [{}, {"DQ2_SHARED": 1}, {"SUMS_DIAG": 2}, {"SUMS_DIAG": 1}]


def kernel_us(fn, reps: int) -> dict[str, float]:
    """Kernel (or copy, fill) name -> mean device microseconds per call of fn (reps calls after one warm-up)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total = defaultdict(float)
    for e in prof.events():
        if str(getattr(e, "device_type", "")).endswith("CUDA") and e.device_time_total > 0:
            total[e.name[:40]] += e.device_time_total
    return {name: us / reps for name, us in total.items()}


def show(label: str, times: dict[str, float]):
    parts = "  ".join(f"{k} {v:.1f}" for k, v in sorted(times.items(), key=lambda kv: -kv[1]))
    print(f"{label:44s} total {sum(times.values()):8.1f} us | {parts}", flush=True)


def main(argv=None):

    from qref.backends import cuda_kernels as K
    from qref.backends.cupy_backend import CupyBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["4096x4096", "28672x8192"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--configs", type=json.loads, default=CONFIGS, help="knob sets (JSON list of objects)")
    ap.add_argument("--ops", nargs="*", default=["quantize", "dequantize"])
    args = ap.parse_args(argv)
    cb = CupyBackend("cuda")
    mods = [K.Module(0, **cfg) for cfg in args.configs]
    F = bitsandbytes_functional()
    for size in args.sizes:
        x, xb = bf16_weight(size)
        print(f"== {size}: device us per call, by kernel", flush=True)
        show("copy (clone)", kernel_us(lambda: x.clone(), args.reps))
        for cfg, mod in zip(args.configs, mods):
            with K.using(mod):
                for dq in (False, True):
                    q = cb.quantize_4bit(xb, 64, "nf4", dq)
                    if "quantize" in args.ops:
                        show(
                            f"quantize{' +dq' if dq else ''} {cfg or ''}",
                            kernel_us(lambda dq=dq: cb.quantize_4bit(xb, 64, "nf4", dq), args.reps),
                        )
                    if "dequantize" in args.ops and (not cfg or "quantize" not in args.ops):
                        show(
                            f"dequantize{' +dq' if dq else ''} {cfg or ''}",
                            kernel_us(lambda q=q: cb.dequantize_4bit(q, x.shape, 64, "nf4", "bfloat16"), args.reps),
                        )
        if F is not None:
            for dq in (False, True):
                p, s = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq)
                show(
                    f"bnb quantize{' +dq' if dq else ''}",
                    kernel_us(
                        lambda dq=dq: F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq),
                        args.reps,
                    ),
                )
                show(
                    f"bnb dequantize{' +dq' if dq else ''}",
                    kernel_us(lambda p=p, s=s: F.dequantize_4bit(p, s), args.reps),
                )


if __name__ == "__main__":
    main()
