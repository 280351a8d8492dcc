"""The compiled CPU path of torch:cpu's 4-bit quantization (backends/cpu_compiled.py) gives the
reference's bits on large inputs made of the battery's hard values, and a wrong constant in it is
caught."""

import numpy as np
import pytest

import qref

torch = pytest.importorskip("torch")

from qref.backends import cpu_compiled  # noqa: E402
from qref.conformance import battery  # noqa: E402
from qref.dtypes import BFloat16Array, as_float32  # noqa: E402
from qref.registry import get_backend  # noqa: E402


def hard_input(quant_type: str, fmt: str) -> object:
    """Every float32 battery case of this codebook, tiled to just over MIN_ELEMENTS, with a ragged tail."""
    parts = [as_float32(x).reshape(-1) for _, x in battery.cases(quant_type, 64)]
    flat = np.concatenate(parts)
    reps = -(-(cpu_compiled.MIN_ELEMENTS + 64) // flat.size)
    x = np.tile(flat, reps)[: cpu_compiled.MIN_ELEMENTS + 64 * 3 + 17]
    return BFloat16Array.from_float32(x) if fmt == "bfloat16" else x.astype(fmt)


def quantize(be, x, quant_type):
    q = be.quantize_4bit(be.from_numpy(x), 64, quant_type)
    return be.to_numpy(q.packed), be.to_numpy(q.absmax)


@pytest.fixture(scope="module")
def backend():
    if not cpu_compiled.enabled():
        pytest.skip("compilation disabled (QREF_TORCH_COMPILE=0)")
    return get_backend("torch:cpu")


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_compiled_codes_are_the_references(backend, quant_type, fmt):
    x = hard_input(quant_type, fmt)
    packed, absmax = quantize(backend, x, quant_type)
    if cpu_compiled._failed:
        pytest.skip(f"compilation unavailable here: {cpu_compiled._failed[0]}")
    assert quant_type in cpu_compiled._compiled  # the compiled path ran
    ref_packed, ref_state = qref.quantize_4bit(x, 64, quant_type)
    assert np.array_equal(absmax, ref_state.absmax)
    assert np.array_equal(packed.reshape(-1), ref_packed.reshape(-1))


def test_non_finite_input_is_refused_on_the_compiled_path(backend):
    x = hard_input("nf4", "float32")
    x[cpu_compiled.MIN_ELEMENTS // 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        backend.quantize_4bit(backend.from_numpy(x), 64, "nf4")


def test_a_wrong_midpoint_in_the_compiled_path_is_caught(backend, monkeypatch):
    cb = qref.codebooks.get_codebook("nf4")
    wrong = np.asarray(cb.midpoints, np.float32).copy()
    wrong[7] = np.nextafter(wrong[7], np.float32(1))  # one ulp: only values on that midpoint move
    monkeypatch.setattr(cpu_compiled, "_compiled", {"nf4": cpu_compiled._make(wrong, cb.order)})
    x = hard_input("nf4", "float32")
    packed, _ = quantize(backend, x, "nf4")
    if cpu_compiled._failed:
        pytest.skip(f"compilation unavailable here: {cpu_compiled._failed[0]}")
    assert not np.array_equal(packed.reshape(-1), qref.quantize_4bit(x, 64, "nf4")[0].reshape(-1))
