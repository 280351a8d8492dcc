"""Adapter to compressed-tensors: its calculate_qparams, quantize, dequantize and pack_to_int32
on a float32 weight, per group or per channel (qref.profiles.compressed_tensors)."""

from __future__ import annotations

from . import array, installed, tensor

NAME = "compressed-tensors"


def available() -> tuple[bool, str]:
    return installed("compressed_tensors", NAME)


def run(W, bits: int, group_size: int | None, symmetric: bool, device: str = "cpu") -> dict:
    """The library's outputs: codes, scales, zero points, dequantized weight, packed tensors."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    strategy = "channel" if group_size is None else "group"
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy=strategy, group_size=group_size)
    w = tensor(W, device)
    g = w.shape[1] if group_size is None else group_size
    grouped = w.reshape(w.shape[0], -1, g)
    scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
    q = quantize(w, scale, zp, args, dtype=torch.int8)
    out = {
        "codes": array(q),
        "scales": array(scale),
        "zero points": array(zp),
        "dequantized": array(dequantize(q, scale, zp, args)),
        "weight_packed": array(pack_to_int32(q.cpu(), bits)),
    }
    if not symmetric:
        out["weight_zero_point"] = array(pack_to_int32(zp.to(torch.int8).cpu(), bits, packed_dim=0))
    return out
