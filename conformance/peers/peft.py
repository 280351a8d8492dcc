"""Adapter to PEFT's `loftq_init` (which quantizes with bitsandbytes on a CUDA or XPU device)."""

from __future__ import annotations

import importlib.util

from .bitsandbytes import from_torch, to_torch

NAME = "peft"


def available() -> tuple[bool, str]:
    """(True, version) when PEFT, bitsandbytes and a CUDA device are present, else (False, reason)."""
    for mod in ("peft", "bitsandbytes", "torch"):
        if importlib.util.find_spec(mod) is None:
            return False, f"{mod} is not installed (pip install 'qref[peers]')"
    import torch

    if not torch.cuda.is_available():
        return False, "PEFT's loftq_init runs its quantizer on a CUDA device; none here"
    import peft

    return True, peft.__version__


def loftq_init(weight, num_bits: int, reduced_rank: int, num_iter: int = 1, device: str = "cuda"):
    """peft.utils.loftq_utils.loftq_init on `device`: (Q, lora_A, lora_B) as NumPy."""
    from peft.utils.loftq_utils import loftq_init as peft_loftq_init

    Q, A, B = peft_loftq_init(to_torch(weight, device), num_bits, reduced_rank, num_iter)
    return from_torch(Q), from_torch(A), from_torch(B)
