"""A compiled CPU path for the 4-bit codes of large inputs (torch.compile with Inductor's C++ backend).

The eager torch:cpu path makes one pass per step (absmax, scale, clamp, bucket, gathers), which on a
2-core machine is slower than one fused loop. For inputs of at least MIN_ELEMENTS whole-block
elements and codebooks of at most 16 codes, the same arithmetic is compiled into one loop per block:

    absmax = max |w|;  scaled = clamp(w * RN(1 / max(absmax, 1e-38)), -1, 1);
    i = #{j : scaled > m_j};  code = order[i]

(the midpoints m_j as float32 constants: `scaled > m_j` is the eager path's `bucketize(right=False)`).
It is bit-exact with the eager path and the reference (tests/test_cpu_compiled.py holds it to the
reference on large inputs built from the battery's hard values). Compilation takes seconds once per
codebook (shapes are dynamic); where it is unavailable (no C++ compiler, QREF_TORCH_COMPILE=0) the
eager path runs.
"""

from __future__ import annotations

import os

import numpy as np

MIN_ELEMENTS = 1 << 20
MAX_CODES = 16
_compiled: dict = {}
_failed: list[str] = []


def enabled() -> bool:
    return os.environ.get("QREF_TORCH_COMPILE", "1") != "0" and not _failed


def _make(midpoints: np.ndarray, order: np.ndarray):
    import torch

    mids = [float(m) for m in np.asarray(midpoints, np.float32)]
    table = torch.from_numpy(np.asarray(order, np.int64).copy())

    def codes(head):
        absmax = head.abs().amax(1)
        inv = torch.reciprocal(torch.clamp(absmax, min=1e-38))
        scaled = torch.clamp(head * inv[:, None], -1.0, 1.0)
        index = sum((scaled > m).to(torch.int64) for m in mids)
        return table[index].to(torch.uint8).reshape(-1), absmax

    return torch.compile(codes, dynamic=True)


def codes(codebook: str, midpoints, order, head):
    """(codes, absmax) of `head` (full, blocksize) float32 on the CPU, or None when the compiled path
    does not apply or is unavailable (the caller then runs the eager path). A block holding NaN or
    Inf has a non-finite absmax: the caller refuses the input on it, as on the eager path's."""
    if not enabled() or head.numel() < MIN_ELEMENTS or len(order) > MAX_CODES:
        return None
    fn = _compiled.get(codebook)
    if fn is None:
        fn = _compiled[codebook] = _make(midpoints, order)
    try:
        return fn(head)
    except Exception as exc:  # noqa: BLE001 - no C++ toolchain, an Inductor failure: fall back, once
        _failed.append(f"{type(exc).__name__}: {exc}")
        return None
