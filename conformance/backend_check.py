"""Every available backend (and device) against the reference on the fixed battery: the first part
of `qref check`. The same checks as the hypothesis suite (conformance.checks), on seeded inputs."""

from __future__ import annotations

import numpy as np

from qref.registry import available

from . import battery, checks, tally
from .report import Row


def _run(fn, *args) -> None:
    try:
        fn(*args)
    except tally.Mismatch:
        pass  # counted in the tally; the table shows the first one


def battery_run(backend, ref, quick: bool = False) -> None:
    """Run the battery through conformance.checks on one backend; results land in the tally."""
    blocksizes = (64, 4096) if quick else (32, 64, 128, 256, 512, 1024, 2048, 4096)
    for qt in ("nf4", "fp4"):
        for bs in blocksizes:
            for i, (_, x) in enumerate(battery.cases(qt, bs)):
                fmt = ("float32", "float16", "bfloat16")[i % 3]
                _run(checks.quantize_4bit, backend, ref, x, qt, bs, bool(i % 2), fmt)
    for bs in (64, 256):
        for _, x in battery.cases("nf4", bs):
            _run(checks.quantize_blockwise, backend, ref, x, "dynamic", bs)
    for g in (32,) if quick else (32, 128):
        for _, W in battery.groupwise_cases(g):
            for bits in (2, 3, 4, 8):
                for profile in ("gptq-asym", "gptq-sym", "minmax"):
                    _run(checks.groupwise, backend, ref, W[:8], bits, g, profile)
            _run(checks.qalora, backend, ref, W[:8], 4, g, "gptq-asym", 2, "average", 0)
    rng = np.random.default_rng(0)
    for rank in (1, 4, 16):
        _run(checks.svd_factors, backend, ref, rng.standard_normal((24, 40)), rank)
    _run(checks.initialisers, backend, ref, rng.standard_normal((48, 64)) * 0.02, 4, 4, rng.standard_normal((96, 64)))


def check_backends(specs=None, quick: bool = False, progress=None) -> tuple[list[tuple[str, list[Row]]], list[str]]:
    """[(backend spec, its rows: one per op x profile)] and the list of skipped backends with reasons.
    `progress(spec)` is called before each backend runs."""
    from qref.numpy_backend import NumpyBackend

    ref = NumpyBackend()
    sections, skipped = [], []
    for spec, backend in available(specs):
        if specs is None and spec == "numpy":
            continue  # the reference itself
        if isinstance(backend, str):
            skipped.append(f"{spec}: {backend}")
            continue
        if progress is not None:
            progress(spec)
        tally.reset()
        battery_run(backend, ref, quick)
        rows = []
        for (op, prof), c in sorted(tally.counts().items()):
            row = Row(op, prof, cases=c["cases"], exact=c["exact"] + c["certified"], mismatches=c["mismatches"])
            row.first = tally.first((op, prof))
            row.note = "certified (tolerance)" if c["certified"] else ""
            rows.append(row)
        sections.append((spec, rows))
        tally.reset()
    return sections, skipped
