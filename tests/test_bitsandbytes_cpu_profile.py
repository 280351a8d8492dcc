"""The bitsandbytes CPU profile reproduces libbitsandbytes_cpu's bytes (bitsandbytes 0.50.2)."""

import numpy as np
import pytest

from qref import get_codebook, quantize_4bit
from qref.profiles import bitsandbytes_cpu as cpu

pytestmark = pytest.mark.peer
torch = pytest.importorskip("torch")
F = pytest.importorskip("bitsandbytes.functional")


def inputs():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1 << 18) + 77).astype(np.float32)
    x[:600] = 0  # whole zero blocks
    x[1000:1300] *= 1e-30  # tiny blocks
    yield "normal", x
    yield "wide", (rng.standard_normal(70_000) * np.exp(rng.uniform(-20, 20, 70_000))).astype(np.float32)
    yield "positive", np.abs(rng.standard_normal(10_000)).astype(np.float32)  # absmax-like


@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_8bit_table_quantizer_is_the_cpu_kernel(blocksize):
    code = F.create_dynamic_map(signed=True)
    assert np.array_equal(code.numpy(), get_codebook("dynamic").values)
    for name, x in inputs():
        q, state = F.quantize_blockwise(torch.from_numpy(x), code=code.clone(), blocksize=blocksize)
        ours, absmax = cpu.quantize_blockwise_8bit(x, get_codebook("dynamic"), blocksize)
        assert np.array_equal(state.absmax.numpy(), absmax), name
        assert np.array_equal(q.numpy(), ours), (name, int((q.numpy() != ours).sum()))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_8bit_table_quantizer_on_half_inputs(dtype):
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(1)).to(getattr(torch, dtype))
    q, state = F.quantize_blockwise(x, code=F.create_dynamic_map(signed=True), blocksize=256)
    ours, absmax = cpu.quantize_blockwise_8bit(x.float().numpy(), get_codebook("dynamic"), 256)
    assert np.array_equal(q.numpy(), ours) and np.array_equal(state.absmax.numpy(), absmax)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_double_quantized_4bit_state_is_the_cpu_kernels(quant_type):
    w = torch.randn(1024, 768, generator=torch.Generator().manual_seed(2))
    packed, qs = F.quantize_4bit(w, blocksize=64, quant_type=quant_type, compress_statistics=True)
    p2, s2 = cpu.quantize_4bit(w.numpy(), 64, quant_type, True, offset=qs.offset.item())
    assert np.array_equal(packed.numpy(), p2)
    assert np.array_equal(qs.absmax.numpy(), s2.absmax)
    assert np.array_equal(qs.state2.absmax.numpy(), s2.nested.absmax2)
    # the default profile (round to nearest) is not what the CPU kernel does
    _, default = quantize_4bit(w.numpy(), 64, quant_type, True, offset=qs.offset.item())
    assert not np.array_equal(default.absmax, s2.absmax)


def test_the_table_is_not_round_to_nearest():
    """Where the dynamic map's codes are closer than a table cell, the table picks a farther code."""
    dyn = get_codebook("dynamic")
    x = np.linspace(-1, 1, 200_001, dtype=np.float32)
    table, _ = cpu.quantize_blockwise_8bit(x, dyn, x.size)
    nearest = dyn.nearest(x)
    assert 0 < np.count_nonzero(table != nearest) < x.size // 100
    assert np.max(np.abs(table.astype(int) - nearest.astype(int))) > 1
