"""Adapter to torchao's int4 weight-only group-wise primitives (get_groupwise_affine_qparams,
groupwise_affine_quantize/dequantize_tensor_from_qparams; qref.profiles.torchao_int4)."""

from __future__ import annotations

from . import array, installed, tensor

NAME = "torchao-int4"


def available() -> tuple[bool, str]:
    from .torchao import available as torchao_available

    ok, info = installed("torchao", "torchao")
    return torchao_available() if ok else (ok, info)


def run(W, bits: int, group_size: int, dtype: str, device: str = "cpu") -> dict:
    """Codes (int32 on the CPU; the uint8 two-per-byte storage elsewhere, also returned as
    "packed"), scales, zeros and the dequantized weight, all as the library gives them."""
    import torch
    from torchao.quantization.utils import (
        get_groupwise_affine_qparams,
        groupwise_affine_dequantize_tensor_from_qparams,
        groupwise_affine_quantize_tensor_from_qparams,
    )

    w = tensor(W, device)
    s, z = get_groupwise_affine_qparams(w, n_bit=bits, groupsize=group_size, dtype=getattr(torch, dtype))
    q = groupwise_affine_quantize_tensor_from_qparams(w, s, z, n_bit=bits, groupsize=group_size)
    out = {
        "scales": array(s),
        "zeros": array(z),
        "dequantized": array(
            groupwise_affine_dequantize_tensor_from_qparams(q, s, z, n_bit=bits, groupsize=group_size)
        ),
    }
    if q.dtype == torch.uint8:  # off the CPU: two codes per byte
        out["packed"] = array(q)
        hi, lo = (q >> 4).to(torch.int32), (q & 15).to(torch.int32)
        q = torch.stack((hi, lo), dim=-1).reshape(q.shape[0], -1)
    out["codes"] = array(q)
    return out
