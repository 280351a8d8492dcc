"""Adapter to unsloth's `fast_dequantize` (unsloth/kernels/utils.py), on a CUDA device.

Importing `unsloth` patches transformers, TRL and PEFT and needs their training stack; the kernel
needs none of it. The adapter imports `unsloth.kernels.utils` with the packages above it (`unsloth`,
`unsloth.kernels`, `unsloth_zoo`, `unsloth_zoo.temporary_patches`) registered as bare namespaces, so
their __init__ modules (the patching) do not run; the kernel module itself runs unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from . import installed

NAME = "unsloth"
BARE = ("unsloth", "unsloth.kernels", "unsloth_zoo", "unsloth_zoo.temporary_patches")


def available() -> tuple[bool, str]:
    return installed("unsloth", NAME)


def kernels():
    """unsloth.kernels.utils, imported without running the packages' __init__ modules."""
    if "unsloth.kernels.utils" in sys.modules:
        return sys.modules["unsloth.kernels.utils"]
    for name in BARE:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        spec = importlib.util.find_spec(name) if not parent else None
        if parent:
            locations = [f"{p}/{child}" for p in sys.modules[parent].__path__]
        else:
            locations = list(spec.submodule_search_locations) if spec else []
        module = types.ModuleType(name)
        module.__path__ = locations
        sys.modules[name] = module
    return importlib.import_module("unsloth.kernels.utils")
