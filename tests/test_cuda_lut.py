"""The block-64 kernel's bucket table (backends/cuda_lut.py) gives the reference's nearest code for every
scaled value a finite input can produce; it is NumPy, so this runs without a GPU."""

import numpy as np
import pytest

from qref.backends import cuda_lut
from qref.codebooks import get_codebook

FOUR_BIT = ("nf4", "fp4", "nf4-symmetric", "int4", "int4-asymmetric", "nf3", "nf2", "int2", "int3")


def hard_scaled(cb, seed=0):
    """Midpoints and their float32 neighbours (4 ulps each way), +-0, +-1 and one ulp beyond, the smallest
    subnormals, and a dense sweep of [-1 - 2^-23, 1 + 2^-23]."""
    m = cb.midpoints.astype(np.float32)
    near = [m]
    for _ in range(4):
        near += [
            np.nextafter(near[-2 if len(near) > 1 else 0], np.float32(np.inf)),
            np.nextafter(near[-1 if len(near) > 1 else 0], np.float32(-np.inf)),
        ]
    one = np.float32(1)
    edges = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            np.nextafter(one, np.float32(2)),
            -np.nextafter(one, np.float32(2)),
            1e-45,
            -1e-45,
            1e-38,
            -1e-38,
        ],
        dtype=np.float32,
    )
    sweep = np.linspace(-1 - 2**-23, 1 + 2**-23, 400_001, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(seed)
    tiny = (rng.standard_normal(10_000) * 10.0 ** rng.uniform(-40, 0, 10_000)).astype(np.float32)
    return np.concatenate([*near, edges, sweep, tiny])


def reference_code(cb, s):
    return cb.nearest(np.clip(s, np.float32(-1), np.float32(1)))


@pytest.mark.parametrize("name", FOUR_BIT)
def test_lookup_equals_reference_count(name):
    cb = get_codebook(name)
    table = cuda_lut.build(cb.midpoints, cb.order)
    assert table is not None
    s = hard_scaled(cb)
    got, want = cuda_lut.lookup(table, s), reference_code(cb, s)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{name}: s={s[bad[:5]]} got {got[bad[:5]]} want {want[bad[:5]]}"


def test_table_sizes():
    """NF4's midpoints are >= 0.08 apart: 64 buckets of width 1/16; FP4 has midpoints -0.0026, 0, 0.0026:
    2048 buckets of width 2^-9."""
    assert cuda_lut.build(get_codebook("nf4").midpoints, get_codebook("nf4").order).bits == 6
    assert cuda_lut.build(get_codebook("fp4").midpoints, get_codebook("fp4").order).bits == 11


def test_no_table_when_midpoints_cannot_be_separated():
    """The 8-bit dynamic map has midpoints 1e-7 apart: no table (the kernel falls back to the search)."""
    cb = get_codebook("dynamic")
    assert cuda_lut.build(cb.midpoints, cb.order) is None
    assert cuda_lut.build(np.array([0.5, 1.0], np.float32), np.arange(3)) is None  # a midpoint at 1: clamp matters


def test_a_wrong_table_is_caught():
    """The check has teeth: shifting one midpoint by one ulp changes codes on the sweep."""
    cb = get_codebook("nf4")
    table = cuda_lut.build(cb.midpoints, cb.order)
    entries = table.entries.copy()
    k = int(np.flatnonzero(entries[:, 0] != np.float32(np.inf).view(np.uint32))[3])
    entries[k, 0] = np.nextafter(entries[k, 0:1].view(np.float32), np.float32(2)).view(np.uint32)[0]
    bent = cuda_lut.BucketTable(entries, table.bits)
    s = hard_scaled(cb)
    assert np.any(cuda_lut.lookup(bent, s) != reference_code(cb, s))


@pytest.mark.parametrize("name", ["dynamic", "nf4", "nf8", "int8"])
def test_log_table_equals_reference_count(name):
    """The second level of double quantization looks the 8-bit dynamic map up in log-scale buckets."""
    cb = get_codebook(name)
    table = cuda_lut.build_log(cb.midpoints, cb.order)
    if table is None:
        pytest.skip(f"{name}: midpoints not separable in 4096 log buckets")
    s = hard_scaled(cb)
    got, want = cuda_lut.lookup_log(table, s), reference_code(cb, s)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{name}: s={s[bad[:5]]} got {got[bad[:5]]} want {want[bad[:5]]}"


def test_dynamic_map_has_a_log_table():
    t = cuda_lut.build_log(get_codebook("dynamic").midpoints, get_codebook("dynamic").order)
    assert t is not None and t.entries.shape[0] <= 4096
    print(t.shift, t.low, t.high, t.entries.shape)


@pytest.mark.parametrize("name", FOUR_BIT)
def test_next_lookup_equals_reference_count(name):
    """The NEXT kernel (lo + (s > midpoint)) where the codebook allows it: the reference's code on every hard
    scaled value; where it does not (FP4: codes not in value order), no NEXT table."""
    cb = get_codebook(name)
    table = cuda_lut.build(cb.midpoints, cb.order)
    entries = cuda_lut.next_entries(table)
    in_order = bool(np.all(np.diff(cb.order.astype(np.int64)) == 1))
    assert (entries is not None) == in_order, name
    if entries is None:
        return
    s = hard_scaled(cb)
    got, want = cuda_lut.lookup_next(entries, table.bits, s), reference_code(cb, s)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{name}: s={s[bad[:5]]} got {got[bad[:5]]} want {want[bad[:5]]}"


def test_nf4_has_a_next_table():
    cb = get_codebook("nf4")
    assert cuda_lut.next_entries(cuda_lut.build(cb.midpoints, cb.order)) is not None


@pytest.mark.parametrize("name", ["dynamic", "nf4", "nf8", "int8"])
def test_compact_log_lookup_equals_reference_count(name):
    """The second level's compact table (DQ2_NEXT: a code byte per bucket and the midpoint above each code)
    gives the reference's code on every hard scaled value."""
    cb = get_codebook(name)
    table = cuda_lut.build_log(cb.midpoints, cb.order)
    raw = cuda_lut.compact_log(table, cb.midpoints)
    s = hard_scaled(cb)
    got, want = cuda_lut.lookup_log_compact(raw, table, s), reference_code(cb, s)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{name}: s={s[bad[:5]]} got {got[bad[:5]]} want {want[bad[:5]]}"


def test_compact_log_table_has_teeth_and_limits():
    """One midpoint one ulp off changes codes on the sweep; codes not in value order get no compact table."""
    cb = get_codebook("dynamic")
    table = cuda_lut.build_log(cb.midpoints, cb.order)
    raw = cuda_lut.compact_log(table, cb.midpoints).copy()
    above = raw.view(np.uint8).reshape(-1)[: cuda_lut.ABOVE_BYTES].view(np.float32)
    above[200] = np.nextafter(above[200], np.float32(2))
    s = hard_scaled(cb)
    assert np.any(cuda_lut.lookup_log_compact(raw, table, s) != reference_code(cb, s))
    reordered = cuda_lut.build_log(cb.midpoints, cb.order[::-1].copy())
    assert cuda_lut.compact_log(reordered, cb.midpoints) is None


def test_dynamic_map_compact_table_size():
    cb = get_codebook("dynamic")
    raw = cuda_lut.compact_log(cuda_lut.build_log(cb.midpoints, cb.order), cb.midpoints)
    assert raw is not None and raw.nbytes == 1024 + 2800  # against 2800 x 8 bytes


@pytest.mark.parametrize("name", [*FOUR_BIT, "dynamic", "nf8", "int8"])
def test_torch_cpu_codes_equal_reference_count(name):
    """torch:cpu's eager code lookup (the tail of a kernel-quantized tensor, and double quantization's
    second level) reads these tables in torch: the same codes on every hard scaled value."""
    torch = pytest.importorskip("torch")
    from qref.registry import get_backend

    be, cb = get_backend("torch:cpu"), get_codebook(name)
    s = np.clip(hard_scaled(cb), np.float32(-1), np.float32(1))
    got = be._codes(name, torch.from_numpy(s.copy())).numpy()
    want = reference_code(cb, s)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{name}: s={s[bad[:5]]} got {got[bad[:5]]} want {want[bad[:5]]}"
