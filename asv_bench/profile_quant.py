"""Where the time of one fused 4-bit call goes, on a GPU: host (Python, launches, the one flag read) and
device time per call (cupyx.profiler.benchmark), for qref's CuPy backend and bitsandbytes, next to the
device's copy and write-only ceilings. python asv_bench/profile_quant.py [--sizes 4096x4096 ...]"""

from __future__ import annotations

import argparse

from gpu_common import bf16_weight, bitsandbytes_functional, median_ms, on_launch  # asv_bench/, the script's folder


def main(argv=None):
    import torch
    from cupyx.profiler import benchmark

    from qref.backends.cupy_backend import CupyBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["4096x4096", "28672x8192"])
    args = ap.parse_args(argv)
    cb = CupyBackend("cuda")
    F = bitsandbytes_functional()
    for size in args.sizes:
        x, xb = bf16_weight(size)
        n = x.numel()
        out = torch.empty_like(x)
        rows = {
            "copy (clone)": lambda: x.clone(),
            "write only (zero_)": lambda: out.zero_(),
            "read only (amax)": lambda: x.view(torch.int16).amax(),
        }
        for dq in (False, True):
            q = cb.quantize_4bit(xb, 64, "nf4", dq)
            rows[f"qref quantize{' +dq' if dq else ''}"] = lambda dq=dq: cb.quantize_4bit(xb, 64, "nf4", dq)
            rows[f"qref dequantize{' +dq' if dq else ''}"] = lambda q=q: cb.dequantize_4bit(
                q, x.shape, 64, "nf4", "bfloat16"
            )
            if F is not None:
                p, s = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq)
                rows[f"bnb quantize{' +dq' if dq else ''}"] = lambda dq=dq: F.quantize_4bit(
                    x, blocksize=64, quant_type="nf4", compress_statistics=dq
                )
                rows[f"bnb dequantize{' +dq' if dq else ''}"] = lambda p=p, s=s: F.dequantize_4bit(p, s)
        print(f"== {size} ({n * 2 / 1e6:.0f} MB bf16): mean us per call, host / device", flush=True)
        for name, fn in rows.items():
            res = benchmark(fn, n_repeat=50, n_warmup=5)
            print(
                f"{name:28s} host {res.cpu_times.mean() * 1e6:8.1f}  device {res.gpu_times.mean() * 1e6:8.1f}",
                flush=True,
            )


def host_breakdown(reps: int = 300):
    """Host cost of each step of a fused quantize on a small input (64K values: the device is never the
    bound), in microseconds per call, and cProfile's top entries of the whole call."""
    import cProfile
    import pstats
    import time

    import cupy as cp

    from qref.backends import cuda_kernels as K
    from qref.backends import cuda_launch as L
    from qref.backends.cupy_backend import CupyBackend, CupyBF16

    cb = CupyBackend("cuda")
    xb = CupyBF16(cp.zeros(1 << 16, dtype=cp.uint16))
    flat = xb.bits
    _, mids, order, lut = cb._fused.tables("nf4")
    flag = K.Flag(cp)
    empty = cb._fused.empty
    steps = {
        "cp.empty": lambda: cp.empty(1 << 15, dtype=cp.uint8),
        "Flag (pinned, new)": lambda: K.Flag(cp),
        "Flag.get (reused)": lambda: K.Flag.get(cp),
        "Workspace.get (memset)": lambda: K.Workspace.get(cp, cb._fused.zeros, 0),
        "flag read (stream sync)": lambda: flag.raise_if_set("x"),
        "cuda_launch.quantize (launch only)": lambda: L.quantize(
            flat, "bfloat16", flat.size, 64, mids, order, True, table=lut, empty=empty, flag=flag
        ),
        "cb.quantize_4bit": lambda: cb.quantize_4bit(xb, 64, "nf4"),
        "cb.quantize_4bit +dq": lambda: cb.quantize_4bit(xb, 64, "nf4", True),
    }
    import torch

    from qref.backends.torch_backend import TorchBackend

    tb = TorchBackend("cuda")
    xt = torch.zeros(1 << 16, dtype=torch.bfloat16, device="cuda")
    qt = tb.quantize_4bit(xt, 64, "nf4")
    steps["torch bridge quantize_4bit"] = lambda: tb.quantize_4bit(xt, 64, "nf4")
    steps["torch bridge quantize_4bit +dq"] = lambda: tb.quantize_4bit(xt, 64, "nf4", True)
    steps["torch bridge dequantize_4bit"] = lambda: tb.dequantize_4bit(qt, (1 << 16,), 64, "nf4", "bfloat16")
    steps["torch.empty"] = lambda: torch.empty(1 << 15, dtype=torch.uint8, device="cuda")
    steps["cp.from_dlpack"] = lambda: cp.from_dlpack(xt.view(torch.int16))
    q = cb.quantize_4bit(xb, 64, "nf4")
    steps["cb.dequantize_4bit"] = lambda: cb.dequantize_4bit(q, (1 << 16,), 64, "nf4", "bfloat16")
    print("== host cost per call (us), 65536 values", flush=True)
    for name, fn in steps.items():
        fn()
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        cp.cuda.Device().synchronize()
        print(f"{name:32s} {(time.perf_counter() - t) / reps * 1e6:8.1f}", flush=True)
    mod = K.module(0)
    print("== host time from the call to its first launch / to its return (us, median), 65536 values", flush=True)
    for name in (
        "cb.quantize_4bit",
        "cb.quantize_4bit +dq",
        "cb.dequantize_4bit",
        "torch bridge quantize_4bit",
        "torch bridge quantize_4bit +dq",
        "torch bridge dequantize_4bit",
    ):
        first, back = until_launch(mod, steps[name], reps)
        print(f"{name:32s} {first:8.1f} {back:8.1f}", flush=True)
    for name in ("cb.quantize_4bit +dq", "torch bridge quantize_4bit"):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(reps):
            steps[name]()
        prof.disable()
        print(f"== cProfile: {name}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    from cupy.cuda import driver

    for name in ("quant_lut_f2_s0", "quant_lut_f2_s1", "quant_dq256", "dequant8_f2"):
        regs = driver.funcGetAttribute(4, mod(name).ptr)  # CU_FUNC_ATTRIBUTE_NUM_REGS
        print(f"{name}: {regs} registers per thread", flush=True)


def until_launch(mod, fn, reps: int) -> tuple[float, float]:
    """Median host microseconds from the start of fn() to the return of its first kernel launch through
    Module, and to its own return (the kernels' time overlaps what follows the launch)."""
    import statistics
    import time

    stamps = []
    first, back = [], []
    with on_launch(mod, lambda args: stamps.append(time.perf_counter())):
        for _ in range(reps):
            stamps.clear()
            t = time.perf_counter()
            fn()
            back.append(time.perf_counter() - t)
            if stamps:
                first.append(stamps[0] - t)
    return statistics.median(first or [float("nan")]) * 1e6, statistics.median(back) * 1e6


def kernel_breakdown(size="28672x8192", reps=20):
    """Device time of each kernel of the fused quantize (CUDA events around its launch alone)."""
    import time

    import cupy as cp
    import numpy as np

    from qref.backends import cuda_kernels as K
    from qref.backends import cuda_launch as L
    from qref.backends.cupy_backend import CupyBackend

    cb = CupyBackend("cuda")
    r, c = map(int, size.split("x"))
    n = r * c
    flat = (cp.random.default_rng(0).standard_normal(n, dtype=cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
    _, mids, order, lut = cb._fused.tables("nf4")
    _, dmids, dorder, _ = cb._fused.tables("dynamic")
    empty, zeros, flag = cb._fused.empty, cb._fused.zeros, K.Flag.get(cp)
    second = empty(-(-n // 64 // 256) + 1, "float32")
    at = int(K.ptr(second)) + 4 * (second.size - 1)
    ws = K.Workspace.get(cp, zeros, 0)
    _, absmax = L.quantize(
        flat, "bfloat16", n, 64, mids, order, True, empty=empty, table=lut, ws=ws, offset_out=at, flag=flag
    )
    offset = K.DeviceScalar(second, at, cp)

    def t(fn):
        return median_ms(fn, reps) * 1e3

    steps = {
        "quant_lut": lambda: L.quantize(flat, "bfloat16", n, 64, mids, order, True, empty=empty, table=lut, flag=flag),
        "quant_lut + sums + offset": lambda: L.quantize(
            flat,
            "bfloat16",
            n,
            64,
            mids,
            order,
            True,
            empty=empty,
            table=lut,
            ws=K.Workspace.get(cp, zeros, 0),
            offset_out=at,
            flag=flag,
        ),
        "Workspace.get (memset)": lambda: K.Workspace.get(cp, zeros, 0),
        "second level (quant_dq256)": lambda: L.quantize(
            absmax, "float32", absmax.size, 256, dmids, dorder, False, empty=empty, offset=offset
        ),
    }
    print(f"== kernels at {size}: device us (events around the launch)", flush=True)
    for name, fn in steps.items():
        print(f"{name:32s} {t(fn):8.1f}", flush=True)
    mod = K.module(0)
    for name, fn in {
        "launch dq_offset (3 args)": lambda: mod("dq_offset")(
            (1,), (32,), (np.uint64(ws.sums), np.int64(5), np.uint64(at))
        ),
        "launch quant_lut (13 args, 64 values)": lambda: L.quantize(
            flat[:64], "bfloat16", 64, 64, mids, order, True, empty=empty, table=lut, flag=flag
        ),
    }.items():
        fn()
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(300):
            fn()
        cp.cuda.Device().synchronize()
        print(f"{name:40s} host {(time.perf_counter() - t0) / 300 * 1e6:6.1f} us", flush=True)


if __name__ == "__main__":
    host_breakdown()
    kernel_breakdown()
    main()
