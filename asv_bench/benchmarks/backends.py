"""asv: every registered backend x device x size x op; time, GB/s and fraction of the device's copy
bandwidth (both measured in the same process). Unavailable backends (no CUDA, no CuPy) are skipped."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from workloads import BACKEND_OPS, BACKENDS, SIZES, backend_workload, copy_gbps, timed


class Backends:
    params = (BACKENDS, BACKEND_OPS, SIZES)
    param_names = ["backend", "op", "n"]
    timeout = 300
    # one call a sample, 3 to 5 samples (asv's median and spread: what `history.py check` compares),
    # no asv warm-up (setup has run the op once, then for workloads.WARMUP_S);
    # --quick takes one sample (CI), a GPU machine's record 3 to 5 (scripts/gpu_runner.py)
    number, repeat, warmup_time, rounds = 1, (3, 5, 10.0), 0, 1

    def setup(self, backend, op, n):
        self.run, self.bytes, self.sync = backend_workload(backend, op, n)  # NotImplementedError: skipped

    def time_op(self, backend, op, n):
        self.run()
        self.sync()

    def track_gbps(self, backend, op, n):
        return self.bytes / timed(self.run, self.sync) / 1e9

    track_gbps.unit = "GB/s"

    def track_fraction_of_copy(self, backend, op, n):
        return self.bytes / timed(self.run, self.sync) / 1e9 / copy_gbps(backend)

    track_fraction_of_copy.unit = "fraction"
