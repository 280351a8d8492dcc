"""The fused 4-bit calls (quantize_4bit / dequantize_4bit, with and without double quantization) on the
device memory of any framework, shared by the CuPy backend and the PyTorch backend on CUDA: per shape a
recipe (launch plans of backends/cuda_kernels.py, the state's sizes) made once, so that a call checks, takes
the state the previous call of its shape allocated while it waited (or allocates it), launches on the
caller's stream and waits once (the non-finite flag).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import NamedTuple

from qref.backend import FourBit, zero_code
from qref.double_quant import DQ_BLOCKSIZE

from . import cuda_kernels as K
from . import cuda_launch as L
from .cuda_tables import Tables


def _size(a) -> int:
    """Element count of a CuPy/NumPy array (`size`, an int) or a torch tensor (`size` a method: numel())."""
    size = a.size
    return size if type(size) is int else a.numel()


_DTYPE_NAMES: dict = {}


def dtype_name(a) -> str:
    """'uint8', 'float32', ... of a CuPy array or torch tensor (str() of a dtype costs microseconds: cached)."""
    name = _DTYPE_NAMES.get(a.dtype)
    if name is None:
        name = _DTYPE_NAMES[a.dtype] = str(a.dtype).replace("torch.", "")
    return name


def state_layout(n: int, blocksize: int, double_quant: bool) -> dict:
    """name -> (size, dtype) of every array of a 4-bit state of n values: the kernels read raw addresses."""
    nb = -(-n // blocksize)
    if double_quant:
        return {
            "packed": ((n + 1) // 2, "uint8"),
            "qabsmax": (nb, "uint8"),
            "absmax2": (-(-nb // DQ_BLOCKSIZE), "float32"),
        }
    return {"packed": ((n + 1) // 2, "uint8"), "absmax": (nb, "float32")}


def check_state(q: FourBit, layout: dict, n: int, blocksize: int):
    """Raises, naming the array, where q does not have the layout (state_layout) the kernels will read."""
    for name, (size, dtype) in layout.items():
        a = getattr(q, name)
        if a is None or _size(a) != size or dtype_name(a) != dtype:
            got = "None" if a is None else f"{_size(a)} x {dtype_name(a)}"
            raise ValueError(f"{name} must hold {size} x {dtype} for {n} values in blocks of {blocksize}, got {got}")


_thread = threading.local()


def current(cp, index: int) -> bool:
    """Whether device `index` is this thread's current device, its context current too: the kernels launch
    through the driver, which needs a current context, and a thread that has not yet called the CUDA runtime
    has none although the runtime names device 0. A thread's first call makes it (cudaSetDevice, and cudaFree(0)
    for runtimes that make it lazily); after that the runtime keeps the context with the device."""
    if cp.cuda.runtime.getDevice() != index:
        return False
    if not getattr(_thread, "context", False):
        cp.cuda.runtime.setDevice(index)
        cp.cuda.runtime.free(0)
        _thread.context = True
    return True


def with_device(cp, device, fn, *args):
    """fn(*args) with `device` (a CuPy Device) current, its context too; no switch when it already is (a
    switch costs microseconds)."""
    if current(cp, device.id):
        return fn(*args)
    with device:  # cudaSetDevice: the context current too (CUDA 12 on)
        return fn(*args)


class _Launched(NamedTuple):
    """What the spare's packed launches of a double-quantized call name: the workspace, its scratch (the
    first level's absmax), the end signal, the first level's tail of values and the signal of the last
    kernel (the two kernels'), the sums quant_dq256 reads, and whether they are the one cooperative launch."""

    ws: object
    scratch: int
    end: tuple
    tail: tuple
    last: tuple
    sums: int
    fused: bool


def bounded(cache: dict, most: int = 4096):
    """Per-shape caches are emptied past `most` entries (a caller of many shapes keeps bounded memory)."""
    if len(cache) > most:
        cache.clear()


class _Quant64:
    """The block-64 quantize of n values (n % 64 == 0) of one format and codebook, with or without double
    quantization, on one Module: its launch plans and its state's sizes (codes, then absmax, or qabsmax,
    absmax2 and the offset kept after them), made once per shape."""

    def __init__(self, mod, fmt: str, n: int, lut, dlut, double_quant: bool, nxt=None):
        self.mod, self.nb, self.npk = mod, n // 64, n // 2
        least = mod.knobs["SUMS_PASS_MIN"]  # the absmax summed by their own kernel, not inside quant_lut
        self.sums = L.sums_plan(mod, self.nb) if double_quant and least and self.nb >= least else None
        self.own = double_quant and bool(mod.knobs["DQ2_OFFSET"])  # quant_dq256 computes the offset
        mode = 0 if not double_quant or self.sums is not None else 2 if self.own else 1
        # quant_lut signals its grid's end in modes 0 and 2 (mode 1 counts its CTAs for the last one's offset)
        self.first_ends = mode != 1 and not mod.knobs["DQ2_WAIT"]
        self.plan = L.lut_plan(mod, fmt, self.nb, lut, mode, nxt)
        self.dq2 = L.dq2_plan(mod, self.nb, dlut) if double_quant else None
        # both levels in one cooperative launch (DQ_FUSED), else (or where the driver refuses it) two kernels
        one = mode == 2 and self.first_ends and mod.knobs["DQ_FUSED"]
        self.fused = L.fused_plan(mod, self.plan, dlut) if one else None
        self.nb2 = -(-self.nb // DQ_BLOCKSIZE)
        self.nbytes = self.npk + (self.nb + 4 * (self.nb2 + 1) if double_quant else 4 * self.nb)


class _Dequant:
    """What a dequantize of n values of one codebook, block size, state kind and output format needs besides
    its arrays: the state's layout, the codebook table and the dynamic map on the device, dequant8's plan
    (None where its conditions fail: the general kernel)."""

    def __init__(self, mod, tables, n: int, blocksize: int, quant_type: str, out_dtype: str, double_quant: bool):
        self.layout = state_layout(n, blocksize, double_quant)
        self.table, self.dyn = tables(quant_type)[0], tables("dynamic")[0] if double_quant else None
        self.plan = L.dequant8_plan(mod, out_dtype, n, blocksize)


def first(a, size: int):
    """a's first `size` values, a view of its memory (Fused4bit's `head` unless the framework has a cheaper one)."""
    return a[:size]


class Fused4bit:
    """quantize_4bit / dequantize_4bit with fused double quantization, on the device memory of a framework:
    `empty(size, dtype)` and `zeros(size, dtype)` allocate its arrays (CuPy's or torch's; `out_of_memory`,
    the exceptions `empty` raises when the device is short of memory); `head(a, size)`, a's first `size`
    values as an array of its own memory (the second-level absmax, the offset kept after them: `first`, a
    slice, by default; torch's resize_ keeps the memory whole without a view's cost). Inputs are
    C-contiguous arrays of it on this device (the callers check); `stream` is the CuPy stream (or an
    ExternalStream over torch's) the kernels run on. One host round-trip per call (the non-finite flag),
    after every kernel is queued."""

    def __init__(self, cp, empty, zeros, device_id: int, out_of_memory: tuple = (MemoryError,), head=first):
        self.cp, self.tables, self.empty, self.zeros, self.head = cp, Tables(cp, device_id), empty, zeros, head
        self.device_id, self.out_of_memory = device_id, out_of_memory  # what `empty` raises when short
        self._quant, self._dequant = {}, {}
        self._local = threading.local()  # `spare`: see quantize64

    def quantize(self, x, n, fmt, blocksize, quant_type, double_quant, stream, queued=None):
        """With double_quant the offset (the exact mean of the absmax) is computed on the device, used there,
        and kept after the second-level absmax: FourBit.offset is a DeviceScalar over it. queued(q), if
        given, runs while the kernels do, before the wait (a refused state is dropped: it never reaches
        the caller)."""
        r = self.recipe64(fmt, n, blocksize, quant_type, double_quant)
        xp = int(K.ptr(x))
        if r is False or xp % 16:
            with stream:
                q = self._quantize_any(x, n, fmt, blocksize, quant_type, double_quant)
            if queued is not None:
                queued(q)
            return q
        return self.quantize64(r, xp, stream.ptr, queued)

    def recipe64(self, fmt, n, blocksize, quant_type, double_quant) -> _Quant64 | bool:
        """The block-64 recipe of this shape (made once per module), or False where the general path runs."""
        mod = K.module(self.device_id)
        key = (mod, fmt, n, blocksize, quant_type, double_quant)
        r = self._quant.get(key)
        if r is None:
            lut, dlut = self.tables(quant_type)[3], self.tables.log("dynamic", mod)
            fast = (
                blocksize == 64
                and n % 64 == 0
                and n // 64 < 2**31
                and lut is not None
                and len(lut) == 2
                and dlut is not None
            )
            nxt = self.tables.next(quant_type) if fast else None
            r = self._quant[key] = _Quant64(mod, fmt, n, lut, dlut, double_quant, nxt) if fast else False
            bounded(self._quant)
        return r

    def state64(self, r: _Quant64, stream: int) -> tuple:
        """A recipe's state, an allocation per array (the allocator aligns each), and the addresses its
        kernels write: (FourBit, (codes, absmax)) or (FourBit, (codes, qabsmax, absmax2, offset)), the
        offset a float32 kept after absmax2, written on `stream` (a handle)."""
        empty = self.empty
        packed = empty(r.npk, "uint8")
        if r.dq2 is None:
            absmax = empty(r.nb, "float32")
            return FourBit(packed, absmax), (int(K.ptr(packed)), int(K.ptr(absmax)))
        qabsmax, second = empty(r.nb, "uint8"), empty(r.nb2 + 1, "float32")
        at = (int(K.ptr(packed)), int(K.ptr(qabsmax)), int(K.ptr(second)))
        at += (at[2] + 4 * r.nb2,)
        offset = K.DeviceScalar(second, at[3], self.cp, stream)
        return FourBit(packed, None, qabsmax, self.head(second, r.nb2), offset), at

    def quantize64(self, r: _Quant64, xp: int, stream: int, queued=None):
        """The quantize of a recipe64 recipe (whole blocks of 64: the QLoRA case), for a caller that checked
        the input (C-contiguous, on this device, which is current; its address xp 16-byte aligned; `stream`
        a handle). Its state (state64) was made while the previous call of this recipe on this thread and
        stream waited for its kernels (the spare: one a thread, of at most SPARE_MAX bytes, the last
        recipe's; its launches too, packed but for the input's address, used where the workspace's stream,
        scratch and end signal they name are this call's), else it is made now. With double quantization
        the first level's absmax go to the workspace's scratch memory, their exact sums to the workspace,
        from which quant_dq256 computes the offset (knob DQ2_OFFSET; else the last CTA of the kernel that
        sums); the offset stays on the device, after the second-level absmax. With DQ_FUSED both levels
        are one cooperative launch (quant_lut_dq; two kernels where the driver refuses it). The first
        level's kernel (or phase) signals its end (Flag.end), which the call polls: the non-finite flag is
        final then, so a double-quantized call returns while its second level runs, after it on `stream`
        (as any kernel a torch or CuPy call queues; the state's offset, read on another stream, waits for
        the device). Where the first level's kernel counts its CTAs for the offset (DQ2_OFFSET 0) the
        second signals."""
        cp, local = self.cp, self._local
        flag = K.Flag.get(cp)
        knobs = r.mod.knobs
        signal = knobs["END_SIGNAL"] and not flag.deferred  # a kernel signals its end
        end = flag.end(self.device_id, self.zeros) if signal else (0, 0)
        spare = getattr(local, "spare", None)
        if spare is not None and spare[0] is r and spare[1] == stream:
            _, _, q, at, ready, ctx, ready2 = spare
            local.spare = None
        else:
            (q, at), ready, ctx, ready2 = self.state64(r, stream), None, None, None
        fused = False  # both levels in one launch (r.fused)
        if r.dq2 is None:
            tail = (0, end[0], 0, 0, end[1])  # no sums; the end signal
            packed = ready is not None and signal
            if packed:  # its launch packed but for the input's address
                ready.launch(xp, stream)
            else:
                r.plan.launch(xp, at[0], at[1], flag.ptr, *tail, stream=stream)
        else:
            # ctx: what the spare's launches name (_Launched)
            packed = ready is not None and ctx.end == end and ctx.ws.again(stream, ctx.scratch)
            if packed:  # the workspace as the spare's launches name it: launched without the lookups
                ws, absmax, _, tail, last, sums, fused = ctx
                ready.launch(xp, stream)
            else:
                ws = K.Workspace.get(cp, self.zeros, self.device_id, stream)
                absmax = ws.scratch(4 * r.nb)
                first, last = (end, (0, 0)) if r.first_ends else ((0, 0), end)  # which kernel signals
                if r.sums is not None:  # quant_lut without sums, then absmax_sums
                    tail = (0, first[0], 0, 0, first[1])
                elif r.own:  # quant_lut's sums, the offset by quant_dq256
                    tail = (ws.sums, first[0], 0, r.nb, first[1])
                else:  # quant_lut's sums and, by its last CTA, the offset
                    tail = (ws.sums, ws.done, ws.offset, r.nb, 0)
                sums = ws.sums if r.own else 0
                fused = r.fused is not None and r.fused.launch(
                    xp, at[0], absmax, flag.ptr, ws.sums, end, r.nb, *at[1:], ws.bar, stream=stream
                )
                if not fused:
                    r.plan.launch(xp, at[0], absmax, flag.ptr, *tail, stream=stream)
            if not fused:  # the second level's kernels
                if r.sums is not None:
                    r.sums.launch(absmax, ws.sums, ws.done, 0 if r.own else ws.offset, stream=stream)
                if ready2 is not None and packed:
                    ready2.launch(absmax, stream)
                else:
                    r.dq2.launch(absmax, ws.offset, at[1], at[2], at[3], last, stream=stream, sums=sums)
        if queued is not None:
            queued(q)
        if flag.deferred:  # in a batch; stream order keeps the workspace's reuse by the next call safe
            return q
        if r.nbytes <= knobs["SPARE_MAX"]:  # the next call's state (and launches), made while these kernels run
            try:
                q2, at2 = self.state64(r, stream)
            except self.out_of_memory:  # the spare is optional: none where the device is short of memory
                pass
            else:
                if ctx is not None and ctx.fused != fused:  # the spare's launches were of the other kind
                    ready = ready2 = None
                # the launches for this scratch and end signal; where this call launched them packed, only the
                # state's addresses move (Prepared.move)
                if fused:
                    if packed:
                        ready.move(*at2)
                    else:
                        state = (at2[0], absmax, flag.ptr, ws.sums, end, r.nb, *at2[1:], ws.bar)
                        ready = r.fused.prepare(*state, ready=ready)
                elif r.dq2 is not None:
                    if packed:
                        ready.move(at2[0])
                    else:
                        ready = r.plan.prepare(at2[0], absmax, flag.ptr, tail, ready)
                    if packed and ready2 is not None:
                        ready2.move(*at2[1:])
                    else:
                        ready2 = r.dq2.prepare(absmax, ws.offset, at2[1], at2[2], at2[3], last, sums, ready2)
                elif packed:
                    ready.move(*at2)
                elif signal:
                    ready = r.plan.prepare(at2[0], at2[1], flag.ptr, tail, ready)
                if r.dq2 is not None and not packed:  # a packed call's ctx already names all this
                    ctx = _Launched(ws, absmax, end, tail, last, sums, fused)
                local.spare = (r, stream, q2, at2, ready, ctx, ready2)
        (flag.wait_end if signal else flag.wait)(stream)
        if r.dq2 is not None:
            ws.finish()
        flag.check(L.NONFINITE)
        return q

    def _quantize_any(self, x, n, fmt, blocksize, quant_type, double_quant):
        """Any block size, tail and alignment, on CuPy's current stream; both levels in one cooperative
        launch where DQ_FUSED is set and the driver allows it (cuda_launch.quantize's `second`), else in two kernels."""
        cp = self.cp
        _, mids, order, lut = self.tables(quant_type)
        flag, dev = K.Flag.get(cp), self.device_id
        kw = {"empty": self.empty, "device": dev}
        if not double_quant:
            packed, absmax = L.quantize(
                x, fmt, n, blocksize, mids, order, True, zero_code=zero_code(quant_type), table=lut, flag=flag, **kw
            )
            flag.raise_if_set(L.NONFINITE)
            return FourBit(packed, absmax)
        nb = -(-n // blocksize)
        nb2 = -(-nb // DQ_BLOCKSIZE)
        _, dmids, dorder, _ = self.tables("dynamic")
        dlut = self.tables.log("dynamic", K.module(dev))
        ws = K.Workspace.get(cp, self.zeros, dev)
        second = self.empty(nb2 + 1, "float32")  # absmax2, then the offset kept with it
        at = int(K.ptr(second)) + 4 * nb2
        qabsmax = self.empty(nb, "uint8")
        fused = (dlut, qabsmax, second, at) if dlut is not None else None  # tables.log: None or a log table
        packed, absmax = L.quantize(
            x,
            fmt,
            n,
            blocksize,
            mids,
            order,
            True,
            zero_code=zero_code(quant_type),
            table=lut,
            ws=ws,
            offset_out=ws.offset,
            second=fused,
            flag=flag,
            **kw,
        )
        if not ws.fused:  # the second level by its own kernel, the offset from the first one's last CTA
            # finite absmax minus their finite mean cannot overflow: the second kernel needs no flag
            L.quantize(
                absmax,
                "float32",
                nb,
                DQ_BLOCKSIZE,
                dmids,
                dorder,
                False,
                offset=K.DeviceScalar(ws, ws.offset, cp),
                offset_copy=at,
                table=dlut,
                absmax=second,
                out=qabsmax,
                **kw,
            )
        offset = K.DeviceScalar(second, at, cp)
        flag.wait()
        ws.finish()
        flag.check(L.NONFINITE)
        return FourBit(packed, None, qabsmax, self.head(second, nb2), offset)

    def recipe(self, n, blocksize, quant_type, out_dtype, double_quant: bool) -> _Dequant:
        """The dequantize recipe of this shape, codebook, block size, format and state kind (made once)."""
        mod = K.module(self.device_id)
        key = (mod, n, blocksize, quant_type, out_dtype, double_quant)
        r = self._dequant.get(key)
        if r is None:
            r = self._dequant[key] = _Dequant(mod, self.tables, n, blocksize, quant_type, out_dtype, double_quant)
            bounded(self._dequant)
        return r

    def dequantize(self, q: FourBit, n, blocksize, quant_type, out_dtype, stream, finish=None, wait=True):
        """finish(out): the caller's view of the output (shape, dtype), made while the kernel runs. wait=False
        (scales the caller knows finite): return without waiting for the kernel's non-finite flag."""
        r = self.recipe(n, blocksize, quant_type, out_dtype, q.qabsmax is not None)
        check_state(q, r.layout, n, blocksize)
        flag = K.Flag.get(self.cp)
        kw = {"empty": self.empty, "flag": flag, "plan": r.plan, "stream": stream}
        if r.dyn is None:
            out = L.dequantize(q.packed, n, blocksize, r.table, out_dtype, True, absmax=q.absmax, **kw)
        else:
            out = L.dequantize(
                q.packed,
                n,
                blocksize,
                r.table,
                out_dtype,
                True,
                qabsmax=q.qabsmax,
                absmax2=q.absmax2,
                dyn=r.dyn,
                offset=q.offset,
                blocksize2=DQ_BLOCKSIZE,
                **kw,
            )
        if finish is not None:
            out = finish(out)
        if wait and not flag.deferred:
            flag.raise_if_set(L.NONFINITE_SCALE, stream.ptr)
        return out

    @contextmanager
    def batch(self, stream: int):
        """The calls inside (this thread's, on `stream`, a handle) queue their kernels and return without
        waiting for the non-finite flag, reset once here; after the last one wait. The value, called after
        the exit, says whether any kernel set the flag (qref.batch.run_many then finds the item). The two-
        kernel double quantization's workspace is reused call after call in stream order; the next call
        outside the batch clears it (Workspace.get: not finished)."""
        flag = K.Flag.get(self.cp)
        if flag.deferred:  # a batch inside a batch: the outer one waits
            yield lambda: False
            return
        flag.deferred, failed = True, []
        try:
            yield lambda: bool(failed and failed[0])
        finally:
            flag.deferred = False
            flag.wait(stream)
            failed.append(bool(flag.value[0]))
