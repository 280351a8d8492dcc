"""The CUDA bridge shared by the CuPy and PyTorch backends: CuPy found (or `BackendUnavailable` with the
reason), and `TorchBridge`, the fused 4-bit kernels of cuda_kernels.py on torch CUDA tensors."""

from __future__ import annotations

import math
import threading
import weakref
from contextlib import contextmanager

from qref import validation
from qref.backend import FourBit
from qref.double_quant import DQ_BLOCKSIZE
from qref.dtypes import FLOAT_FORMATS
from qref.fourbit import BLOCKSIZES_4BIT, QUANT_TYPES_4BIT
from qref.registry import BackendUnavailable

from . import cuda_kernels as K
from . import cuda_launch as L
from .cuda_memory import DeviceScalar, VerifiedScales
from .fused4bit import Fused4bit, bounded, current, dtype_name, with_device


def cupy_or_unavailable():
    """The cupy module, when it imports and sees a CUDA device; else BackendUnavailable naming why."""
    try:
        import cupy as cp
    except ImportError as e:
        raise BackendUnavailable(f"cupy is not installed ({e})") from e
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailable("cupy found no CUDA device")
    except cp.cuda.runtime.CUDARuntimeError as e:
        raise BackendUnavailable(f"cupy found no CUDA device ({e})") from e
    return cp


def head(a, size: int):
    """a (a 1-d tensor) cut to its first `size` values in place: its memory stays whole (a value kept after them,
    the double quantization's offset, lives as long as it does), and no view is made (a slice of a CUDA tensor
    costs microseconds of host time a call)."""
    return a.resize_(size)


class _Ready:
    """A dequantize of one state made ready by a call that found its scales finite: the kernel's launch
    with its parameter packed but for the output's address (a Prepared; threads other than the one that
    made it pack their own). `run` launches it only while everything it was made from holds: the same
    state object (FourBit is frozen: its arrays and offset stay the same objects), each array at the same
    address, the scales unchanged (VerifiedScales), the same shape, stream and current device; else it
    returns None and the full path runs."""

    def __init__(self, bridge, q, scales, shape, dtype, plan, values, stream: int):
        self.bridge, self.q = bridge, weakref.ref(q)
        self.addresses = [None if a is None else a.data_ptr() for a in (q.packed, q.absmax, q.qabsmax, q.absmax2)]
        self.scales = [weakref.ref(a) for a in scales]
        self.shape, self.plan, self.stream = shape, plan, stream
        self.like = bridge.torch.empty(0, dtype=dtype, device=bridge.device)  # new_empty: fewer arguments
        self.values = list(values)
        self.prepared, self.thread = plan.prepare(values), threading.get_ident()

    def run(self, q, shape):
        b = self.bridge
        if self.q() is not q or shape != self.shape or b._handle() != self.stream:
            return None
        for address, a in zip(self.addresses, (q.packed, q.absmax, q.qabsmax, q.absmax2)):
            if a is not None and a.data_ptr() != address:
                return None
        if not b.verified.holds([ref() for ref in self.scales]) or not current(b.cp, b.index):
            return None
        out = self.like.new_empty(self.shape)
        if threading.get_ident() == self.thread:
            self.prepared.move(out.data_ptr())
            self.prepared.launch(self.addresses[0], self.stream)
        else:
            values = self.values.copy()
            values[L.OUT_AT] = out.data_ptr()
            self.plan.launch(values, self.stream)
        return out


class TorchBridge:
    """The fused kernels on torch CUDA tensors: torch allocates, the kernels get raw addresses (no DLPack
    conversion: it costs more than the kernel at 4096 x 4096), launched on torch's current stream."""

    def __init__(self, device_index: int):
        import torch

        self.cp, self.torch = cupy_or_unavailable(), torch
        device = torch.device("cuda", device_index)
        dt = {"uint8": torch.uint8, "float32": torch.float32, "uint16": torch.int16, "uint64": torch.int64}
        like = {name: torch.empty(0, dtype=t, device=device) for name, t in dt.items()}  # new_empty: fewer arguments
        self.fused = Fused4bit(
            self.cp,
            lambda size, dtype: like[dtype].new_empty(size),
            lambda size, dtype: torch.zeros(size, dtype=dt[dtype], device=device),
            device_index,
            (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError),
            head,
        )
        self.index, self.device = device_index, device
        self.verified = VerifiedScales()
        self._pending: list | None = None  # inside a batch: the scales found finite if the batch passes
        self._ready: dict = {}
        self._recipes: dict = {}  # (dtype, n, blocksize, quant_type, double_quant) -> Fused4bit.recipe64's
        self._device = self.cp.cuda.Device(device_index)
        self._streams = {}
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # a Stream object costs microseconds
        self._handle = (
            (lambda: raw(device_index)) if raw else (lambda: torch.cuda.current_stream(device_index).cuda_stream)
        )

    def _stream(self):
        handle = self._handle()
        if handle not in self._streams:
            self._streams[handle] = self.cp.cuda.ExternalStream(handle, self.index)
        return self._streams[handle]

    def _on_device(self, name, a):
        """The kernels read raw addresses: a tensor on this device, contiguous (None stays None)."""
        if a is None:
            return None
        if not a.is_cuda or a.get_device() != self.index:
            raise ValueError(f"{name} is on {a.device}; this backend runs on cuda:{self.index}")
        return a if a.is_contiguous() else a.contiguous()

    def quantize_known(self, x, blocksize, quant_type, double_quant):
        """The quantize of a tensor of a shape quantized before (its recipe64 recipe, kept by quantize_4bit
        after its checks: a float dtype, values), where the input passes the checks the kernels need (on
        this device, which is current; C-contiguous; 16-byte aligned); else None."""
        if not isinstance(x, self.torch.Tensor):
            return None
        try:
            r = self._recipes.get((x.dtype, x.numel(), blocksize, quant_type, double_quant))
        except TypeError:  # an unhashable argument: quantize_4bit's checks say what is wrong with it
            return None
        if r is not None and r.mod is K.module(self.index) and x.is_cuda and x.get_device() == self.index:
            xp = x.data_ptr()
            if xp % 16 == 0 and x.is_contiguous() and current(self.cp, self.index):
                return self.fused.quantize64(r, xp, self._handle(), self._queued)
        return None

    def quantize_4bit(self, backend, x, blocksize, quant_type, double_quant):
        """Any input the backend's checks passed: the full path, whose recipe serves quantize_known after."""
        validation.one_of(blocksize, BLOCKSIZES_4BIT, "blocksize")
        validation.one_of(quant_type, QUANT_TYPES_4BIT, "quant_type")
        x = self._on_device("x", x)
        q = with_device(
            self.cp,
            self._device,
            self.fused.quantize,
            x,
            x.numel(),
            dtype_name(x),
            blocksize,
            quant_type,
            double_quant,
            self._stream(),
            self._queued,
        )
        r = self.fused.recipe64(dtype_name(x), x.numel(), blocksize, quant_type, double_quant)
        if r:
            bounded(self._recipes)
            self._recipes[x.dtype, x.numel(), blocksize, quant_type, double_quant] = r
        return q

    def _queued(self, q):
        """A quantize's state while its kernels run: its absmax will be finite if the call returns it (the
        call refuses non-finite input), so it is remembered now rather than after the wait."""
        if q.absmax is not None:
            self._found_finite([q.absmax])

    def dequantize_4bit(self, backend, q, shape, blocksize, quant_type, out_dtype):
        key = (id(q), blocksize, quant_type, out_dtype)
        ready = self._ready.get(key)
        if ready is not None:
            out = ready.run(q, shape)
            if out is not None:
                return out
        validation.one_of(out_dtype, FLOAT_FORMATS, "out_dtype")
        n = math.prod(shape)
        # raw addresses: each array on this device and contiguous (check_state checks sizes and dtypes)
        cq = FourBit(
            self._on_device("packed", q.packed),
            self._on_device("absmax", q.absmax),
            self._on_device("qabsmax", q.qabsmax),
            self._on_device("absmax2", q.absmax2),
            q.offset,
        )
        shape = tuple(shape)
        dtype = None if out_dtype == "float32" else getattr(self.torch, out_dtype)
        # a state whose scales were found finite and are unchanged since: no wait for the flag
        scales = [a for a in (cq.absmax, cq.qabsmax, cq.absmax2) if a is not None]
        if isinstance(cq.offset, DeviceScalar):
            scales.append(cq.offset.owner)
        known = self.verified.holds(scales)
        out = with_device(
            self.cp,
            self._device,
            self.fused.dequantize,
            cq,
            n,
            blocksize,
            quant_type,
            out_dtype,
            self._stream(),
            lambda out: (out if dtype is None else out.view(dtype)).reshape(shape),
            not known,
        )
        if not known:  # the call waited, and no scale was non-finite
            self._found_finite(scales)
        self._prepare(key, q, cq, shape, n, blocksize, quant_type, out_dtype, scales)
        return out

    def _found_finite(self, scales):
        """Scales a call found finite: remembered now, or inside a batch once its wait found no flag set."""
        if self._pending is None:
            self.verified.add(scales)
        else:
            self._pending.append(scales)

    @contextmanager
    def batch(self):
        """Fused4bit.batch on torch's current stream; the scales its calls found finite are remembered
        (VerifiedScales) only when no kernel of the batch set the flag."""
        if self._pending is not None:  # a batch inside a batch: the outer one waits
            yield lambda: False
            return
        self._pending = []
        try:
            with self.fused.batch(self._handle()) as failed:
                yield failed
        finally:
            pending, self._pending = self._pending, None
        if not failed():
            for scales in pending:
                self.verified.add(scales)

    def _prepare(self, key, q, cq, shape, n, blocksize, quant_type, out_dtype, scales):
        """A _Ready for the next dequantize of q, where the arrays read are q's own (no contiguous copy)
        and the dequant8 kernel reads them (else the full path keeps serving q)."""
        arrays = (q.packed, q.absmax, q.qabsmax, q.absmax2)
        if any(a is not b for a, b in zip(arrays, (cq.packed, cq.absmax, cq.qabsmax, cq.absmax2))):
            return
        recipe = self.fused.recipe(n, blocksize, quant_type, out_dtype, cq.qabsmax is not None)
        cptr = cq.packed.data_ptr()
        if recipe.plan is None or cptr % 4:
            return
        flag = K.Flag.get(self.cp)  # the kernel cannot set it: these scales are finite
        values = L.dequant_values(
            cptr, n, blocksize, recipe.table, (*arrays[1:], recipe.dyn), cq.offset, DQ_BLOCKSIZE, flag.ptr
        )
        bounded(self._ready)
        self._ready[key] = _Ready(
            self, q, scales, tuple(shape), getattr(self.torch, out_dtype), recipe.plan, values, self._handle()
        )
