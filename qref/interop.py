"""Between qref's arrays and torch tensors / bitsandbytes' QuantState (docs/init.md).

    arr = to_numpy(t)              # torch.Tensor -> ndarray; bfloat16 -> BFloat16Array (exact bits)
    t = to_torch(arr, "cuda")      # the way back, bit for bit
    state = from_bnb(qs)           # bitsandbytes QuantState -> qref QuantState
    qs = to_bnb(state, "cpu")      # qref QuantState -> bitsandbytes QuantState

Nothing is rounded on the way: bfloat16 travels as its 16-bit patterns (NaN payloads included), and a
QuantState's arrays are copied, so the result never aliases its source. torch and bitsandbytes are
imported when these are called, not when qref is.
"""

from __future__ import annotations

import numpy as np

from .dtypes import BFloat16Array
from .quant_state import QuantState


def to_numpy(t):
    """A torch tensor as a NumPy array the caller owns; bfloat16 as a BFloat16Array of its bits."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    t = t.detach().to("cpu")
    if t.dtype == torch.bfloat16:
        return BFloat16Array(t.contiguous().view(torch.int16).numpy().view(np.uint16).copy())
    return t.numpy().copy()


def to_torch(a, device="cpu"):
    """A NumPy array (or BFloat16Array) as a torch tensor on `device`, bit for bit."""
    import torch

    if isinstance(a, BFloat16Array):
        bits = np.ascontiguousarray(a.bits).view(np.int16).copy()
        return torch.from_numpy(bits).view(torch.bfloat16).to(device)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a must be a numpy array or a BFloat16Array, got {type(a).__name__}")
    return torch.from_numpy(np.array(a, copy=True)).to(device)


def from_bnb(qs) -> QuantState:
    """bitsandbytes' QuantState (any device) as a qref QuantState."""
    if not hasattr(qs, "as_dict"):
        raise TypeError(f"qs must be a bitsandbytes QuantState, got {type(qs).__name__}")
    d = {k: to_numpy(v) if hasattr(v, "detach") else v for k, v in qs.as_dict(packed=False).items()}
    return QuantState.from_dict(d)


def to_bnb(state: QuantState, device="cpu"):
    """A qref QuantState as bitsandbytes' QuantState on `device` (through its own from_dict)."""
    import torch
    from bitsandbytes.functional import QuantState as BnbQuantState

    if not isinstance(state, QuantState):
        raise TypeError(f"state must be a qref QuantState, got {type(state).__name__}")
    d = {k: to_torch(v, device) if isinstance(v, np.ndarray) else v for k, v in state.as_dict(packed=True).items()}
    return BnbQuantState.from_dict(d, torch.device(device))
