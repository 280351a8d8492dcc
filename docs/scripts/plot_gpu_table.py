"""GB/s versus matrix size from a GPU table (asv_bench/gpu_table.py --out FILE): one SVG per op, whole
calls, and where the table has them the kernels' own device time of qref's backends ("kernels").
Run: python docs/scripts/plot_gpu_table.py docs/data/gpu_table_h100.json docs/gpu-gbps"""

import json
import sys
from pathlib import Path

from gpu_table_md import numel  # sizes parsed, never evaluated (a sibling script)

from experiments.report import line_plot


def main(src, prefix):
    d = json.loads(Path(src).read_text())
    sizes = sorted({r["size"] for r in d["rows"]}, key=lambda s: numel(s))
    for op in ("quantize", "dequantize"):
        series = {}
        for impl in sorted({r["impl"] for r in d["rows"]}):
            pts = {r["size"]: r["GB/s"] for r in d["rows"] if r["impl"] == impl and r["op"] in (op, "copy")}
            if len(pts) == len(sizes) and "torch ops" not in impl:
                series[impl] = [pts[s] for s in sizes]
            kpts = {r["size"]: r.get("kernel_GB/s") for r in d["rows"] if r["impl"] == impl and r["op"] == op}
            if (
                impl.startswith("qref")
                and "torch ops" not in impl
                and "+dq" not in impl
                and None not in kpts.values()
                and len(kpts) == len(sizes)
            ):
                series[f"{impl} (kernels)"] = [kpts[s] for s in sizes]
        numel = [numel(s) for s in sizes]
        line_plot(
            series,
            numel,
            f"NF4 block-64 {op} of bf16, {d['device']}",
            "GB/s (read + written)",
            Path(f"{prefix}-{op}.svg"),
            xlabels=sizes,
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
