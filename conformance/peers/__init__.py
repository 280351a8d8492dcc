"""Adapters to the real libraries: NumPy in, NumPy out, each library's own code in between."""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version


def installed(module: str, dist: str) -> tuple[bool, str]:
    """(True, version) when `module` can be found, else (False, how to install `dist`)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return False, f"{dist} is not installed (pip install {dist})"
    try:
        return True, version(dist)
    except PackageNotFoundError:
        return True, "unknown version"


def tensor(a, device: str = "cpu"):
    """A torch tensor holding a NumPy array's values, on `device`."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def array(t):
    """A NumPy array of a torch tensor's values (bfloat16 and float16 widened to float32)."""
    import torch

    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
