"""pytest-benchmark counterparts of the asv suite (timed only with --benchmark-enable; in the default
run each workload executes once and its result is checked, so the benchmarks cannot rot)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "asv_bench"))
from workloads import IMPLS, OPS, make  # noqa: E402


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", IMPLS)
def test_bench_nf4_4096(benchmark, impl, op):
    try:
        fn = make(impl, op, 4096)
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    out = benchmark(fn)
    first = out[0] if isinstance(out, tuple) else out
    assert np.asarray(first).size in (4096 * 4096, 4096 * 4096 // 2)


from workloads import BACKEND_OPS, BACKENDS, backend_workload  # noqa: E402


@pytest.mark.parametrize("op", BACKEND_OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bench_backend_1024(benchmark, backend, op):
    """The asv backends suite's workloads, quick: skipped where a backend is unavailable."""
    try:
        run, moved, sync = backend_workload(backend, op, 1024)
    except NotImplementedError as exc:
        pytest.skip(str(exc))

    def once():
        out = run()
        sync()
        return out

    out = benchmark(once)
    assert out is not None and moved > 1024 * 1024
