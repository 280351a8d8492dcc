"""Adapter to HQQ's Quantizer with optimize=False (round to nearest), axis 1, and its BitPack
(qref.profiles.hqq)."""

from __future__ import annotations

from . import array, installed, tensor

NAME = "hqq"


def available() -> tuple[bool, str]:
    return installed("hqq", NAME)


def run(W, bits: int, group_size: int, device: str = "cpu") -> dict:
    """The library's outputs: codes (unpacked by HQQ), scale, zero, packed codes, the weight
    dequantized with float32 and with float16 parameters."""
    import torch
    from hqq.core.quantize import Quantizer

    w = tensor(W, device)
    packed, meta = Quantizer.quantize(
        w, nbits=bits, channel_wise=True, group_size=group_size, optimize=False, round_zero=False,
        axis=1, bitpack=True, compute_dtype=torch.float32, device=device,
    )  # fmt: skip
    rows = w.numel() // group_size
    codes = Quantizer.unpack[meta["packing"]](packed, dtype=torch.uint8)[:rows]
    half = {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in meta.items()}
    return {
        "codes": array(codes),
        "scale": array(meta["scale"]),
        "zero": array(meta["zero"]),
        "packed": array(packed),
        "dequantized": array(Quantizer.dequantize(packed, dict(meta, compute_dtype=torch.float32))),
        "dequantized float16": array(Quantizer.dequantize(packed, dict(half, compute_dtype=torch.float16))),
    }
