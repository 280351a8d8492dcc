"""The driver side of qref's kernel launches: by-value parameter memory, launches packed ahead (Prepared),
cuLaunchKernelEx's configuration for programmatic serialization and cuLaunchCooperativeKernel through ctypes
where CuPy's driver bindings lack it (backends/cuda_kernels.py's Module uses them)."""

from __future__ import annotations

import ctypes
import re
import struct
from functools import cache

DEV_ATTR_COOPERATIVE_LAUNCH = 95  # cudaDevAttrCooperativeLaunch
COOPERATIVE_LAUNCH_TOO_LARGE = 720  # CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE


def launch_cooperative(fn, gx, gy, gz, bx, by, bz, shared, stream, params):
    """cuLaunchCooperativeKernel through ctypes, raising as CuPy's driver bindings do."""
    res = libcuda().cuLaunchCooperativeKernel(fn, gx, gy, gz, bx, by, bz, shared, stream, params)
    if res:
        import cupy as cp

        raise cp.cuda.driver.CUDADriverError(res)


class LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: an id, then a 64-byte value (a union)
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int), ("rest", ctypes.c_char * 60)]


COOPERATIVE = 2  # CU_LAUNCH_ATTRIBUTE_COOPERATIVE
PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig of cuLaunchKernelEx for a 1-D grid with one attribute set to 1 (programmatic
    serialization unless said); `at` its address (the stream is set per launch)."""

    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("sharedMemBytes", ctypes.c_uint),
        ("hStream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(LaunchAttribute)),
        ("numAttrs", ctypes.c_uint),
    ]

    def __init__(self, grid: int, block: int, shared: int, attribute: int = PROGRAMMATIC_STREAM_SERIALIZATION):
        attr = LaunchAttribute(id=attribute, value=1)
        super().__init__((grid, 1, 1), (block, 1, 1), shared, None, ctypes.pointer(attr), 1)
        self._attr, self.at = attr, ctypes.addressof(self)


class ParamMemory:
    """Host memory for one by-value kernel parameter of up to `size` bytes (`buf`) and the one-entry pointer
    array cuLaunchKernel reads, at address `at`."""

    def __init__(self, size: int):
        self.buf = ctypes.create_string_buffer(size)
        self.params = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))
        self.at = ctypes.addressof(self.params)


def field_offsets(layout: struct.Struct) -> list[int]:
    """The byte offset of each value of a little-endian struct format of one-letter codes and pads ("4x")."""
    fmt = layout.format.lstrip("<")
    return [struct.calcsize("<" + fmt[: m.start()]) for m in re.finditer(r"\d*([a-zA-Z])", fmt) if m.group(1) != "x"]


class Prepared:
    """One kernel launch of `mod` (a cuda_kernels.Module) whose by-value struct is packed ahead (Module.prepare)
    but for its first field, an address: `launch(x, stream)` writes x there and launches (the driver copies the
    parameter at launch, so the memory may be packed again, `pack`, once the launch has returned)."""

    def __init__(self, mod, head: tuple, layout: struct.Struct, values, cooperative=False, moving=()):
        self.mod, self.head, self.layout = mod, head, layout
        self.mem = ParamMemory(layout.size)
        self.first, self.at = ctypes.c_uint64.from_buffer(self.mem.buf), self.mem.at
        self.cooperative = cooperative  # refused, its launch raises (the plan's grid fits the device)
        at = field_offsets(layout)
        self.cells = tuple(ctypes.c_uint64.from_buffer(self.mem.buf, at[i]) for i in moving)
        self.pack(values)

    def pack(self, values):
        self.layout.pack_into(self.mem.buf, 0, *values)

    def move(self, *addresses):
        """The `moving` address fields rewritten, in their order, the rest as packed (the next call's state,
        where nothing else changed): a few stores instead of packing the whole struct again."""
        for cell, a in zip(self.cells, addresses):
            cell.value = a

    def launch(self, x: int, stream: int):
        self.first.value = x
        if self.cooperative:  # cuLaunchCooperativeKernel takes no `extra`
            self.mod._coop(*self.head, stream, self.at)
        else:
            self.mod._driver.launchKernel(*self.head, stream, self.at, 0)


@cache
def libcuda():
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    lib.cuLaunchCooperativeKernel.argtypes = [ctypes.c_void_p, *[ctypes.c_uint] * 7, ctypes.c_void_p, ctypes.c_void_p]
    lib.cuLaunchCooperativeKernel.restype = ctypes.c_int
    if hasattr(lib, "cuLaunchKernelEx"):  # CUDA 12 on
        lib.cuLaunchKernelEx.argtypes = [ctypes.c_void_p] * 4
        lib.cuLaunchKernelEx.restype = ctypes.c_int
    return lib
