"""Named profiles: the exact arithmetic of a library where it differs from qref's default (docs/profiles.md).

The default profile is bitsandbytes' (qref.quantize_4bit and friends). Each other profile is data
plus the few functions that differ, with the library version it was read from.
"""

from __future__ import annotations

import numpy as np

DEVICES = ("cpu", "cuda")

PROFILES = {
    "bitsandbytes": "qref.fourbit (the default): bitsandbytes 0.50.2 quantize_4bit / dequantize_4bit / QuantState",
    "bitsandbytes-cpu": "qref.profiles.bitsandbytes_cpu: bitsandbytes 0.50.2 libbitsandbytes_cpu 8-bit table quantizer",
    "torchao": "qref.profiles.torchao_nf4: torchao 0.18.0 NF4Tensor (to_nf4, get_original_weight)",
    "peft": "qref.profiles.peft_loftq: PEFT 0.21 loftq_init (bitsandbytes NF4 in float32, torch SVD split)",
    "gptq": "qref.gptq_pack: AutoGPTQ 0.7.1 / QA-LoRA packing (qweight, qzeros v1/v2, scales, g_idx)",
    "compressed-tensors": "qref.profiles.compressed_tensors: compressed-tensors 0.20.1 INT-k, pack-quantized",
    "hqq": "qref.profiles.hqq: hqq 0.2.8 Quantizer (optimize=False) and BitPack",
    "optimum-quanto": "qref.profiles.quanto: optimum-quanto 0.2.7 qint2/qint4 MaxOptimizer, pack_weights",
    "torchao-int4": "qref.profiles.torchao_int4: torchao 0.18.0 int4 weight-only (tinygemm float zeros)",
}


def divide_by_number(a: np.ndarray, number: float, device: str = "cpu") -> np.ndarray:
    """PyTorch's float32 `tensor / number`: correctly rounded division on the CPU; on CUDA, the
    product with the float32 reciprocal RN(1 / number) (its div kernel's rule for a host scalar),
    which can differ from division in the last bit."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    a = np.asarray(a, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if device == "cpu":
            return (a / np.float32(number)).astype(np.float32)
        return (a * (np.float32(1) / np.float32(number))).astype(np.float32)
