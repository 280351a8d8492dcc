"""Median device time of a call, by CUDA events around it on CuPy's current stream (the call's Python,
launches and any wait included), after one warm-up call. Shared by the GPU tuning and profiling scripts."""
import statistics


def median_ms(fn, reps: int = 10) -> float:
    import cupy as cp

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
