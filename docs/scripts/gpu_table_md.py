"""Markdown of a GPU table (asv_bench/gpu_table.py --out FILE): GB/s (fraction of the copy bandwidth) per
implementation and size, then qref's ratios to bitsandbytes and its double-quantization cost as times.
Run: python docs/scripts/gpu_table_md.py docs/data/gpu_table_h100.json"""

import json
import sys
from pathlib import Path


def numel(size: str) -> int:
    """'4096x4096' -> 16777216; anything but digits and 'x' is refused (the file is data, not code)."""
    parts = size.split("x")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"size {size!r} is not of the form NxM")
    out = 1
    for p in parts:
        out *= int(p)
    return out


def main(src):
    d = json.loads(Path(src).read_text())
    rows = d["rows"]
    sizes = sorted({r["size"] for r in rows}, key=lambda s: numel(s))
    at = {(r["impl"], r["op"], r["size"]): r for r in rows}
    impls = list(dict.fromkeys(r["impl"] for r in rows if r["op"] in ("quantize", "dequantize")))
    kernels = all("kernel_ms" in r for r in rows)
    for op in ("quantize", "dequantize"):
        print(f"| {op} GB/s (of copy): whole call{'; kernels' if kernels else ''} | " + " | ".join(sizes) + " |")
        print("|---" * (len(sizes) + 1) + "|")
        for impl in impls:
            cells = [
                f"{at[impl, op, s]['GB/s']:.0f} ({at[impl, op, s]['of_copy']:.0%})"
                + (
                    f"; {at[impl, op, s]['kernel_GB/s']:.0f} ({at[impl, op, s]['kernel_of_copy']:.0%})"
                    if kernels
                    else ""
                )
                for s in sizes
            ]
            print(f"| {impl} | " + " | ".join(cells) + " |")
        print()
    for ref in ("device copy", "device write (zero_)"):
        op = "copy" if "copy" in ref else "write"
        print(
            f"{ref}: "
            + ", ".join(f"{at[ref, op, s]['GB/s']:.0f}" for s in sizes)
            + " GB/s"
            + (
                "; kernels " + ", ".join(f"{at[ref, op, s]['kernel_GB/s']:.0f}" for s in sizes) + " GB/s"
                if kernels
                else ""
            )
        )
    bnb = next(i for i in impls if i.startswith("bitsandbytes") and "+dq" not in i)
    print()
    print("| time ratio | " + " | ".join(sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for key, what in (("ms", "whole call"), ("kernel_ms", "kernels"))[: 2 if kernels else 1]:
        for backend in ("qref cupy", "qref torch:cuda"):
            for op in ("quantize", "dequantize"):
                r = [at[bnb, op, s][key] / at[backend, op, s][key] for s in sizes]
                print(
                    f"| {backend} {op} ({what}): bitsandbytes time / qref time | "
                    + " | ".join(f"{v:.2f}x" for v in r)
                    + " |"
                )
            r = [at[backend + " +dq", "quantize", s][key] / at[backend, "quantize", s][key] - 1 for s in sizes]
            print(
                f"| {backend} quantize ({what}): cost of fused double quantization | "
                + " | ".join(f"{v:+.0%}" for v in r)
                + " |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
