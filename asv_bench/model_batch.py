"""A whole model at once: the 224 linears of a LLaMA-7B-shaped model (32 layers of q, k, v, o 4096x4096,
gate, up 11008x4096, down 4096x11008; bfloat16 normals) quantized to NF4 block 64 with double quantization
and dequantized back to bfloat16, on the GPU, as one batch (`quantize_4bit_many`, `dequantize_4bit_many`:
one wait), as 224 single calls, and by bitsandbytes where installed; each next to one device copy of
those bytes (a flat copy of all 224 weights' bytes, 2 x 12.95 GB moved) measured in the same run.
Interleaved rounds, CUDA events, the median per row; the batch's states and outputs are checked equal,
array for array, to the single calls'.

    python asv_bench/model_batch.py --out model_batch.json [--layers 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from gpu_common import bitsandbytes_functional, median_ms  # asv_bench/, the script's folder
from init_model import LINEARS
from workloads import traffic


def weights(layers: int, torch):
    gen = torch.Generator(device="cuda").manual_seed(0)
    return [
        torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen)
        for _ in range(layers)
        for shape in LINEARS.values()
    ]


def same(torch, a, b) -> bool:
    """Two 4-bit states (or two outputs) equal array for array, bit for bit."""
    if hasattr(a, "packed"):
        pairs = [(getattr(a, k), getattr(b, k)) for k in ("packed", "absmax", "qabsmax", "absmax2")]
        arrays = all(x is None and y is None or torch.equal(x, y) for x, y in pairs)
        return arrays and (a.offset is None or float(a.offset) == float(b.offset))
    return torch.equal(a.view(torch.int16), b.view(torch.int16))


def main(argv=None) -> int:
    import torch

    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="model_batch.json")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="timed calls per round (median)")
    args = ap.parse_args(argv)
    tb = TorchBackend("cuda")
    xs = weights(args.layers, torch)
    shapes = [tuple(x.shape) for x in xs]
    n = sum(x.numel() for x in xs)
    flat = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(flat)
    qs = tb.quantize_4bit_many(xs, 64, "nf4", True)
    singles = [tb.quantize_4bit(x, 64, "nf4", True) for x in xs]
    exact = {"quantize": all(same(torch, a, b) for a, b in zip(qs, singles))}
    outs = tb.dequantize_4bit_many(qs, shapes, 64, "nf4", "bfloat16")
    exact["dequantize"] = all(
        same(torch, a, tb.dequantize_4bit(q, s, 64, "nf4", "bfloat16")) for a, q, s in zip(outs, qs, shapes)
    )
    del singles, outs
    print(f"{len(xs)} linears, {n} values; batch equals single calls: {exact}", flush=True)
    timed = {
        ("device copy (flat, all weights' bytes)", "copy"): (lambda: dst.copy_(flat), 4 * n),
        ("qref torch:cuda, batch", "quantize"): (lambda: tb.quantize_4bit_many(xs, 64, "nf4", True), None),
        ("qref torch:cuda, batch", "dequantize"): (
            lambda: tb.dequantize_4bit_many(qs, shapes, 64, "nf4", "bfloat16"),
            None,
        ),
        ("qref torch:cuda, 224 single calls", "quantize"): (
            lambda: [tb.quantize_4bit(x, 64, "nf4", True) for x in xs],
            None,
        ),
        ("qref torch:cuda, 224 single calls", "dequantize"): (
            lambda: [tb.dequantize_4bit(q, s, 64, "nf4", "bfloat16") for q, s in zip(qs, shapes)],
            None,
        ),
    }
    F = bitsandbytes_functional()
    if F is not None:
        states = [F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True) for x in xs]
        name = f"bitsandbytes {__import__('bitsandbytes').__version__}, 224 calls"
        timed[name, "quantize"] = (
            lambda: [F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True) for x in xs],
            None,
        )
        timed[name, "dequantize"] = (lambda: [F.dequantize_4bit(p, s) for p, s in states], None)
    moved = sum(traffic(x.numel(), True) for x in xs)
    rounds: dict = {key: [] for key in timed}
    for i in range(args.rounds):
        print(f"round {i + 1} starts {time.strftime('%H:%M:%S')}", flush=True)
        for key, (fn, _) in timed.items():
            rounds[key].append(median_ms(fn, reps=args.reps, warmup=1))
    copy_ms = statistics.median(rounds[next(iter(timed))])
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": f"python asv_bench/model_batch.py --layers {args.layers} --rounds {args.rounds} --reps {args.reps}",
        "linears": len(xs),
        "values": n,
        "bytes_moved_quantize": moved,
        "exact": exact,
        "rows": [],
    }
    for (name, op), (_, nbytes) in timed.items():
        ms = statistics.median(rounds[name, op])
        gbs = (nbytes or moved) / ms / 1e6
        result["rows"].append(
            {"impl": name, "op": op, "ms": ms, "of_copy_time": ms / copy_ms, "GB/s": gbs, "rounds_ms": rounds[name, op]}
        )
        print(f"{op:>10} {name:<44} {ms:9.2f} ms  {ms / copy_ms:5.2f} x copy  {gbs:7.0f} GB/s", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
