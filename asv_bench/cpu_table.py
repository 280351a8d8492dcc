"""The torch:cpu backend against bitsandbytes' CPU kernels, in one run: 4096 x 4096 NF4, block 64,
float32 and bfloat16 input, best of 5 (after a warm-up that also compiles the torch:cpu quantize
path, backends/cpu_kernels.py). Prints a markdown table of times and ratios.

python asv_bench/cpu_table.py        # targets: quantize >= 2x, dequantize >= 1x (bitsandbytes time / ours)

Each row's bandwidth counts the bytes it must move (the weight, the packed codes and absmax) and is
compared with the machine's copy bandwidth, measured in the same run (a fresh output each call, as the
ops have); the write-only fill is printed beside it.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from workloads import timed, traffic  # noqa: E402


def main(n: int = 4096) -> int:
    import bitsandbytes
    import bitsandbytes.functional as F
    import torch

    from qref.dtypes import BFloat16Array
    from qref.registry import get_backend

    w = (np.random.default_rng(0).standard_normal((n, n)) * 0.02).astype(np.float32)
    be = get_backend("torch:cpu")
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, bitsandbytes "
        f"{bitsandbytes.__version__}; {n} x {n} NF4 block 64, best of 5\n"
    )
    copy, fill = limits(n)
    print(f"physical limits ({n} x {n} float32, fresh output each call): copy {copy:.1f} GB/s, fill {fill:.1f} GB/s\n")
    print(
        "| input | op | bitsandbytes | torch:cpu | bitsandbytes time / torch:cpu time "
        "| torch:cpu GB/s (of copy) | gap to copy |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for fmt in ("float32", "bfloat16"):
        xt = torch.from_numpy(w).to(getattr(torch, fmt))
        x = be.from_numpy(w if fmt == "float32" else BFloat16Array.from_float32(w))
        packed, state = F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
        q = be.quantize_4bit(x, 64, "nf4", False)
        pairs = {
            "quantize": (
                lambda: F.quantize_4bit(xt, blocksize=64, quant_type="nf4"),
                lambda: be.quantize_4bit(x, 64, "nf4", False),
                2.0,
            ),
            "dequantize": (
                lambda: F.dequantize_4bit(packed, state),
                lambda: be.dequantize_4bit(q, (n, n), 64, "nf4", fmt),
                1.0,
            ),
        }
        moved = traffic(n * n, width=4 if fmt == "float32" else 2)  # the weight, the packed codes, absmax
        for op, (theirs, ours, target) in pairs.items():
            t_b, t_o = timed(theirs, lambda: None), timed(ours, lambda: None)
            ok &= t_b / t_o >= target
            gbps = moved / t_o / 1e9
            print(
                f"| {fmt} | {op} | {t_b * 1e3:.1f} ms | {t_o * 1e3:.1f} ms | {t_b / t_o:.2f} (target {target:g}) "
                f"| {gbps:.1f} ({gbps / copy:.0%}) | {1 - gbps / copy:.0%} |"
            )
    return 0 if ok else 1


def limits(n: int) -> tuple[float, float]:
    """GB/s of a copy (read + write of n x n float32 into a fresh array) and of a write-only fill
    (a fresh array set to zero), as the ops above allocate their outputs: best of 5."""
    import torch

    a = torch.ones(n * n)
    copy = timed(lambda: a.clone(), lambda: None)
    fill = timed(lambda: torch.zeros(n * n), lambda: None)
    return 8 * n * n / copy / 1e9, 4 * n * n / fill / 1e9


if __name__ == "__main__":
    sys.exit(main())
