"""A double-quantized block-64 quantize returns once its first level's kernel has ended (the non-finite flag
is final), its second level still queued on the caller's stream (backends/fused4bit.py, quantize64). What a
caller reads afterwards must be the reference's: in stream order on the same stream, the offset from another
stream (DeviceScalar waits for the device), and the next call on another stream, which reuses the thread's
workspace (Workspace.get waits for the device first). Skipped without a CUDA device, CuPy and torch."""

import numpy as np
import pytest

from qref.numpy_backend import NumpyBackend

cp = pytest.importorskip("cupy")
torch = pytest.importorskip("torch")
try:
    _GPU = cp.cuda.runtime.getDeviceCount() > 0 and torch.cuda.is_available()
except Exception:  # noqa: BLE001
    _GPU = False
pytestmark = pytest.mark.skipif(not _GPU, reason="needs a CUDA device, CuPy and torch")

N = 64 * 2**15  # second level long enough to still run when the call returns


def _weights(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(N) * np.repeat(2.0 ** rng.uniform(-6, 2, N // 64), 64)).astype(np.float32)


def _same(q, r):
    assert np.array_equal(q.packed.cpu().numpy(), r.packed)
    assert np.array_equal(q.qabsmax.cpu().numpy(), r.qabsmax)
    assert np.array_equal(q.absmax2.cpu().numpy().view(np.int32), r.absmax2.view(np.int32))


def test_second_level_read_in_stream_order_and_across_streams():
    from qref.backends.torch_backend import TorchBackend

    tb, ref = TorchBackend("cuda"), NumpyBackend()
    xs = [_weights(seed) for seed in range(4)]
    want = [ref.quantize_4bit(x, 64, "nf4", True) for x in xs]
    dev = [torch.from_numpy(x).cuda() for x in xs]
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        first = tb.quantize_4bit(dev[0], 64, "nf4", True)
        again = tb.quantize_4bit(dev[1], 64, "nf4", True)  # the same stream: after the first's second level
    offset = np.float32(first.offset)  # read from the default stream: waits for the device
    assert offset.view(np.int32) == np.float32(want[0].offset).view(np.int32)
    other = tb.quantize_4bit(dev[2], 64, "nf4", True)  # the default stream, the same workspace
    last = tb.quantize_4bit(dev[3], 64, "nf4", True)
    assert np.float32(last.offset).view(np.int32) == np.float32(want[3].offset).view(np.int32)
    torch.cuda.synchronize()
    for q, r in zip((first, again, other, last), want):
        _same(q, r)
        assert np.float32(q.offset).view(np.int32) == np.float32(r.offset).view(np.int32)
