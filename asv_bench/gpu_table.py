"""The GPU table of docs/performance.md in one call: NF4 block-64 quantize / dequantize of bf16 weights
on qref's backends, bitsandbytes and torchao, as GB/s (bytes read + written) and as a fraction of the
device copy bandwidth measured in the same run; plus bit-exactness of the timed kernels against the
NumPy reference at the benchmark sizes. With --rounds R every implementation, the copy and the write
ceiling are timed in R interleaved rounds and each row keeps the median over the rounds (a GPU
drifts by 5-15% within a call), with the rounds' values in the JSON. Each row also has its kernels' own
device time (`kernel_ms`: the GPU's activity records through torch.profiler, summed over every kernel and
copy the call queues, no host time), so the whole-call figures and the kernels' can be told apart; the
profiler runs only after every whole call is timed (once started, it slows later launches).

    python asv_bench/gpu_table.py --out results.json [--sizes 4096x4096 28672x8192] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from gpu_common import as_cupy_bf16, median_ms  # asv_bench/, the script's folder
from kernel_times import kernel_us
from workloads import traffic


def impls(x, torch):
    """name -> {op: callable} for every implementation available here."""
    from qref.backends.cupy_backend import CupyBackend
    from qref.backends.torch_backend import TorchBackend

    out = {}
    tb = TorchBackend("cuda")
    plain = TorchBackend("cuda")
    plain._fused = None
    cb = CupyBackend("cuda")
    xb = as_cupy_bf16(x)
    for dq in (False, True):
        sfx = " +dq" if dq else ""
        q = cb.quantize_4bit(xb, 64, "nf4", dq)
        out[f"qref cupy{sfx}"] = {
            "quantize": lambda dq=dq: cb.quantize_4bit(xb, 64, "nf4", dq),
            "dequantize": lambda q=q: cb.dequantize_4bit(q, x.shape, 64, "nf4", "bfloat16"),
        }
        qt = tb.quantize_4bit(x, 64, "nf4", dq)
        out[f"qref torch:cuda{sfx}"] = {
            "quantize": lambda dq=dq: tb.quantize_4bit(x, 64, "nf4", dq),
            "dequantize": lambda qt=qt: tb.dequantize_4bit(qt, x.shape, 64, "nf4", "bfloat16"),
        }
        qp = plain.quantize_4bit(x, 64, "nf4", dq)
        out[f"qref torch:cuda, torch ops{sfx}"] = {
            "quantize": lambda dq=dq: plain.quantize_4bit(x, 64, "nf4", dq),
            "dequantize": lambda qp=qp: plain.dequantize_4bit(qp, x.shape, 64, "nf4", "bfloat16"),
        }
    try:
        import bitsandbytes.functional as F

        for dq in (False, True):
            p, s = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq)
            out[f"bitsandbytes {__import__('bitsandbytes').__version__}{' +dq' if dq else ''}"] = {
                "quantize": lambda dq=dq: F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq),
                "dequantize": lambda p=p, s=s: F.dequantize_4bit(p, s),
            }
    except Exception as e:  # noqa: BLE001
        print(f"bitsandbytes unavailable: {e}", file=sys.stderr)
    try:
        try:
            from torchao.dtypes.nf4tensor import to_nf4
        except ImportError:  # torchao >= 0.16 moved it
            from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

        t = to_nf4(x, 64, 256)
        out[f"torchao {__import__('torchao').__version__} (+dq, scaler block 256)"] = {
            "quantize": lambda: to_nf4(x, 64, 256),
            "dequantize": lambda: t.to(torch.bfloat16),
        }
    except Exception as e:  # noqa: BLE001
        print(f"torchao unavailable: {e}", file=sys.stderr)
    return out


def exactness(x, torch) -> list[dict]:
    """The timed qref kernels vs the NumPy reference at this size: packed bytes, absmax, dq state,
    dequantized bf16 bits."""
    import qref
    from qref.backends.cupy_backend import CupyBackend
    from qref.backends.torch_backend import TorchBackend
    from qref.dtypes import BFloat16Array

    ref_in = BFloat16Array(x.view(torch.int16).cpu().numpy().view(np.uint16))
    from qref.numpy_backend import NumpyBackend

    ref = NumpyBackend()
    rows = []
    backends = (("cupy", CupyBackend("cuda")), ("torch:cuda", TorchBackend("cuda")))
    for dq in (False, True):
        r = ref.quantize_4bit(ref_in, 64, "nf4", dq)
        r_out = ref.dequantize_4bit(r, ref_in.shape, 64, "nf4", "bfloat16")
        for name, bk in backends:
            q = bk.quantize_4bit(bk.from_numpy(ref_in), 64, "nf4", dq)
            same = np.array_equal(bk.to_numpy(q.packed), r.packed)
            if dq:
                same &= (
                    np.array_equal(bk.to_numpy(q.qabsmax), r.qabsmax)
                    and np.array_equal(bk.to_numpy(q.absmax2), r.absmax2)
                    and np.float32(q.offset) == np.float32(r.offset)
                )
            else:
                same &= np.array_equal(bk.to_numpy(q.absmax), r.absmax)
            out = bk.to_numpy(bk.dequantize_4bit(q, ref_in.shape, 64, "nf4", "bfloat16"))
            rows.append(
                {
                    "backend": name,
                    "dq": dq,
                    "shape": list(ref_in.shape),
                    "quantize_exact": bool(same),
                    "dequantize_exact": bool(out == r_out),
                }
            )
            print(rows[-1], flush=True)
    del qref
    return rows


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_table.json")
    ap.add_argument(
        "--sizes", nargs="*", default=["1024x1024", "2048x2048", "4096x4096", "8192x8192", "16384x8192", "28672x8192"]
    )
    ap.add_argument("--exact-sizes", nargs="*", default=["4096x4096", "28672x8192"])
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each row keeps their median")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per round (median)")
    ap.add_argument("--kernel-reps", type=int, default=10, help="calls whose kernels' device time is averaged")
    args = ap.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": [], "exact": []}
    measured = []
    for size in args.sizes:  # whole calls first, every size: the profiler is not started before they are timed
        rows, cols = map(int, size.split("x"))
        x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16, generator=gen)
        n = x.numel()
        out = torch.empty_like(x)
        timed = {
            ("device copy", "copy"): (lambda x=x: x.clone(), 4 * n),
            ("device write (zero_)", "write"): (lambda out=out: out.zero_(), 2 * n),
        }
        for name, ops in impls(x, torch).items():
            for op, fn in ops.items():
                timed[name, op] = (fn, traffic(n, "dq" in name))
        rounds = {key: [] for key in timed}
        for i in range(args.rounds):
            print(f"{size} round {i + 1} starts {time.strftime('%H:%M:%S')}", flush=True)
            for key, (fn, _) in timed.items():
                rounds[key].append(median_ms(fn, reps=args.reps, warmup=3))
        if size in args.exact_sizes:
            results["exact"] += exactness(x, torch)
        measured.append((size, n, timed, rounds))
    for size, n, timed, rounds in measured:  # then the kernels' own device time (CUPTI)
        kernels = {key: sum(kernel_us(fn, args.kernel_reps).values()) / 1e3 for key, (fn, _) in timed.items()}
        copy_gbs = 4 * n / statistics.median(rounds["device copy", "copy"]) / 1e6
        copy_kernel_gbs = 4 * n / kernels["device copy", "copy"] / 1e6
        for (name, op), (_, moved) in timed.items():
            ms, kms = statistics.median(rounds[name, op]), kernels[name, op]
            gbs, kgbs = moved / ms / 1e6, moved / kms / 1e6
            results["rows"].append(
                {
                    "impl": name,
                    "size": size,
                    "op": op,
                    "ms": ms,
                    "GB/s": gbs,
                    "of_copy": gbs / copy_gbs,
                    "rounds_ms": rounds[name, op],
                    "kernel_ms": kms,
                    "kernel_GB/s": kgbs,
                    "kernel_of_copy": kgbs / copy_kernel_gbs,
                }
            )
            print(
                f"{size:>11} {op:>10} {name:<40} {ms:9.3f} ms {gbs:8.1f} GB/s {gbs / copy_gbs:6.1%}"
                f"   rounds: {' '.join(f'{v:.3f}' for v in rounds[name, op])}"
                f"   kernels {kms:8.3f} ms {kgbs / copy_kernel_gbs:6.1%}",
                flush=True,
            )
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
