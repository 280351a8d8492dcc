"""Adapter to AutoGPTQ 0.7.x (the GPTQ package QA-LoRA builds on), on the CPU.

AutoGPTQ's package import pulls in its CUDA kernels and model code; what qref compares needs only
two pure-PyTorch files, loaded here by path: `quantization/quantizer.py` (the RTN rule GPTQ uses
per group) and `nn_modules/qlinear/qlinear_cuda_old.py` (`QuantLinear.pack`, the qweight/qzeros
layout, "v1" zeros). Install with `pip install --no-deps auto-gptq==0.7.1` (its dependencies are
training-time ones); `pack` also needs `transformers` to import.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

NAME = "auto-gptq"


def _root() -> str | None:
    spec = importlib.util.find_spec("auto_gptq")
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def _load(relative: str, name: str):
    path = os.path.join(_root(), *relative.split("/"))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def available(need_pack: bool = False) -> tuple[bool, str]:
    root = _root()
    if root is None:
        return False, "auto-gptq is not installed (pip install --no-deps auto-gptq==0.7.1)"
    if need_pack and importlib.util.find_spec("transformers") is None:
        return False, "AutoGPTQ's QuantLinear.pack needs transformers to import"
    from importlib.metadata import version

    return True, version("auto-gptq")


def quantize_rtn(W: np.ndarray, bits: int, group_size: int, sym: bool = False):
    """AutoGPTQ's Quantizer per group (find_params + quantize): (codes, scales, zeros), (D_out, G) layout."""
    import torch

    quantizer_mod = _load("quantization/quantizer.py", "qref_peer_autogptq_quantizer")
    d_out, d_in = W.shape
    w = torch.from_numpy(np.array(W, dtype=np.float32))
    codes = np.empty((d_out, d_in), dtype=np.int64)
    scales, zeros = [], []
    for start in range(0, d_in, group_size):  # AutoGPTQ's own loop over groups
        q = quantizer_mod.Quantizer()
        q.configure(bits, perchannel=True, sym=sym, mse=False)
        block = w[:, start : start + group_size]
        q.find_params(block, weight=True)
        code = torch.clamp(torch.round(block / q.scale) + q.zero, 0, q.maxq)
        codes[:, start : start + group_size] = code.numpy().astype(np.int64)
        scales.append(q.scale.numpy().reshape(-1))
        zeros.append(q.zero.numpy().reshape(-1))
    return codes, np.stack(scales, axis=1), np.stack(zeros, axis=1)


def pack(
    W_tilde: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    bits: int,
    group_size: int,
    weight_dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """AutoGPTQ's QuantLinear.pack of a dequantized weight (as GPTQ hands it over) -> its tensors."""
    import torch

    qlinear = _load("nn_modules/qlinear/qlinear_cuda_old.py", "qref_peer_autogptq_qlinear")
    d_out, d_in = W_tilde.shape
    dtype = getattr(torch, weight_dtype)
    linear = torch.nn.Linear(d_in, d_out, bias=False).to(dtype)
    linear.weight.data = torch.from_numpy(np.array(W_tilde, dtype=np.float32)).to(dtype)
    layer = qlinear.QuantLinear(bits, group_size, d_in, d_out, bias=False, weight_dtype=dtype)
    layer.pack(
        linear,
        torch.from_numpy(np.array(scales, np.float32)),
        torch.from_numpy(np.array(zeros, np.float32)),
        torch.arange(d_in) // group_size,
    )
    return {k: getattr(layer, k).numpy() for k in ("qweight", "qzeros", "scales", "g_idx")}


def dequantize(tensors: dict, bits: int, group_size: int, module: str = "qlinear_cuda_old") -> np.ndarray:
    """The weight (D_out, D_in) AutoGPTQ's QuantLinear `module` computes from checkpoint tensors, read
    through its own CPU forward pass on the identity (x W^T with x = I gives W^T)."""
    import torch

    if module not in ("qlinear_cuda_old", "qlinear_cuda"):
        raise ValueError(f"module must be qlinear_cuda_old or qlinear_cuda, got {module!r}")
    qlinear = _load(f"nn_modules/qlinear/{module}.py", f"qref_peer_autogptq_{module}")
    d_out = tensors["scales"].shape[1]
    d_in = tensors["g_idx"].shape[0]
    layer = qlinear.QuantLinear(bits, group_size, d_in, d_out, bias=False, weight_dtype=torch.float32)
    for key in ("qweight", "qzeros", "g_idx"):
        getattr(layer, key).copy_(torch.from_numpy(np.array(tensors[key])))
    layer.scales = torch.from_numpy(np.asarray(tensors["scales"], dtype=np.float32))
    with torch.no_grad():
        return layer(torch.eye(d_in, dtype=torch.float32)).numpy().T
