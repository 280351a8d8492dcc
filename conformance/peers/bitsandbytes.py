"""Adapter to the real bitsandbytes: NumPy in, NumPy out, on the CPU (or a given torch device).

Two routes into bitsandbytes are offered: its public functions (which on the CPU run its C kernels
where it has them) and its pure-PyTorch "default" kernels, reached by redispatching its custom op
to the CompositeExplicitAutograd key. Where the two disagree, that is a finding about bitsandbytes.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from qref.dtypes import BFloat16Array

NAME = "bitsandbytes"


def available() -> tuple[bool, str]:
    """(True, version) when bitsandbytes and torch import, else (False, reason)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install 'qref[peers]')"
    try:
        import bitsandbytes
    except Exception as exc:  # a broken install is reported, not raised
        return False, f"bitsandbytes failed to import: {exc}"
    return True, bitsandbytes.__version__


def _torch():
    import torch

    return torch


def to_torch(x, device: str = "cpu"):
    torch = _torch()
    if isinstance(x, BFloat16Array):
        return torch.from_numpy(x.bits.view(np.int16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.array(x, copy=True)).to(device)


def from_torch(t):
    torch = _torch()
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return BFloat16Array(t.view(torch.int16).numpy().view(np.uint16).copy())
    return t.numpy().copy()


def quantize_4bit(x, blocksize: int, quant_type: str, compress_statistics: bool = False, device: str = "cpu"):
    """bitsandbytes.functional.quantize_4bit; returns (packed uint8 bytes, its QuantState)."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(
        to_torch(x, device), blocksize=blocksize, quant_type=quant_type, compress_statistics=compress_statistics
    )
    return from_torch(packed).reshape(-1), state


def state_dict(state) -> dict:
    """A bitsandbytes QuantState as its packed dict with NumPy arrays (qref.QuantState.from_dict reads it)."""
    torch = _torch()
    return {k: (from_torch(v) if torch.is_tensor(v) else v) for k, v in state.as_dict(packed=True).items()}


def dequantize_4bit(packed: np.ndarray, state, device: str = "cpu"):
    """bitsandbytes.functional.dequantize_4bit on packed bytes; output reshaped to the state's shape."""
    import bitsandbytes.functional as F

    out = from_torch(F.dequantize_4bit(to_torch(packed.reshape(-1, 1), device), state))
    return _reshape(out, tuple(state.shape))


def dequantize_4bit_graph(packed: np.ndarray, state, device: str = "cuda"):
    """bitsandbytes.functional.dequantize_4bit captured in a CUDA graph and replayed (after the
    input buffer is refilled, as a graph-mode training step does), on a CUDA device."""
    import bitsandbytes.functional as F

    torch = _torch()
    source = to_torch(packed.reshape(-1, 1), device)
    static = torch.zeros_like(source)
    F.dequantize_4bit(static, state)  # warm-up outside capture: kernels loaded, workspace allocated
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = F.dequantize_4bit(static, state)
    static.copy_(source)
    graph.replay()
    torch.cuda.synchronize()
    return _reshape(from_torch(out), tuple(state.shape))


def _reshape(out, shape):
    # bitsandbytes' CPU kernel returns (1, n) for a 1-D input of n; the values are what is compared.
    if isinstance(out, BFloat16Array):
        return BFloat16Array(out.bits.reshape(shape))
    return out.reshape(shape)


def state_from_qref(state, device: str = "cpu"):
    """A bitsandbytes QuantState built from qref's packed dict, through bitsandbytes' own from_dict."""
    import bitsandbytes.functional as F

    torch = _torch()
    d = {}
    for k, v in state.as_dict(packed=True).items():
        d[k] = to_torch(v, device) if isinstance(v, (np.ndarray, BFloat16Array)) else v
    return F.QuantState.from_dict(d, device=torch.device(device))


def default_quantize_blockwise(x: np.ndarray, code: np.ndarray, blocksize: int):
    """bitsandbytes' pure-PyTorch blockwise kernel (its semantic reference), bypassing the C one."""
    torch = _torch()
    import bitsandbytes  # noqa: F401  (registers the op)

    op = torch.ops.bitsandbytes.quantize_blockwise.default
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    q, absmax = op.redispatch(keys, to_torch(x), to_torch(code), blocksize)
    return from_torch(q), from_torch(absmax)


def cpu_quantize_blockwise(x: np.ndarray, code: np.ndarray, blocksize: int):
    """bitsandbytes' public quantize_blockwise with an explicit code (C kernel on the CPU)."""
    import bitsandbytes.functional as F

    q, state = F.quantize_blockwise(to_torch(x), code=to_torch(code), blocksize=blocksize)
    return from_torch(q), from_torch(state.absmax)
