"""One quantize (with and without double quantization) and one dequantize of a bf16 weight through qref's
CuPy backend: the launches Nsight Compute profiles (run it under ncu):

    ncu --clock-control none --kernel-name regex:"quant_lut|quant_dq256|dequant8" \\
        --section SpeedOfLight --section SchedulerStats --section WarpStateStats --section Occupancy \\
        python3 asv_bench/ncu_target.py [28672x8192]
"""

import sys

import cupy as cp

from qref.backends.cupy_backend import CupyBackend, CupyBF16

r, c = map(int, (sys.argv[1] if len(sys.argv) > 1 else "28672x8192").split("x"))
bits = (cp.random.default_rng(0).standard_normal(r * c, dtype=cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
cb = CupyBackend("cuda")
x = CupyBF16(bits.reshape(r, c))
q = cb.quantize_4bit(x, 64, "nf4")
cb.quantize_4bit(x, 64, "nf4", True)
cb.dequantize_4bit(q, (r, c), 64, "nf4", "bfloat16")
cp.cuda.Device().synchronize()
