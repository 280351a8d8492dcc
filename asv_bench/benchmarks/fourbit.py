"""asv: NF4 block-64 quantize/dequantize, qref vs bitsandbytes (CPU), and their ratio."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from workloads import IMPLS, OPS, make, ratios


class FourBit:
    params = (IMPLS, OPS, [1024, 4096])
    param_names = ["impl", "op", "n"]
    number, repeat, warmup_time, rounds = 1, (3, 5, 10.0), 0, 1  # as backends.Backends

    def setup(self, impl, op, n):
        self.fn = make(impl, op, n)  # NotImplementedError skips an impl that is not installed
        self.fn()  # warm-up: a timing, even asv's single quick one, is of the op alone

    def time_op(self, impl, op, n):
        self.fn()


class RatioToBitsandbytes:
    """bitsandbytes time / qref time, both measured in the same run (> 1: qref is faster)."""

    params = (OPS,)
    param_names = ["op"]
    unit = "ratio"

    def setup(self, op):
        make("bitsandbytes", op, 64)

    def track_ratio(self, op):
        return ratios(4096, repeats=3)[op]
