"""Where a torch:cuda dequantize's host time goes once its state is known (the prepared launch of
backends/cuda_bridge._Ready), on the machine it runs on: each host piece by timeit, beside the forms it
replaced (torch.empty with keyword arguments; the kernel's parameter packed at every call), then the host
time of whole calls (launches queued, 100 between synchronizes) and whole calls by CUDA events, as the GPU
table times them: qref, a device copy (clone), bitsandbytes where installed; interleaved rounds, medians.

    python asv_bench/dequantize_host.py [--sizes 4096x4096 11008x4096] [--reps 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gpu_common import bf16_weight, bitsandbytes_functional, median_ms, statement_us  # asv_bench/, the script's folder


def queued_us(fn, number: int = 100, repeat: int = 5) -> float:
    """Host microseconds per call of fn, which launches kernels: `number` calls between synchronizes (the
    launch queue never fills), the best of `repeat`."""
    import torch

    best = float("inf")
    for _ in range(repeat):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - t) / number / 1e3)
    torch.cuda.synchronize()
    return best


def pieces(tb, q, shape) -> dict:
    """Microseconds per call of each host piece of a known state's dequantize, and of the forms replaced."""
    import torch

    bridge = tb._fused
    (ready,) = [r for key, r in bridge._ready.items() if key[0] == id(q)]
    env = {"torch": torch, "bridge": bridge, "ready": ready, "q": q, "shape": shape, "dev": bridge.device}
    from qref.backends.fused4bit import current

    env.update(like=ready.like, current=current)
    stmts = {
        "torch.empty(shape, dtype=, device=)": "torch.empty(shape, dtype=torch.bfloat16, device=dev)",
        "like.new_empty(shape)": "like.new_empty(shape)",
        "current stream handle": "bridge._handle()",
        "current (device and context)": "current(bridge.cp, bridge.index)",
        "four data_ptr()": "q.packed.data_ptr(); q.absmax.data_ptr(); q.packed.data_ptr(); q.absmax.data_ptr()",
        "verified.holds": "bridge.verified.holds([ref() for ref in ready.scales])",
    }
    out = statement_us(stmts, env, 2000)
    dst = torch.empty(shape, dtype=torch.bfloat16, device=bridge.device)

    def packed_each_call():
        values = ready.values.copy()
        values[11] = dst.data_ptr()  # cuda_launch.OUT_AT
        ready.plan.launch(values, ready.stream)

    def prepared():
        ready.prepared.move(dst.data_ptr())
        ready.prepared.launch(ready.addresses[0], ready.stream)

    out["launch, parameter packed each call"] = queued_us(packed_each_call)
    out["launch, prepared parameter"] = queued_us(prepared)
    out["_Ready.run (the known state's path)"] = queued_us(lambda: ready.run(q, shape))
    return out


def main(argv=None):
    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["4096x4096", "11008x4096"])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    tb = TorchBackend("cuda")
    F = bitsandbytes_functional()
    for size in args.sizes:
        x, _ = bf16_weight(size)
        shape = tuple(x.shape)
        q = tb.quantize_4bit(x, 64, "nf4", False)
        for _ in range(3):  # the first call waits and makes the state ready
            tb.dequantize_4bit(q, shape, 64, "nf4", "bfloat16")
        print(f"== {size}: host us per call (timeit, best of 3)", flush=True)
        for name, us in pieces(tb, q, shape).items():
            print(f"{name:40s} {us:8.2f}", flush=True)
        calls = {
            "qref torch:cuda dequantize": lambda: tb.dequantize_4bit(q, shape, 64, "nf4", "bfloat16"),
            "copy (clone)": x.clone,
        }
        if F is not None:
            p, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
            calls["bitsandbytes dequantize"] = lambda: F.dequantize_4bit(p, st)
        print("host us per call, launches queued: " + ", ".join(f"{k} {queued_us(f):.2f}" for k, f in calls.items()))
        whole: dict = {k: [] for k in calls}
        for _ in range(args.rounds):
            for k, f in calls.items():
                whole[k].append(median_ms(f, args.reps) * 1e3)
        print(f"whole call us (CUDA events; median of {args.rounds} rounds of {args.reps}; min-max of rounds):")
        for k, v in whole.items():
            print(f"{k:40s} {statistics.median(v):8.1f} ({min(v):.1f}-{max(v):.1f})", flush=True)
        if F is not None:
            bnb, ours = statistics.median(whole["bitsandbytes dequantize"]), statistics.median(whole[next(iter(calls))])
            print(f"bitsandbytes time / qref time: {bnb / ours:.2f}x", flush=True)


if __name__ == "__main__":
    main()
