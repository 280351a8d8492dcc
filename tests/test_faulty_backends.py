"""The conformance suite must be able to fail: backends with one decision point changed each are
registered in-process, the suite runs against them (pytest, in-process), and must report the op."""

import numpy as np
import pytest

from qref import blockwise, packing
from qref.codebooks import get_codebook
from qref.conformance import tally
from qref.numpy_backend import NumpyBackend
from qref.registry import register, unregister


class TiesUp(NumpyBackend):
    """A value exactly on a midpoint takes the upper code (searchsorted side='right')."""

    def quantize_blockwise(self, x, codebook, blocksize):
        cb = get_codebook(codebook)
        x32 = np.asarray(x.to_float32() if hasattr(x, "to_float32") else x, np.float32)
        flat = x32.reshape(-1)
        absmax = blockwise.block_absmax(flat, blocksize)
        scaled = blockwise.scale_blocks(flat, absmax, blocksize)
        codes = cb.order.astype(np.uint8)[np.searchsorted(cb.midpoints, scaled, side="right")]
        return codes.reshape(x32.shape), absmax


class DivideFullBlocks(NumpyBackend):
    """Full blocks divided by absmax instead of multiplied by its float32 reciprocal."""

    def quantize_blockwise(self, x, codebook, blocksize):
        x32 = np.asarray(x.to_float32() if hasattr(x, "to_float32") else x, np.float32)
        flat = x32.reshape(-1)
        absmax = blockwise.block_absmax(flat, blocksize)
        per_elem = np.repeat(np.maximum(absmax, blockwise.ABSMAX_FLOOR), blocksize)[: flat.size]
        scaled = np.clip(flat / per_elem, -1, 1).astype(np.float32)
        return get_codebook(codebook).nearest(scaled).reshape(x32.shape), absmax


class LowNibbleFirst(NumpyBackend):
    """The first code of a pair stored in the low nibble."""

    def pack_nibbles(self, codes, pad_code=0):
        hi_first = packing.pack_nibbles(codes, pad_code)
        return ((hi_first << 4) | (hi_first >> 4)).astype(np.uint8)

    def unpack_nibbles(self, packed, n):
        return packing.unpack_nibbles(((packed << 4) | (packed >> 4)).astype(np.uint8), n)


class Float32Mean(NumpyBackend):
    """Double-quantization offset by a float32 pairwise mean (PyTorch's) instead of the exact one."""

    def mean_offset(self, absmax):
        return np.float32(np.asarray(absmax, np.float32).mean(dtype=np.float32))


class RoundHalfAway(NumpyBackend):
    """Group-wise codes rounded half away from zero instead of half to even."""

    def quantize_groupwise(self, W, bits, group_size, profile):
        codes, scales, zeros = super().quantize_groupwise(W, bits, group_size, profile)
        w = W.reshape(W.shape[0], -1, group_size).astype(np.float32)
        if profile == "minmax":
            t = (w - zeros[..., None]) / scales[..., None]
            q = np.floor(np.abs(t) + np.float32(0.5)) * np.sign(t)
        else:
            t = w / scales[..., None]
            q = np.floor(np.abs(t) + np.float32(0.5)) * np.sign(t) + zeros[..., None]
        q = np.clip(q, 0, 2**bits - 1).astype(np.uint8).reshape(W.shape)
        return q, scales, zeros


class TruncatedSVD(NumpyBackend):
    """svd_factors drops the last kept singular direction (a wrong rank-r solution)."""

    def svd_factors(self, R, rank):
        L, Rt = super().svd_factors(R, rank)
        L[:, -1] = 0
        return L, Rt


FAULTS = [
    (TiesUp, "test_quantize_blockwise", "quantize_blockwise codes"),
    (DivideFullBlocks, "test_quantize_4bit", "quantize_4bit packed"),
    (LowNibbleFirst, "test_nibbles", "pack_nibbles"),
    (Float32Mean, "test_mean_offset", "double_quantize offset"),
    (RoundHalfAway, "test_groupwise", "quantize_groupwise codes"),
    (TruncatedSVD, "test_svd_factors", "svd_factors"),
]


@pytest.mark.parametrize("fault,test,op", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_suite_reports_fault(fault, test, op):
    name = f"faulty-{fault.__name__.lower()}"
    register(name, fault)
    tally.reset()
    try:
        status = pytest.main(
            [
                "--pyargs",
                "qref.conformance",
                "--qref-backend",
                name,
                "-k",
                test,
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "--no-header",
                "-o",
                "addopts=",
            ]
        )
    finally:
        unregister(name)
    failed = {o for (o, _), c in tally.counts().items() if c["mismatches"]}
    tally.reset()
    assert status == pytest.ExitCode.TESTS_FAILED
    assert op in failed, f"the suite did not name {op!r}; it named {failed}"


def test_reference_passes_its_own_suite():
    tally.reset()
    status = pytest.main(
        [
            "--pyargs",
            "qref.conformance",
            "--qref-backend",
            "numpy",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-header",
            "-o",
            "addopts=",
            "-k",
            "nibbles or groupwise or mean_offset",
        ]
    )
    counts = tally.counts()
    tally.reset()
    assert status == pytest.ExitCode.OK
    assert counts and all(c["mismatches"] == 0 and c["cases"] > 0 for c in counts.values())
