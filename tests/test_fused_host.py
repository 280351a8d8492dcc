"""The host side of a block-64 quantize (Fused4bit.quantize64) without a GPU: torch CPU tensors stand in for
device memory and a stand-in module records each launch instead of running it. The kernels must get the
addresses of the very arrays the returned state holds (codes and absmax; or codes, qabsmax, absmax2 and the
offset kept after it), arrays that do not overlap; a flag set by a kernel must refuse the state; a codebook
in value order must launch the NEXT kernel; the next call's state (and launch) is made after the launches
and before the wait, and serves only its shape and stream."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qref.backends import cuda_kernels as K
from qref.backends import cuda_launch as L
from qref.backends import cuda_memory
from qref.backends.fused4bit import Fused4bit, check_state, state_layout

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


class Stream:
    ptr = 7

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


SYNCS = []


def _sync(stream):
    SYNCS.append(stream)


class FakeCupy:
    def __init__(self):
        runtime = SimpleNamespace(
            getDevice=lambda: 0, eventRecord=lambda e, s: None, memsetAsync=lambda *a: None, streamSynchronize=_sync
        )
        self.cuda = SimpleNamespace(
            runtime=runtime,
            Event=Event,
            Device=Device,
            alloc_pinned_memory=Pinned,
            get_current_stream=lambda: SimpleNamespace(ptr=0),
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
        self._plans, self.launches, self.names, self.bad, self.prepared = {}, [], {}, bad, []

    def __call__(self, name):
        """The function `name`; called as CuPy's (grid, block, args), the launch is recorded too."""
        ptr = len(self.names) + 100
        self.names[ptr] = name
        return _Function(ptr, lambda grid, block, args: self.launches.append((name, tuple(args))))

    def resident(self, name, block, shared=0):
        return 3 * self.sms

    def prepare(self, fn, grid, block, layout, values, shared=0):
        """Module.prepare's stand-in: its launch is recorded as `launch` records one, marked prepared."""
        mod = self

        class Ready:
            def pack(self, values):
                layout.pack(*values)
                self.values = tuple(values)

            def launch(self, x, stream):
                mod.prepared.append(len(mod.launches))
                mod.launch(fn, grid, block, layout, (x, *self.values[1:]), shared, stream)

        ready = Ready()
        ready.pack(values)
        return ready

    def launch(self, fn, grid, block, layout, values, shared=0, stream=None):
        layout.pack(*values)  # the values fit the kernel's parameter struct
        self.launches.append((self.names[fn], tuple(values)))
        flag = cuda_memory.Flag._local.flag
        if self.bad:
            flag.value[0] = 1
        if flag.fin in values:  # the grid's end signal (signal_end)
            flag.value[1] = 1


@pytest.fixture
def host(monkeypatch):
    """A Fused4bit over torch CPU memory with its own thread-locals (the real flag and workspace untouched)."""
    monkeypatch.setattr(cuda_memory.Flag, "_local", threading.local())
    monkeypatch.setattr(cuda_memory.Workspace, "_local", threading.local())

    def make(**knobs):
        mod = RecordingModule(**knobs)
        monkeypatch.setattr(K, "module", lambda device_id: mod)
        monkeypatch.setattr(L, "module", lambda device_id: mod)  # the general launchers' own reference
        fused = Fused4bit(
            FakeCupy(),
            lambda size, dtype: torch.empty(size, dtype=DT[dtype]),
            lambda size, dtype: torch.zeros(size, dtype=DT[dtype]),
            0,
        )
        return fused, mod

    return make


def _quantize(fused, quant_type, dq, n=64 * 1000, fmt="bfloat16", queued=None, blocksize=64):
    x = torch.zeros(n, dtype=torch.bfloat16 if fmt == "bfloat16" else torch.float32)
    return fused.quantize(x, n, fmt, blocksize, quant_type, dq, Stream(), queued), x


@pytest.mark.parametrize("dq", [False, True])
def test_kernels_write_the_arrays_the_state_holds(host, dq):
    fused, mod = host()
    n = 64 * 1000
    seen = []
    q, x = _quantize(fused, "nf4", dq, n, queued=seen.append)
    assert seen == [q]  # the state was handed over while the kernels ran
    check_state(q, state_layout(n, 64, dq), n, 64)
    (name, first), *rest = mod.launches
    x_at, codes_at, absmax_at = first[0], first[6], first[7]
    assert name.startswith("quant_lut_f2") and x_at == x.data_ptr() and codes_at == q.packed.data_ptr()
    regions = [(q.packed.data_ptr(), q.packed.numel())]
    if not dq:
        assert not rest and absmax_at == q.absmax.data_ptr()
        regions.append((q.absmax.data_ptr(), 4 * q.absmax.numel()))
    else:
        ((name2, second),) = rest
        assert name2 == "quant_dq256"
        scratch, qabsmax_at, absmax2_at, offset_at = second[0], second[8], second[9], second[10]
        assert scratch == absmax_at  # the second level reads what the first wrote
        assert qabsmax_at == q.qabsmax.data_ptr() and absmax2_at == q.absmax2.data_ptr()
        assert offset_at == q.offset.ptr == q.absmax2.data_ptr() + 4 * q.absmax2.numel()
        assert q.offset.owner.data_ptr() <= offset_at < q.offset.owner.data_ptr() + 4 * q.offset.owner.numel()
        regions += [(qabsmax_at, q.qabsmax.numel()), (absmax2_at, 4 * q.absmax2.numel() + 4)]
    regions.sort()
    assert all(a + size <= b for (a, size), (b, _) in zip(regions, regions[1:]))  # nothing overlaps
    assert all(at % 16 == 0 for at, _ in regions)


@pytest.mark.parametrize("dq", [False, True])
def test_a_flag_set_by_a_kernel_refuses_the_state(host, dq):
    fused, mod = host(bad=True)
    with pytest.raises(ValueError, match="non-finite"):
        _quantize(fused, "nf4", dq)


@pytest.mark.parametrize(("quant_type", "kernel"), [("nf4", "quant_lut_f2_s0_next"), ("fp4", "quant_lut_f2_s0")])
def test_codebooks_in_value_order_launch_the_next_kernel(host, quant_type, kernel):
    fused, mod = host()
    _quantize(fused, quant_type, False)
    assert mod.launches[0][0] == kernel
    fused, mod = host(LUT_NEXT=0)
    _quantize(fused, quant_type, False)
    assert mod.launches[0][0] == "quant_lut_f2_s0"


@pytest.mark.parametrize("least", [1, 1000, 1001])
def test_absmax_summed_by_their_own_kernel_from_a_size_on(host, least):
    """SUMS_PASS_MIN: from that many blocks on, quant_lut without sums, then absmax_sums over the absmax it
    wrote into the workspace's sums, counter and offset, then the second level from that offset."""
    fused, mod = host(SUMS_PASS_MIN=least)
    q, _ = _quantize(fused, "nf4", True, n=64 * 1000)
    names = [name for name, _ in mod.launches]
    ws = cuda_memory.Workspace._local.cache[0]
    first = mod.launches[0][1]
    if least > 1000:  # below the size: the sums inside quant_lut, as before
        assert names == ["quant_lut_f2_s1_next", "quant_dq256"]
        assert first[9:13] == (ws.sums, ws.done, ws.offset, 1000)
        return
    assert names == ["quant_lut_f2_s0_next", "absmax_sums", "quant_dq256"]
    sums, second = mod.launches[1][1], mod.launches[2][1]
    assert first[9:13] == (0, 0, 0, 0)  # no sums inside quant_lut
    assert sums == (first[7], 1000, ws.sums, ws.done, ws.offset)  # the absmax quant_lut wrote, all of them
    assert second[0] == first[7] and second[7] == ws.offset  # the second level reads that offset
    assert second[10] == q.offset.ptr


def test_double_quantization_of_any_block_size_sums_in_one_pass(host):
    """The general path (block 128 here): the general quantize kernel, then absmax_sums over every absmax it
    wrote (the exact sums and, by its last CTA, the offset, into the workspace), then the second level from
    that offset, writing the state's qabsmax and absmax2 and keeping the offset after them."""
    fused, mod = host()
    q, x = _quantize(fused, "nf4", True, n=128 * 500, blocksize=128)
    names = [name for name, _ in mod.launches]
    assert names == ["quant_f2_p1_s16", "absmax_sums", "quant_dq256"]
    (_, first), (_, sums), (_, second) = mod.launches
    ws = cuda_memory.Workspace._local.cache[0]
    assert int(first[0]) == x.data_ptr() and int(first[8]) == q.packed.data_ptr()
    absmax_at = int(first[9])
    assert sums == (absmax_at, 500, ws.sums, ws.done, ws.offset)
    assert second[0] == absmax_at and second[7] == ws.offset
    assert second[8:11] == (q.qabsmax.data_ptr(), q.absmax2.data_ptr(), q.offset.ptr)


@pytest.mark.parametrize("dq", [False, True])
def test_the_call_waits_for_the_end_signal_of_its_last_kernel(host, dq):
    """The last kernel gets the thread's counter and fin (signal_end); no other kernel does, so the call's
    poll cannot end before the last kernel has (a first kernel that signalled would let a double-quantized
    call return before its second level ran); inside a batch no kernel signals (the batch waits once)."""
    fused, mod = host()
    SYNCS.clear()
    _quantize(fused, "nf4", dq)
    flag = cuda_memory.Flag._local.flag
    counter, fin = flag.end(0, None)
    *others, (_, last) = mod.launches
    assert (last[-2:] if dq else (last[10], last[13])) == (counter, fin)  # DqArgs' last two; LutArgs' done, fin
    assert all(fin not in values for _, values in others)
    assert not SYNCS  # the signal was seen: no driver wait
    mod.launches.clear()
    with fused.batch(7):
        _quantize(fused, "nf4", dq)
    assert all(fin not in values for _, values in mod.launches)


@pytest.mark.parametrize(
    ("least", "quant_type", "kernel"),
    [
        (1000, "nf4", "quant_lut_f2_s0_next_wide"),
        (1001, "nf4", "quant_lut_f2_s0_next"),
        (0, "nf4", "quant_lut_f2_s0_next"),
        (1, "fp4", "quant_lut_f2_s0"),  # codes not in value order: no NEXT lookup, no wide form of it
    ],
)
def test_the_wide_kernel_from_a_size_on(host, least, quant_type, kernel):
    """QUANT_WIDE_MIN: from that many blocks on (0: never), the NEXT lookup's form compiled for more CTAs an
    SM (QUANT_MIN_CTAS_WIDE), the same arguments."""
    fused, mod = host(QUANT_WIDE_MIN=least)
    _quantize(fused, quant_type, False, n=64 * 1000)
    assert mod.launches[0][0] == kernel


def _counting(fused, mod):
    """The states `fused` makes, in order: (bytes, codes' address, launches made before it)."""
    made, state64 = [], fused.state64

    def count(r):
        q, at = state64(r)
        made.append((r.nbytes, q.packed.data_ptr(), len(mod.launches)))
        return q, at

    fused.state64 = count
    return made


class OtherStream(Stream):
    ptr = 8


@pytest.mark.parametrize("dq", [False, True])
def test_the_next_state_is_made_while_the_kernels_run(host, dq):
    """A call of a shape makes the next call's state after its launches, before its wait; the next call of
    that shape on that stream launches into it (one state made a call); the two states share no memory."""
    fused, mod = host()
    made = _counting(fused, mod)
    first, _ = _quantize(fused, "nf4", dq)
    launches = len(mod.launches)
    assert [m[2] for m in made] == [0, launches]  # this call's state, then the spare after the launches
    second, _ = _quantize(fused, "nf4", dq)
    assert len(made) == 3 and second.packed.data_ptr() == made[1][1] != first.packed.data_ptr()
    assert mod.launches[launches][1][6] == second.packed.data_ptr()  # the codes' address (LutArgs' out)
    regions = sorted(
        (a.data_ptr(), a.data_ptr() + a.numel() * a.element_size())
        for q in (first, second)
        for a in (q.packed, q.absmax, q.qabsmax, q.offset and q.offset.owner)
        if a is not None
    )
    assert all(end <= start for (_, end), (start, _) in zip(regions, regions[1:]))


def test_a_spare_serves_only_its_shape_and_stream(host):
    """A call that finds no spare of its shape and stream makes its state (two states made: its own and the
    next spare); one that finds it makes only the next spare."""
    fused, mod = host()
    made = _counting(fused, mod)
    x = torch.zeros(64 * 999, dtype=torch.bfloat16)
    calls = [
        (64 * 1000, Stream, 2),
        (64 * 1000, Stream, 1),
        (64 * 999, Stream, 2),  # another shape
        (64 * 999, OtherStream, 2),  # the same shape on another stream
        (64 * 999, Stream, 2),  # back on the first: the other stream's spare is the one kept
        (64 * 999, Stream, 1),
    ]
    for n, stream, states in calls:
        before = len(made)
        q = fused.quantize(
            x[:n] if n < x.numel() else torch.zeros(n, dtype=torch.bfloat16), n, "bfloat16", 64, "nf4", False, stream()
        )
        assert len(made) - before == states
        assert q.packed.data_ptr() == made[before if states == 2 else before - 1][1]  # its own, or the spare


@pytest.mark.parametrize(("most", "made"), [(0, 3), (36000 - 1, 3), (36000, 4)])
def test_no_spare_past_its_size(host, most, made):
    """SPARE_MAX bounds the spare's bytes: 36000 are the state of 64000 values (codes, then absmax)."""
    fused, mod = host(SPARE_MAX=most)
    states = _counting(fused, mod)
    for _ in range(3):
        _quantize(fused, "nf4", False)
    assert len(states) == made and states[0][0] == 36000


def test_no_spare_inside_a_batch(host):
    fused, mod = host()
    made = _counting(fused, mod)
    with fused.batch(7):
        for _ in range(3):
            _quantize(fused, "nf4", False)
    assert len(made) == 3


def test_the_next_launch_is_packed_while_the_kernels_run(host):
    """Without double quantization the spare holds the next call's launch too, packed but for the input's
    address: that call launches it with the values a launch made in the call would have."""
    fused, mod = host()
    first, _ = _quantize(fused, "nf4", False)
    second, x = _quantize(fused, "nf4", False)
    flag = cuda_memory.Flag._local.flag
    counter, fin = flag.end(0, None)
    assert mod.prepared == [1]  # the second call's launch, the first call's made in the call
    ((_, made), (_, ready)) = mod.launches
    want = (x.data_ptr(), *made[1:6], second.packed.data_ptr(), second.absmax.data_ptr(), flag.ptr, 0, counter)
    assert ready == (*want, 0, 0, fin)
    third, x = _quantize(fused, "nf4", False)
    assert mod.prepared == [1, 2] and mod.launches[2][1][:7] == (x.data_ptr(), *made[1:6], third.packed.data_ptr())
    fused.quantize(torch.zeros(64 * 999, dtype=torch.bfloat16), 64 * 999, "bfloat16", 64, "nf4", False, Stream())
    assert mod.prepared == [1, 2]  # another shape: launched in the call


def test_a_prepared_launch_packs_the_struct_with_the_input_first():
    """Module.prepare's Prepared: the driver gets the parameter struct packed from the values, with the
    address given at launch in its first field, and the same memory packed again serves the next launch."""
    import ctypes

    calls = []
    driver = SimpleNamespace(launchKernel=lambda *args: calls.append((args, ctypes.string_at(args[9], 8))))
    mod = SimpleNamespace(_driver=driver)
    values = (0, 1000, 4096, 16, 18, 15, 1 << 40, 2 << 40, 3 << 40, 0, 5 << 40, 0, 0, 6 << 40)
    ready = K.Prepared(mod, (101, 396, 1, 1, 256, 1, 1, 128), L.LUT_ARGS, values)
    ready.launch(7 << 40, 9)
    ((args, pointer),) = calls
    assert args[:9] == (101, 396, 1, 1, 256, 1, 1, 128, 9) and args[10] == 0
    address = int.from_bytes(pointer, "little")
    assert ctypes.string_at(address, L.LUT_ARGS.size) == L.LUT_ARGS.pack(7 << 40, *values[1:])
    ready.pack((0, *values[1:6], 8 << 40, *values[7:]))
    ready.launch(9 << 40, 9)
    assert ctypes.string_at(address, L.LUT_ARGS.size) == L.LUT_ARGS.pack(9 << 40, *values[1:6], 8 << 40, *values[7:])


@pytest.mark.parametrize("dq", [False, True])
def test_no_spare_where_the_device_is_short_of_memory(host, dq):
    """The spare is optional: where its allocation fails for memory the call still waits for its kernels
    and returns its state, and the next call allocates its own (a refused allocation is not an error)."""
    fused, mod = host()
    empty, calls = fused.empty, []

    def short(size, dtype):
        calls.append(size)
        if len(calls) > (2 if not dq else 3):  # the call's own state fits, the spare does not
            raise MemoryError("out of memory")
        return empty(size, dtype)

    fused.empty = short
    SYNCS.clear()
    q, x = _quantize(fused, "nf4", dq)
    assert mod.launches[0][1][6] == q.packed.data_ptr() and getattr(fused._local, "spare", None) is None
    fused.empty = empty
    made = _counting(fused, mod)
    second, _ = _quantize(fused, "nf4", dq)
    assert made[0][1] == second.packed.data_ptr() and len(made) == 2  # its own state, then a spare
