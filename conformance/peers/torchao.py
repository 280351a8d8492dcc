"""Adapter to the real torchao NF4Tensor: NumPy in, NumPy fields out, on the CPU or a CUDA device.

`to_nf4` returns the tensor's fields as qref.profiles.torchao_nf4.TorchaoNF4; `dequantize` builds an
NF4Tensor from any such fields (ours or theirs) and calls torchao's own `get_original_weight`.
"""

from __future__ import annotations

import importlib.util

from qref.profiles.torchao_nf4 import NF4_TABLE_4DP, TorchaoNF4

from .bitsandbytes import from_torch, to_torch

NAME = "torchao"


def _module():
    try:  # torchao >= 0.15 moved NF4Tensor under quantize_/workflows
        from torchao.quantization.quantize_.workflows.nf4 import nf4_tensor
    except ImportError:  # pragma: no cover - older layout
        from torchao.dtypes import nf4tensor as nf4_tensor
    return nf4_tensor


def available() -> tuple[bool, str]:
    """(True, version) when torchao's NF4Tensor imports, else (False, reason)."""
    if importlib.util.find_spec("torchao") is None:
        return False, "torchao is not installed (pip install 'qref[peers]')"
    try:
        import logging

        logging.getLogger("torchao").setLevel(logging.ERROR)  # its optional CUDA extensions warn on CPU
        import torchao

        _module()
    except Exception as exc:
        return False, f"torchao failed to import: {exc}"
    return True, torchao.__version__


def to_nf4(x, block_size: int = 64, scaler_block_size: int = 256, device: str = "cpu") -> TorchaoNF4:
    """torchao's to_nf4 on `device`, its fields copied back to NumPy."""
    t = _module().to_nf4(to_torch(x, device), block_size, scaler_block_size)
    fmt = str(t.dtype).removeprefix("torch.")
    return TorchaoNF4(
        from_torch(t.quantized_data),
        from_torch(t.quantized_scalers),
        from_torch(t.quantization_factor),
        from_torch(t.scaler_mean.reshape(())),
        tuple(t.shape),
        fmt,
        t.block_size,
        t.scaler_block_size,
    )


def dequantize(f: TorchaoNF4, device: str = "cpu"):
    """NF4Tensor(fields).get_original_weight() on `device`."""
    import torch

    m = _module()
    dtype = getattr(torch, f.fmt)
    nf4 = torch.tensor(list(NF4_TABLE_4DP), device=device, dtype=dtype)
    meta = m.SubclassTensorArgs(torch.Size(f.shape), _contiguous_stride(f.shape), 0, dtype, torch.device(device), False)
    n_blocks = int(f.quantized_scalers.size)
    t = m.NF4Tensor(
        meta,
        f.block_size,
        n_blocks,
        f.scaler_block_size,
        to_torch(f.quantized_scalers, device),
        to_torch(f.quantization_factor, device),
        to_torch(f.scaler_mean, device),
        to_torch(f.quantized_data, device),
        nf4=nf4,
    )
    return from_torch(t.get_original_weight())


def _contiguous_stride(shape):
    stride, acc = [], 1
    for n in reversed(shape):
        stride.append(acc)
        acc *= n
    return tuple(reversed(stride))
