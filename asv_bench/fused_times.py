"""Where the double-quantized quantize's one launch (quant_lut_dq) spends its time, CTA by CTA: compiled with
the diagnostic knob FUSED_TIMES, each CTA stamps the global timer at its stages (and notes its multiprocessor)
and writes the stamps over the first codes (wrong codes: diagnostics only); the plain quantize's kernel stamps
its start, the end of its loop and its leaving. Per stage, over the CTAs of the last of `--calls` calls, the
earliest, median and latest stamp in us from the earliest start; the CTAs whose loop ended last, and the
multiprocessors' last loop ends; then the same with other knobs where given.

    python asv_bench/fused_times.py [--size 4096x4096] [--calls 20] [--configs '[{}, {"SUMS_DIAG": 2}]']
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from gpu_common import bf16_weight  # asv_bench/, the script's folder

STAGES = (
    "start (table copied)",
    "first level's loop ended (CTA)",
    "sums: shared stage",
    "sums: global adds issued",
    "barrier: arrived",
    "barrier: released",
    "second level: offset",
    "second level: stored",
    "left",
)


STAMPS = 16  # FUSED_STAMPS of backends/kernels/common.cuh: the words each CTA writes


def stamps(config: dict, x, calls: int, dq: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(CTAs, stages) stamps in ns of the last call, relative to the earliest start, -1 where a CTA did not
    reach a stage (a CTA without a block of the second level leaves after the barrier; the plain quantize's
    kernel, dq False, stamps its start, its loop's end and its leaving); and each CTA's multiprocessor."""
    import torch

    from qref.backends import cuda_kernels as K
    from qref.backends.torch_backend import TorchBackend

    mod = K.Module(0, **{**config, "FUSED_TIMES": 1})
    tb = TorchBackend("cuda")
    with K.using(mod):
        for _ in range(calls):
            q = tb.quantize_4bit(x, 64, "nf4", dq)
        torch.cuda.synchronize()
        r = tb._fused.fused.recipe64("bfloat16", x.numel(), 64, "nf4", dq)
    grid = r.fused.grid if dq else r.plan.grid
    words = q.packed[: 8 * STAMPS * grid].view(torch.int64).cpu().numpy().reshape(grid, STAMPS)
    t = words[:, : len(STAGES)]
    t0 = t[:, 0].min()
    return np.where(t > 0, t - t0, -1), words[:, -1]


def report(name: str, t: np.ndarray, sm: np.ndarray) -> None:
    print(f"== {name}: {t.shape[0]} CTAs; us from the earliest start: earliest / median / latest", flush=True)
    for k, stage in enumerate(STAGES):
        col = t[:, k][t[:, k] >= 0] / 1e3
        if col.size:
            print(f"  {stage:34s} {col.min():7.2f} {np.median(col):7.2f} {col.max():7.2f}  ({col.size} CTAs)")
    end = t[:, 1] / 1e3
    late = np.argsort(end)[::-1][:12]
    print("  latest loop ends (CTA: us, its multiprocessor):", ", ".join(f"{c}: {end[c]:.2f} sm {sm[c]}" for c in late))
    if t.shape[1] > 7 and (t[:, 7] >= 0).any():  # the second level's CTAs: the latest to store their codes
        stored, offset = t[:, 7] / 1e3, t[:, 6] / 1e3
        late = [c for c in np.argsort(stored)[::-1][:12] if stored[c] >= 0]
        print(
            "  latest stores (CTA: us, after its offset, its multiprocessor):",
            ", ".join(f"{c}: {stored[c]:.2f} +{stored[c] - offset[c]:.2f} sm {sm[c]}" for c in late),
        )
    per_sm = {}
    for c in range(t.shape[0]):
        per_sm.setdefault(int(sm[c]), []).append(end[c])
    spans = sorted((max(v), k, len(v)) for k, v in per_sm.items())
    print(
        f"  multiprocessors: {len(per_sm)}; their last loop end: earliest {spans[0][0]:.2f}, median"
        f" {spans[len(spans) // 2][0]:.2f}, latest {spans[-1][0]:.2f}; CTAs on one: {sorted({s[2] for s in spans})}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--configs", type=json.loads, default=[{}], help="a JSON list of knob dicts")
    args = ap.parse_args(argv)
    x, _ = bf16_weight(args.size)
    for config in args.configs:
        name = json.dumps(config) if config else "defaults"
        report(f"{name}, quantize", *stamps(config, x, args.calls, False))
        report(f"{name}, quantize +dq", *stamps(config, x, args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
