"""qref.testing's forward checks: check_linear_4bit and check_qalora_forward pass correct kernels,
including bitsandbytes' matmul_4bit and a torch QA-LoRA layer, and catch wrong ones."""

import numpy as np
import pytest

from qref.blockwise import dequantize_blockwise
from qref.codebooks import get_codebook
from qref.gptq_pack import from_gptq
from qref.groupwise import dequantize_groupwise
from qref.packing import unpack_nibbles
from qref.testing import check_linear_4bit, check_qalora_forward

pytest.importorskip("hypothesis")


def weight(packed, absmax, shape, quant_type="nf4"):
    n = int(np.prod(shape))
    return dequantize_blockwise(unpack_nibbles(packed, n), absmax, get_codebook(quant_type), 64).reshape(shape)


def good_linear(x, packed, absmax, shape):
    return (x @ weight(packed, absmax, shape).T).astype(np.float32)


def test_a_correct_linear_passes():
    check_linear_4bit(good_linear, max_examples=30)


def test_a_linear_accumulating_in_float16_is_caught():
    def half_accumulation(x, packed, absmax, shape):
        W = weight(packed, absmax, shape)
        y = np.zeros((x.shape[0], W.shape[0]), np.float16)
        for i in range(x.shape[1]):  # every partial sum rounded to float16
            y = (y + (x[:, i : i + 1] * W[:, i]).astype(np.float16)).astype(np.float16)
        return y.astype(np.float32)

    with pytest.raises(AssertionError, match="beyond the certified bound"):
        check_linear_4bit(half_accumulation, max_examples=30)


def test_a_linear_with_one_wrong_block_is_caught_on_one_row():
    def second_block_scaled(x, packed, absmax, shape):
        a = absmax.copy()
        if a.size > 1:
            a[1] *= np.float32(1.01)
        return (x @ weight(packed, a, shape).T).astype(np.float32)

    with pytest.raises(AssertionError, match="smallest failing input found: \\(array\\(\\[\\[") as e:
        check_linear_4bit(second_block_scaled, max_examples=30)
    assert "first at flat index" in str(e.value)


def bnb_matmul_4bit(device):
    """bitsandbytes' matmul_4bit on check_linear_4bit's arguments (x, packed bytes, absmax, shape)."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    F = bnb.functional

    def matmul(x, packed, absmax, shape):
        code = F.get_4bit_type("nf4", device=device)
        state = F.QuantState(absmax, torch.Size(shape), code=code, blocksize=64, quant_type="nf4", dtype=x.dtype)
        return bnb.matmul_4bit(x, packed.reshape(-1, 1).t(), quant_state=state)

    return matmul


@pytest.mark.peer
def test_bitsandbytes_matmul_4bit_passes():
    check_linear_4bit(bnb_matmul_4bit("cpu"), max_examples=20, array="torch")


def torch_qalora(pooling_factor):
    """A small torch QA-LoRA layer: GPTQ v2 dequantize, pooled adapter, `pooling_factor(G, g)` on the sums."""
    import torch

    def layer(x, tensors, A, B, scaling):
        g_idx = tensors["g_idx"].long()
        d_in = g_idx.numel()
        g = d_in // tensors["scales"].shape[0]
        shifts = torch.arange(0, 32, 4, dtype=torch.int32)
        q = ((tensors["qweight"].unsqueeze(1) >> shifts.view(1, -1, 1)) & 15).reshape(d_in, -1)
        d_out = tensors["scales"].shape[1]
        z = ((tensors["qzeros"].unsqueeze(2) >> shifts.view(1, 1, -1)) & 15).reshape(tensors["qzeros"].shape[0], -1)
        z = z[:, :d_out]  # the last word's padding
        W = tensors["scales"].float()[g_idx] * (q.float() - z.float()[g_idx])  # (D_in, D_out)
        groups = d_in // g
        pooled = x.view(x.shape[0], groups, g).sum(-1) * pooling_factor(groups, g)
        return x @ W + scaling * (pooled @ A.t()) @ B.t()

    return layer


def test_bnb_cuda_inference_rule_on_its_minimal_example():
    """The values bitsandbytes' CUDA inference kernel returned on an H200 for the first row of the
    battery case normal-2d (W 64 x 64, x from seed 0): beyond the reference's bound, within the
    kernel's own rule (code and absmax rounded to the 16-bit format, products rounded to it)."""
    from qref import quantize_4bit
    from qref.dtypes import BFloat16Array
    from qref.linear import check_linear, linear_4bit
    from qref.testing_core import _float32_battery

    W = dict(_float32_battery("nf4", 64))["normal-2d/float32"].reshape(-1, 64)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)[:1]
    packed, state = quantize_4bit(W, 64, "nf4")
    for compute, theirs in (
        ("bfloat16", [-0.609375, 11.6875, 2.234375]),
        ("float16", [-0.6225586, 11.734375, 2.2578125]),
    ):
        xc = BFloat16Array.from_float32(x) if compute == "bfloat16" else x.astype(np.float16)
        got = np.array([theirs])
        y, bound = linear_4bit(xc, packed, state, compute=compute)
        assert not check_linear(got, y[:, :3], bound[:, :3])[0]
        y, bound = linear_4bit(xc, packed, state, compute=compute, kernel="bnb-cuda-inference")
        assert check_linear(got, y[:, :3], bound[:, :3])[0]


def test_a_torch_qalora_layer_passes_and_the_papers_pooling_is_caught():
    pytest.importorskip("torch")
    check_qalora_forward(torch_qalora(lambda G, g: G / g), max_examples=20, array="torch")
    with pytest.raises(AssertionError, match="beyond the certified bound"):
        check_qalora_forward(torch_qalora(lambda G, g: 1 / g), max_examples=20, array="torch")


def test_qalora_numpy_layer_with_the_average_pooling_passes_its_own_check():
    def average(x, tensors, A, B, scaling):
        gq = from_gptq(tensors, 4, 32, "v2")
        W = dequantize_groupwise(gq)
        pooled = x.reshape(x.shape[0], -1, 32).mean(-1)
        return (x @ W.T + scaling * (pooled @ A.T) @ B.T).astype(np.float32)

    check_qalora_forward(average, pooling="average", max_examples=20)


def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch


@pytest.mark.peer
@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_bitsandbytes_matmul_4bit_on_cuda(compute):
    """bitsandbytes' CUDA matmul_4bit without gradients runs its inference kernel, which rounds the
    code, the absmax and every product to the 16-bit format (known divergence
    bnb-cuda-4bit-inference-16bit): beyond the float32 contract, within the kernel's own rule."""
    cuda()
    matmul = bnb_matmul_4bit("cuda")
    with pytest.raises(AssertionError, match="beyond the certified bound"):
        check_linear_4bit(matmul, max_examples=50, array="torch", device="cuda", compute=compute)
    check_linear_4bit(
        matmul, max_examples=50, array="torch", device="cuda", compute=compute, kernel="bnb-cuda-inference"
    )


@pytest.mark.peer
def test_unsloth_fast_dequantize_on_cuda():
    """unsloth's fast_dequantize (NF4, bfloat16 output) against the reference: bit for bit, except
    subnormal results, which its CUDA kernel flushes to zero (the known divergence flush-to-zero)."""
    torch = cuda()
    from qref.conformance.peers import unsloth

    ok, why = unsloth.available()
    if not ok:
        pytest.skip(why)
    utils = unsloth.kernels()
    F = pytest.importorskip("bitsandbytes.functional")

    def dequantize(packed, absmax, shape):
        code = F.get_4bit_type("nf4", device="cuda")
        state = F.QuantState(absmax, torch.Size(shape), code=code, blocksize=64, quant_type="nf4", dtype=torch.bfloat16)
        return utils.fast_dequantize(packed.reshape(-1, 1), state)

    from qref.testing import check_dequantize_4bit

    check_dequantize_4bit(
        dequantize, array="torch", device="cuda", out_dtype="bfloat16", max_examples=100, allow=("flush-to-zero",)
    )
