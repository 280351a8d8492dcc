"""bitsandbytes on CUDA against the reference (the bnb-cuda-* entries of known-divergences); needs CUDA."""

import numpy as np
import pytest

import qref

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.peer, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def bnb_cuda(bnb):
    from qref.conformance.peers import bitsandbytes as b

    return b


def test_report_has_no_unexplained_divergence(bnb_cuda):
    from qref.conformance.check import check_bitsandbytes

    rows = check_bitsandbytes(blocksizes=(32, 64), device="cuda")
    assert all(r.mismatches == 0 for r in rows), [(r.op, r.first) for r in rows if r.mismatches]


def test_21_zero_block_absmax_zero(bnb_cuda):
    packed, state = bnb_cuda.quantize_4bit(np.zeros(32, np.float32), 32, "nf4", device="cuda")
    assert bnb_cuda.from_torch(state.absmax)[0] == 0 and not packed.any()


def test_24_tie_goes_up(bnb_cuda):
    x = np.zeros(32, np.float32)
    x[0], x[12] = 1.0, np.float32(0.5016634464263916)
    packed, _ = bnb_cuda.quantize_4bit(x, 32, "nf4", device="cuda")
    assert packed[6] == 215 and qref.quantize_4bit(x, 32, "nf4")[0].reshape(-1)[6] == 199
