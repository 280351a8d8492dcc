"""Where the time of one whole call goes, on the device's own clock: CUDA events recorded before the call
(a), right after each of its kernel launches (inside the call: they fire when that kernel ends) and after
it returns (b). a -> last launch event = host time before the launch + the kernels; last launch event -> b =
the wait for the kernels, the host's return and the recording of b. Next to the GPU table's whole-call
figure (the same a -> b without the events inside).

    python asv_bench/call_anatomy.py [--sizes 4096x4096 28672x8192] [--reps 20]
"""

from __future__ import annotations

import argparse
import statistics

from gpu_common import bf16_weight, bitsandbytes_functional, on_launch  # asv_bench/, the script's folder
from kernel_times import kernel_us


def anatomy(mod, fn, reps: int):
    import cupy as cp

    marks = []

    def mark(args):
        ev = cp.cuda.Event()
        ev.record(cp.cuda.ExternalStream(args[8]))
        marks.append(ev)

    fn()
    rows = []
    with on_launch(mod, mark):
        for _ in range(reps):
            marks.clear()
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record()
            fn()
            b.record()
            b.synchronize()
            last = marks[-1] if marks else b
            rows.append(
                (cp.cuda.get_elapsed_time(a, b), cp.cuda.get_elapsed_time(a, last), cp.cuda.get_elapsed_time(last, b))
            )
    return [statistics.median(r[i] for r in rows) * 1e3 for i in range(3)]


def main(argv=None):

    from qref.backends import cuda_kernels as K
    from qref.backends.cupy_backend import CupyBackend
    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["4096x4096", "28672x8192"])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    cb, tb = CupyBackend("cuda"), TorchBackend("cuda")
    mod = K.module(0)
    measured = []
    for size in args.sizes:
        x, xb = bf16_weight(size)
        calls = {}
        for dq in (False, True):
            s = " +dq" if dq else ""
            q, qt = cb.quantize_4bit(xb, 64, "nf4", dq), tb.quantize_4bit(x, 64, "nf4", dq)
            calls[f"cupy quantize{s}"] = lambda dq=dq, xb=xb: cb.quantize_4bit(xb, 64, "nf4", dq)
            calls[f"cupy dequantize{s}"] = lambda q=q, x=x: cb.dequantize_4bit(q, x.shape, 64, "nf4", "bfloat16")
            calls[f"torch:cuda quantize{s}"] = lambda dq=dq, x=x: tb.quantize_4bit(x, 64, "nf4", dq)
            calls[f"torch:cuda dequantize{s}"] = lambda qt=qt, x=x: tb.dequantize_4bit(
                qt, x.shape, 64, "nf4", "bfloat16"
            )
        calls["copy (clone)"] = lambda x=x: x.clone()
        F = bitsandbytes_functional()
        if F is not None:
            p, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
            calls["bnb dequantize"] = lambda p=p, st=st: F.dequantize_4bit(p, st)
        measured.append((size, calls, {name: anatomy(mod, fn, args.reps) for name, fn in calls.items()}))
    for size, calls, rows in measured:  # the kernels' own time last: a started profiler slows later launches
        print(
            f"== {size}: us (median of {args.reps}): whole call | call start -> last kernel's end | "
            "last kernel's end -> call's end | kernels (CUPTI, mean)",
            flush=True,
        )
        for name, fn in calls.items():
            kernels = sum(kernel_us(fn, args.reps).values())
            print(f"{name:28s} " + " | ".join(f"{v:8.1f}" for v in (*rows[name], kernels)), flush=True)


if __name__ == "__main__":
    main()
