"""Median device time of a call, by CUDA events around it on CuPy's current stream (the legacy default
stream, torch's too unless a caller changes it): the call's Python, launches and any wait included,
after `warmup` calls. Shared by the GPU table, the tuning and the profiling scripts."""
import statistics


def median_ms(fn, reps: int = 10, warmup: int = 1) -> float:
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
