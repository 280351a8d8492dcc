"""Stand-ins for the host-side tests of the fused 4-bit calls without a GPU (tests/test_fused_host.py,
tests/test_fused_spare.py): torch CPU tensors for device memory, a CuPy stand-in, and a module that records
each launch instead of running it; `make_host` makes Fused4bit's over them."""

import threading
from types import SimpleNamespace

import numpy as np
import torch

from qref.backends import cuda_kernels as K
from qref.backends import cuda_launch as L
from qref.backends import cuda_memory
from qref.backends.cuda_bridge import head
from qref.backends.fused4bit import Fused4bit

DT = {"uint8": torch.uint8, "float32": torch.float32, "uint16": torch.int16, "uint64": torch.int64}


class Pinned(bytearray):
    ptr = 0x7000  # the flag's host memory (an address no other value takes here); no kernel runs here


class Event:
    ptr, done = 1, True

    def __init__(self, block=False, disable_timing=True):
        pass

    def synchronize(self):
        pass


class Device:
    def __init__(self, i=0):
        self.id = i

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class HostArray(np.ndarray):
    """A codebook table in host memory standing in for a CuPy array (an int `size`, an address)."""

    def data_ptr(self):
        return self.ctypes.data


CURRENT = [0]  # CuPy's current stream handle in the stand-in: 0 but inside `with Stream()`


class Stream:
    ptr = 7

    def __enter__(self):
        CURRENT.append(self.ptr)
        return self

    def __exit__(self, *exc):
        CURRENT.pop()
        return False


SYNCS = []


def _sync(stream):
    SYNCS.append(stream)


class FakeCupy:
    def __init__(self):
        runtime = SimpleNamespace(
            getDevice=lambda: 0,
            eventRecord=lambda e, s: None,
            memsetAsync=lambda *a: None,
            streamSynchronize=_sync,
            deviceSynchronize=lambda: _sync("device"),
        )
        self.cuda = SimpleNamespace(
            runtime=runtime,
            Event=Event,
            Device=Device,
            alloc_pinned_memory=Pinned,
            get_current_stream=lambda: SimpleNamespace(ptr=CURRENT[-1]),
        )

    @staticmethod
    def asarray(a):
        return np.array(a, copy=True).view(HostArray)


class _Function:
    def __init__(self, ptr, call):
        self.ptr, self._call = ptr, call

    def __call__(self, grid, block, args):
        self._call(grid, block, args)


class RecordingModule:
    """A compiled Module's stand-in: plans as the real one makes them, launches recorded (name, values);
    `bad` makes the first kernel set the non-finite flag, as a kernel does on NaN or Inf."""

    sms = 132
    plan = K.Module.plan

    def __init__(self, bad=False, **knobs):
        self.knobs = {**K.KNOBS, **knobs}
        self.pdl = bool(self.knobs["PDL"])  # as a device of compute capability 9.0 on
        self._plans, self.launches, self.names, self.bad, self.prepared, self.after = {}, [], {}, bad, [], []

    def __call__(self, name):
        """The function `name`; called as CuPy's (grid, block, args), the launch is recorded too."""
        ptr = len(self.names) + 100
        self.names[ptr] = name
        return _Function(ptr, lambda grid, block, args: self.launches.append((name, tuple(args))))

    cooperative = True  # as a device with cooperative launches

    def resident(self, name, block, shared=0):
        return 3 * self.sms

    def per_sm(self, name, block, shared=0):
        return 3

    def launch_cooperative(self, fn, grid, block, layout, values, shared=0, stream=None):
        """Module.launch_cooperative's stand-in: recorded as `launch` records one (the driver takes it)."""
        self.launch(fn, grid, block, layout, values, shared, stream)
        return True

    def prepare(self, fn, grid, block, layout, values, shared=0, ready=None, cooperative=False, moving=()):
        """Module.prepare's stand-in: its launch is recorded as `launch` records one, marked prepared."""
        if ready is not None:
            ready.pack(values)
            return ready
        mod = self

        class Ready:
            def pack(self, values):
                layout.pack(*values)
                self.values = tuple(values)

            def move(self, *addresses):
                values = list(self.values)
                for i, a in zip(moving, addresses):
                    values[i] = a
                self.pack(values)

            def launch(self, x, stream):
                mod.prepared.append(len(mod.launches))
                mod.launch(fn, grid, block, layout, (x, *self.values[1:]), shared, stream)

        ready = Ready()
        ready.pack(values)
        return ready

    def launch_after(self, fn, grid, block, layout, values, shared, stream):
        """Module.launch_after's stand-in: recorded as `launch` records one, its index kept in `after`."""
        self.after.append(len(self.launches))
        self.launch(fn, grid, block, layout, values, shared, stream)

    def launch(self, fn, grid, block, layout, values, shared=0, stream=None):
        layout.pack(*values)  # the values fit the kernel's parameter struct
        self.launches.append((self.names[fn], tuple(values)))
        flag = cuda_memory.Flag._local.flag
        if self.bad:
            flag.value[0] = 1
        if flag.fin in values:  # the grid's end signal (signal_end)
            flag.value[1] = 1


def make_host(monkeypatch):
    """The `host` fixture of the tests: make(**knobs) -> (a Fused4bit over torch CPU memory, its recording
    module), with their own thread-locals (the real flag and workspace untouched)."""
    monkeypatch.setattr(cuda_memory.Flag, "_local", threading.local())
    monkeypatch.setattr(cuda_memory.Workspace, "_local", threading.local())

    def make(**knobs):
        mod = RecordingModule(**{"DQ_FUSED": 0, **knobs})  # two kernels unless asked (test_fused_one_launch.py)
        monkeypatch.setattr(K, "module", lambda device_id: mod)
        monkeypatch.setattr(L, "module", lambda device_id: mod)  # the general launchers' own reference
        fused = Fused4bit(
            FakeCupy(),
            lambda size, dtype: torch.empty(size, dtype=DT[dtype]),
            lambda size, dtype: torch.zeros(size, dtype=DT[dtype]),
            0,
            head=head,  # the torch bridge's
        )
        return fused, mod

    return make


def quantize(fused, quant_type, dq, n=64 * 1000, fmt="bfloat16", queued=None, blocksize=64):
    x = torch.zeros(n, dtype=torch.bfloat16 if fmt == "bfloat16" else torch.float32)
    return fused.quantize(x, n, fmt, blocksize, quant_type, dq, Stream(), queued), x
