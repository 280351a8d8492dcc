"""A codebook's tables on one device for the fused 4-bit calls (backends/fused4bit.py): values, midpoints,
order and the bucket tables of backends/cuda_lut.py, made once from qref.codebooks."""

from __future__ import annotations

import numpy as np

from qref.codebooks import get_codebook

from . import cuda_lut


class Tables:
    """Codebook values, midpoints, order and bucket table (backends/cuda_lut.py: (entries, bits), else a
    log-scale one (entries, size, shift, low, high), else None) on one device, from qref.codebooks."""

    def __init__(self, cp, device_id: int):
        self.cp, self.device_id, self.cache, self.nexts, self.compacts = cp, device_id, {}, {}, {}

    def log(self, name: str, mod):
        """The codebook's log-scale table as `mod`'s kernels read it: with the knob DQ2_NEXT its compact form
        (cuda_lut.compact_log), None where the codebook has none; else (entries, size, shift, low, high)."""
        table = self(name)[3]
        if mod.knobs["DQ2_NEXT"]:
            return self.compacts[name]
        return table if table is not None and len(table) == 5 else None

    def next(self, name: str):
        """The codebook's NEXT entries on the device (cuda_lut.next_entries), or None (no bucket table, or
        codes not in value order); made with its bucket table."""
        self(name)
        return self.nexts[name]

    def __call__(self, name):
        if not isinstance(name, str) or name not in self.cache:  # a list would fail the cache's hashing
            cb = get_codebook(name)  # refuses an unknown name
            lut, log = cuda_lut.build(cb.midpoints, cb.order), None
            if lut is None:
                log = cuda_lut.build_log(cb.midpoints, cb.order)
            nxt = None if lut is None else cuda_lut.next_entries(lut)
            with self.cp.cuda.Device(self.device_id):
                table = None
                self.nexts[name] = None if nxt is None else self.cp.asarray(nxt)
                if lut is not None:
                    table = (self.cp.asarray(lut.entries), lut.bits)
                elif log is not None:
                    table = (self.cp.asarray(log.entries), log.entries.shape[0], log.shift, log.low, log.high)
                raw = None if log is None else cuda_lut.compact_log(log, cb.midpoints)
                self.compacts[name] = None if raw is None else (self.cp.asarray(raw), raw.shape[0], *table[2:])
                self.cache[name] = (
                    *(self.cp.asarray(a) for a in (cb.values, cb.midpoints, cb.order.astype(np.uint8))),
                    table,
                )
        return self.cache[name]
