"""Device memory the CUDA launchers pass to kernels by address (backends/cuda_kernels.py): the non-finite
flag in mapped pinned memory, the double quantization's workspace, the offset left on the device."""

from __future__ import annotations

import threading
import time

import numpy as np

N_BINS = 277  # qref.double_quant.FREXP_EXPONENTS.size
SPIN_S = 0.002  # Flag.wait polls this long (a 28672 x 8192 quantize takes 0.2 ms), then lets the driver wait


_ADDRESS: dict = {}


def ptr(a) -> int:
    """Device address of a CuPy array or a torch tensor (the accessor looked up once per type)."""
    get = _ADDRESS.get(type(a))
    if get is None:
        get = _ADDRESS[type(a)] = (lambda t: t.data_ptr()) if hasattr(a, "data_ptr") else (lambda c: c.data.ptr)
    return get(a)


class Flag:
    """The non-finite flag: an int in pinned host memory that kernels set to 1 (under unified addressing
    pinned memory is mapped, so nothing is copied back or zeroed on the device). One per thread, reset by
    `get`: a call waits for the kernels that can set it before it returns (a double-quantized quantize for
    its first level: the second cannot), or (a dequantize of scales known finite, VerifiedScales) launches
    kernels that cannot set it, so calls of one thread never share a set flag; the calls of a batch share
    it, reset once before the first and read once after the last.

    After it, `fin`: a word the kernel a call waits for can set when its grid has ended (signal_end in
    kernels/common.cuh, counting its CTAs on a device counter of this thread's, `end`), which the call's
    `wait_end` polls: the driver's event for the kernel completes microseconds later than that."""

    _local = threading.local()

    @classmethod
    def get(cls, cp) -> Flag:
        """This thread's flag, reset; inside a batch (`deferred`) as it is, so that no set flag is lost."""
        flag = getattr(cls._local, "flag", None)
        if flag is None:
            flag = cls._local.flag = cls(cp)
        if not flag.deferred:
            flag.value[0] = flag.value[1] = 0
        return flag

    def end(self, device: int, zeros) -> tuple:
        """(counter, fin) for a kernel's end signal on `device`; the counter (device memory from the caller's
        framework, `zeros(size, dtype)`, made once) is left 0 by every grid that signals."""
        c = self.counters.get(device)
        if c is None:
            mem = zeros(1, "uint64")
            c = self.counters[device] = (mem, int(ptr(mem)))
        return c[1], self.fin

    def wait_end(self, stream: int):
        """Waits for the kernel queued last on `stream` that signals its end at fin (`end`): polls fin for up
        to SPIN_S, then lets the driver wait for the stream."""
        value, until = self.value, time.perf_counter() + SPIN_S
        while not value[1]:
            if time.perf_counter() > until:
                self.cp.cuda.runtime.streamSynchronize(stream)
                return

    def __init__(self, cp):
        self.cp = cp
        self.mem = cp.cuda.alloc_pinned_memory(8)
        self.value = np.frombuffer(self.mem, dtype=np.int32, count=2)
        self.value[:] = 0
        self.ptr = self.mem.ptr
        self.fin = self.ptr + 4
        self.counters: dict = {}  # device -> (its counter's memory, address)
        self.deferred = False  # inside a batch (Fused4bit.batch): calls queue their kernels and do not wait
        self.events: dict = {}  # device -> the event `wait` records

    def wait(self, stream: int | None = None):
        """Waits for the kernels queued so far on `stream` (a handle; None: CuPy's current stream) by polling
        an event recorded behind them, for up to SPIN_S, then by the driver's wait. The driver's wait may
        sleep until an interrupt, which on an H200 returned about 12 us after a 14 us kernel ended (most of
        a 4096 x 4096 quantize's whole call); a poll sees the end within a microsecond."""
        cp = self.cp
        if stream is None:
            stream = cp.cuda.get_current_stream().ptr
        device = cp.cuda.runtime.getDevice()
        event = self.events.get(device)
        if event is None:  # an event belongs to the device current when it is made
            event = self.events[device] = cp.cuda.Event(block=False, disable_timing=True)
        cp.cuda.runtime.eventRecord(event.ptr, stream)
        until = time.perf_counter() + SPIN_S
        while not event.done:
            if time.perf_counter() > until:
                event.synchronize()
                return

    def raise_if_set(self, message: str, stream: int | None = None):
        """Waits, then raises if any kernel set the flag."""
        self.wait(stream)
        self.check(message)

    def check(self, message: str):
        """Raises if any kernel set the flag (after a wait)."""
        if self.value[0]:
            raise ValueError(message)


class Workspace:
    """Device memory of the fused double quantization, from the caller's framework (`zeros`), one per thread
    (its calls come one after the other in stream order; `get`): the absmax sums (277 uint64), the
    finished-CTA counter and the offset, then the grid barrier's word; and the scratch memory of the first
    level's absmax. The kernels leave the sums and the counter zero for the next call (the last CTA of the
    kernel that reads them), so its addresses stay those of a launch packed ahead; a call that did not
    finish (`finish` not called: it raised, or ran in a batch) makes the next one clear everything first."""

    WORDS = N_BINS + 3  # the sums, the counter, the offset, the barrier
    _local = threading.local()

    @classmethod
    def get(cls, cp, zeros, key, stream: int | None = None) -> Workspace:
        """This thread's workspace for `key` (a device), ready for a call on `stream` (None: CuPy's current).
        A block-64 call returns once its first level has ended, its second level (which reads the scratch
        and clears the sums) still queued: the next call on the same stream comes after it in stream order;
        a call on another stream first waits for the device (the last stream may be gone)."""
        cache = cls._local.__dict__.setdefault("cache", {})
        if key not in cache:
            cache[key] = cls(zeros)
        ws = cache[key]
        if stream is None:
            stream = cp.cuda.get_current_stream().ptr
        if ws.stream != stream:  # the last call's second level may still run on its stream (`get`'s docstring)
            if ws.stream is not None:
                cp.cuda.runtime.deviceSynchronize()
            ws.stream = stream
        if not ws.finished:
            cp.cuda.runtime.memsetAsync(ws.base, 0, 8 * cls.WORDS, stream)
        ws.finished, ws.fused = False, False
        return ws

    def __init__(self, zeros):
        self.buf = zeros(self.WORDS, "uint64")
        self.base = int(ptr(self.buf))
        self.sums, self.done = self.base, self.base + 8 * N_BINS
        self.offset, self.bar = self.done + 8, self.done + 16
        self.finished, self.fused, self.stream = True, False, None
        self._zeros, self._scratch, self._scratch_at = zeros, None, 0

    def again(self, stream: int, scratch: int) -> bool:
        """Ready for a call on `stream` as `get` would make it, without its lookups, where the last call was on
        that stream, finished, and left the scratch at `scratch` (the workspace a launch packed ahead names);
        else False, and `get` makes it ready."""
        if self.finished and self.stream == stream and self._scratch_at == scratch:
            self.finished = self.fused = False
            return True
        return False

    def scratch(self, nbytes: int) -> int:
        """Address of nbytes of device memory kept for the next call of this thread (the first level's absmax,
        which double quantization reads once and drops); grows by doubling."""
        if self._scratch is None or 8 * self._scratch.shape[0] < nbytes:
            self._scratch, self._scratch_at = None, 0  # none named (again) if the allocation fails
            size = 1 << max(12, (nbytes - 1).bit_length())
            self._scratch = self._zeros(size // 8, "uint64")
            self._scratch_at = int(ptr(self._scratch))
        return self._scratch_at

    def finish(self):
        """After the caller waited for the kernels."""
        self.finished = True


class DeviceScalar:
    """A float32 scalar left on the device (the fused double quantization's offset, stored after the
    second-level absmax): kernels read it in place (`ptr`); float(), numpy conversion and .item() copy it to
    the host. `owner` keeps its memory alive. `stream`: the handle of the stream whose kernel writes it (None:
    written before the caller got it); read from another stream, every stream's work comes first (that
    stream may be gone by then)."""

    def __init__(self, owner, address: int, cp, stream: int | None = None):
        self.owner, self.ptr, self.cp, self.stream = owner, int(address), cp, stream

    def item(self) -> float:
        cp = self.cp
        host = cp.cuda.alloc_pinned_memory(4)
        stream = cp.cuda.get_current_stream()
        if self.stream is not None and self.stream != stream.ptr:
            cp.cuda.runtime.deviceSynchronize()
        cp.cuda.runtime.memcpyAsync(host.ptr, self.ptr, 4, cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)
        stream.synchronize()
        return float(np.frombuffer(host, dtype=np.float32, count=1)[0])

    def __float__(self) -> float:
        return self.item()

    def __array__(self, dtype=None, copy=None):
        return np.asarray(np.float32(self.item()), dtype=dtype)

    def __repr__(self):
        return f"DeviceScalar({self.item()!r})"


class VerifiedScales:
    """Scale tensors (absmax; or qabsmax, absmax2 and the offset's memory) that a dequantize found finite,
    remembered while they are unchanged, so that the next dequantize of the same state need not wait for
    its kernel to read the non-finite flag (QLoRA dequantizes the same frozen states every step).

    Unchanged means: the same live tensor object (a weak reference, so a freed tensor's address reused by
    another never matches) at the same torch version counter, which every in-place write through any view
    of its memory increments, and at the same address (`t.data = other` swaps the memory without it).
    Tensors without a counter (inference-mode tensors) are never remembered; memory written behind
    torch's back (DLPack, raw pointers) is outside what the counter sees."""

    def __init__(self, most: int = 65536):
        self.seen: dict = {}
        self.most = most

    @staticmethod
    def _version(a):
        try:
            return a._version
        except (AttributeError, RuntimeError):  # inference-mode tensors have no version counter
            return None

    def holds(self, arrays) -> bool:
        for a in arrays:
            entry = self.seen.get(id(a))
            if entry is None or entry[0]() is not a or entry[1] is None:
                return False
            if entry[1] != self._version(a) or entry[2] != a.data_ptr():
                return False
        return True

    def add(self, arrays) -> None:
        import weakref

        if len(self.seen) > self.most:
            self.seen.clear()
        for a in arrays:
            version = self._version(a)
            if version is not None:
                self.seen[id(a)] = (weakref.ref(a), version, a.data_ptr())
