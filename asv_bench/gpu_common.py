"""Shared by the GPU scripts of asv_bench/ (the table, tuning, profiling, kernel times, call anatomy):
whole-call timing by CUDA events, a hook on qref's kernel launches, the bf16 test weight and
bitsandbytes where it is installed."""

import statistics
from contextlib import contextmanager


def median_ms(fn, reps: int = 10, warmup: int = 1) -> float:
    """Median device time of a call, by CUDA events around it on CuPy's current stream (the legacy default
    stream, torch's too unless a caller changes it): the call's Python, launches and any wait included,
    after `warmup` calls."""
    import cupy as cp

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def statement_us(stmts: dict, env: dict, number: int) -> dict:
    """name -> host microseconds per execution of each statement (timeit in `env`: 100 to warm up, then
    the best of 3 repeats of `number`)."""
    import timeit

    out = {}
    for name, stmt in stmts.items():
        timeit.timeit(stmt, globals=env, number=100)
        out[name] = min(timeit.repeat(stmt, globals=env, number=number, repeat=3)) / number * 1e6
    return out


@contextmanager
def on_launch(mod, hook):
    """Inside the block every kernel launch of `mod` (a backends.cuda_kernels.Module) through the driver
    calls hook(args) right after it (args: cuLaunchKernel's or cuLaunchCooperativeKernel's, the stream
    handle at args[8])."""
    real, coop = mod._driver, mod._coop

    class Driver:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def launchKernel(*args):
            out = real.launchKernel(*args)
            hook(args)
            return out

    def cooperative(*args):
        out = coop(*args)
        hook(args)
        return out

    mod._driver = Driver()
    if coop is not None:
        mod._coop = cooperative
    try:
        yield
    finally:
        mod._driver, mod._coop = real, coop


def as_cupy_bf16(x):
    """The memory of a torch bfloat16 CUDA tensor as a CupyBF16 (no copy)."""
    import cupy as cp
    import torch

    from qref.backends.cupy_backend import CupyBF16

    return CupyBF16(cp.from_dlpack(x.view(torch.int16)).view(cp.uint16))


def bf16_weight(size: str):
    """(torch bf16 tensor of normals, the same memory as a CupyBF16) of a 'ROWSxCOLS' size, seed 0."""
    import torch

    r, c = map(int, size.split("x"))
    x = torch.randn(r, c, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(0))
    return x, as_cupy_bf16(x)


def bitsandbytes_functional():
    """bitsandbytes.functional, or None where it is not installed or does not load."""
    try:
        import bitsandbytes.functional as F
    except Exception:  # noqa: BLE001
        return None
    return F
