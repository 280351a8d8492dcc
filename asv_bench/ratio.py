"""Print qref's speed relative to bitsandbytes' CPU path, measured in one run (4096 x 4096 NF4, block 64).

python asv_bench/ratio.py        # targets: quantize >= 1.0, dequantize >= 0.5
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from workloads import ratios

if __name__ == "__main__":
    r = ratios()
    for op, v in r.items():
        print(f"{op:>10}: bitsandbytes time / qref time = {v:.2f}")
    sys.exit(0 if r["quantize"] >= 1.0 and r["dequantize"] >= 0.5 else 1)
