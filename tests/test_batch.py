"""Batches (qref.batch, docs/batch.md): a batch is its single calls, bit for bit; a refused batch names
its item; on CUDA the calls of a batch wait once, and a failed batch leaves nothing remembered as
finite. The CUDA tests skip without a GPU."""

from contextlib import contextmanager

import numpy as np
import pytest

from qref.backend import FourBit
from qref.batch import run_many
from qref.numpy_backend import NumpyBackend
from qref.registry import BackendUnavailable, get_backend


def _backend(spec):
    try:
        return get_backend(spec)
    except BackendUnavailable as e:
        pytest.skip(str(e))


def _arrays(rng, sizes=(4096, 130, 64 * 33, 7)):
    return [(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for n in sizes]


def _same_state(bk, q, r):
    for name in ("packed", "absmax", "qabsmax", "absmax2"):
        a, b = getattr(q, name), getattr(r, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(bk.to_numpy(a), np.asarray(b), err_msg=name)
    if r.offset is not None:
        assert np.float32(q.offset) == np.float32(r.offset)


@pytest.mark.parametrize("spec", ["numpy", "torch:cpu", "torch:cuda", "cupy"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_batch_equals_single_calls(spec, double_quant):
    bk, ref = _backend(spec), NumpyBackend()
    xs = _arrays(np.random.default_rng(1))
    qs = bk.quantize_4bit_many([bk.from_numpy(x) for x in xs], 64, "nf4", double_quant)
    for x, q in zip(xs, qs):
        _same_state(bk, q, ref.quantize_4bit(x, 64, "nf4", double_quant))
    outs = bk.dequantize_4bit_many(qs, [x.shape for x in xs], 64, "nf4", "float16")
    for x, out in zip(xs, outs):
        want = ref.dequantize_4bit(ref.quantize_4bit(x, 64, "nf4", double_quant), x.shape, 64, "nf4", "float16")
        np.testing.assert_array_equal(bk.to_numpy(out), want)
    assert bk.quantize_4bit_many([], 64, "nf4") == []


@pytest.mark.parametrize("spec", ["numpy", "torch:cpu", "torch:cuda", "cupy"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_a_refused_item_is_named(spec, double_quant):
    bk = _backend(spec)
    xs = _arrays(np.random.default_rng(2))
    for bad in range(len(xs)):
        ys = [x.copy() for x in xs]
        ys[bad][-1] = [np.nan, np.inf, -np.inf][bad % 3]
        with pytest.raises(ValueError, match=rf"^xs\[{bad}\]: .*non-finite"):
            bk.quantize_4bit_many([bk.from_numpy(y) for y in ys], 64, "nf4", double_quant)
    with pytest.raises(ValueError, match=r"^xs\[0\]: blocksize"):  # an argument: refused at the first item
        bk.quantize_4bit_many([bk.from_numpy(xs[0]), bk.from_numpy(xs[1])], 65, "nf4")
    with pytest.raises(TypeError, match="xs must be a list"):
        bk.quantize_4bit_many(bk.from_numpy(xs[0]), 64, "nf4")
    qs = bk.quantize_4bit_many([bk.from_numpy(x) for x in xs], 64, "nf4")
    with pytest.raises(ValueError, match="qs has 4 items but shapes has 3"):
        bk.dequantize_4bit_many(qs, [x.shape for x in xs[:3]], 64, "nf4")
    with pytest.raises(ValueError, match=r"^qs\[2\]: "):  # a wrong shape for one state
        bk.dequantize_4bit_many(qs, [x.shape for x in xs[:2]] + [(5,), xs[3].shape], 64, "nf4")


@pytest.mark.parametrize("spec", ["torch:cuda", "cupy"])
def test_a_non_finite_state_is_named_and_not_remembered(spec):
    """A state with a NaN absmax in a batch of states the backend found finite: the batch names it, and a
    later single dequantize of it still refuses it (the failed batch remembered no scale as finite)."""
    bk = _backend(spec)
    xs = _arrays(np.random.default_rng(3), sizes=(4096, 4096, 4096))
    qs = bk.quantize_4bit_many([bk.from_numpy(x) for x in xs], 64, "nf4")
    absmax = bk.to_numpy(qs[1].absmax)
    absmax[3] = np.nan
    bad = FourBit(qs[1].packed, bk.from_numpy(absmax))
    shapes = [x.shape for x in xs]
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^qs\[1\]: "):
            bk.dequantize_4bit_many([qs[0], bad, qs[2]], shapes, 64, "nf4", "bfloat16")
    with pytest.raises(ValueError):
        bk.dequantize_4bit(bad, shapes[1], 64, "nf4", "bfloat16")
    outs = bk.dequantize_4bit_many(qs, shapes, 64, "nf4", "bfloat16")  # the good ones, twice: the prepared path
    again = bk.dequantize_4bit_many(qs, shapes, 64, "nf4", "bfloat16")
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(bk.to_numpy(a).bits, bk.to_numpy(b).bits)


def test_run_many_finds_the_item_of_a_deferred_failure():
    """A batch whose deferred check failed: the items are run again one by one and the first error named;
    a call's own error with no deferred failure is that item's; a deferred failure no single call
    reproduces is an error, not a silent result."""
    calls = []

    def call(v):
        calls.append(v)
        if v < 0 and not deferring:
            raise ValueError("negative")
        return v

    def batch(result):
        @contextmanager
        def cm():
            nonlocal deferring
            deferring = True
            try:
                yield lambda: result
            finally:
                deferring = False

        return cm

    deferring = False
    assert run_many("xs", [(1,), (2,)], call, batch(False)) == [1, 2]
    with pytest.raises(ValueError, match=r"^xs\[2\]: negative"):
        run_many("xs", [(1,), (2,), (-3,), (4,)], call, batch(True))
    with pytest.raises(RuntimeError, match="every item alone passes"):
        run_many("xs", [(1,), (2,)], call, batch(True))

    def own(v):
        if v == 2:
            raise TypeError("two")
        return v

    with pytest.raises(TypeError, match=r"^xs\[1\]: two"):
        run_many("xs", [(1,), (2,), (3,)], own, batch(False))
