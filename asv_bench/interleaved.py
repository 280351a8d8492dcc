"""How much a whole call's time depends on what runs between its rounds: the GPU table's implementations
(asv_bench/gpu_table.py) timed in interleaved rounds as the table times them (median of 20 calls after 3,
CUDA events around each call), once with every implementation in the round, then with subsets (no torch
ops paths, no peer libraries, torch:cuda alone); printed for qref's block-64 quantize, plain and
double-quantized.

    python asv_bench/interleaved.py [--size 4096x4096] [--rounds 4]
"""

from __future__ import annotations

import argparse

from gpu_common import median_ms  # asv_bench/, the script's folder
from gpu_table import impls

WATCH = (("qref torch:cuda", "quantize"), ("qref torch:cuda +dq", "quantize"), ("qref cupy +dq", "quantize"))
SUBSETS = {
    "every implementation": lambda name: True,
    "no torch ops paths": lambda name: "torch ops" not in name,
    "no peer libraries": lambda name: name.startswith("qref"),
    "torch:cuda alone": lambda name: name.startswith("qref torch:cuda") and "torch ops" not in name,
}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    rows, cols = map(int, args.size.split("x"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16, generator=gen)
    ops = {(name, op): fn for name, d in impls(x, torch).items() for op, fn in d.items()}
    print(f"{args.size}: us per whole call, median of 20, one figure a round", flush=True)
    for label, keep in SUBSETS.items():
        chosen = [k for k in ops if keep(k[0])]
        got: dict = {k: [] for k in WATCH if k in chosen}
        for _ in range(args.rounds):
            for k in chosen:
                us = median_ms(ops[k], 20, 3) * 1e3
                if k in got:
                    got[k].append(us)
        cells = "; ".join(f"{name}: {' '.join(f'{v:.1f}' for v in vs)}" for (name, _), vs in got.items())
        print(f"{label:22s} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
