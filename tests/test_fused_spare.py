"""The next call's state and launch, made while a block-64 quantize waits for its kernels (the spare,
Fused4bit.quantize64), without a GPU (tests/fused_standins.py): made after the launches and before the
wait, serving only its shape and stream, bounded by SPARE_MAX, not made in a batch or where memory runs
out; the packed launch carries the values a launch in the call would."""

import ctypes
from types import SimpleNamespace

import pytest
import torch
from fused_standins import SYNCS, Stream, make_host, quantize

from qref.backends import cuda_kernels as K
from qref.backends import cuda_launch as L
from qref.backends import cuda_memory


@pytest.fixture
def host(monkeypatch):
    return make_host(monkeypatch)


def _counting(fused, mod):
    """The states `fused` makes, in order: (bytes, codes' address, launches made before it)."""
    made, state64 = [], fused.state64

    def count(r, stream):
        q, at = state64(r, stream)
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
    first, _ = quantize(fused, "nf4", dq)
    launches = len(mod.launches)
    assert [m[2] for m in made] == [0, launches]  # this call's state, then the spare after the launches
    second, _ = quantize(fused, "nf4", dq)
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
        quantize(fused, "nf4", False)
    assert len(states) == made and states[0][0] == 36000


def test_no_spare_inside_a_batch(host):
    fused, mod = host()
    made = _counting(fused, mod)
    with fused.batch(7):
        for _ in range(3):
            quantize(fused, "nf4", False)
    assert len(made) == 3


def test_the_next_launch_is_packed_while_the_kernels_run(host):
    """Without double quantization the spare holds the next call's launch too, packed but for the input's
    address: that call launches it with the values a launch made in the call would have."""
    fused, mod = host()
    first, _ = quantize(fused, "nf4", False)
    second, x = quantize(fused, "nf4", False)
    flag = cuda_memory.Flag._local.flag
    counter, fin = flag.end(0, None)
    assert mod.prepared == [1]  # the second call's launch, the first call's made in the call
    ((_, made), (_, ready)) = mod.launches
    want = (x.data_ptr(), *made[1:6], second.packed.data_ptr(), second.absmax.data_ptr(), flag.ptr, 0, counter)
    assert ready == (*want, 0, 0, fin)
    third, x = quantize(fused, "nf4", False)  # its launch moved to the third state (Prepared.move)
    want = (x.data_ptr(), *made[1:6], third.packed.data_ptr(), third.absmax.data_ptr(), flag.ptr, 0, counter)
    assert mod.prepared == [1, 2] and mod.launches[2][1] == (*want, 0, 0, fin)
    fused.quantize(torch.zeros(64 * 999, dtype=torch.bfloat16), 64 * 999, "bfloat16", 64, "nf4", False, Stream())
    assert mod.prepared == [1, 2]  # another shape: launched in the call


@pytest.mark.parametrize("least", [1, 2**21])
def test_the_next_double_quantized_first_launch_is_packed(host, least):
    """With double quantization the spare holds the next call's first launch (quant_lut, with the sums or,
    from SUMS_PASS_MIN blocks, without) and its last (quant_dq256), packed for this thread's workspace half,
    scratch and end signal: the next call launches them with the values launches made in the call would
    have; where its scratch grew in between (a larger call of another shape), the launches are made in the
    call."""
    fused, mod = host(SUMS_PASS_MIN=least)
    quantize(fused, "nf4", True)
    made = mod.launches[0][1]
    count = len(mod.launches)
    second, x = quantize(fused, "nf4", True)
    assert mod.prepared == [count, 2 * count - 1]  # the second call's first and last launches
    ready = mod.launches[count][1]
    assert ready == (x.data_ptr(), *made[1:6], second.packed.data_ptr(), *made[7:])  # the same workspace half
    names = [name for name, _ in mod.launches]
    assert names[count:] == names[:count]  # the kernels after it as before
    last, ready2 = mod.launches[count - 1][1], mod.launches[-1][1]
    at = (second.qabsmax.data_ptr(), second.absmax2.data_ptr(), second.offset.ptr)
    assert ready2 == (*last[:8], *at, *last[11:])  # the second level's values but for this state's arrays
    third, x = quantize(fused, "nf4", True)  # both launches moved to the third state (Prepared.move)
    at = (third.qabsmax.data_ptr(), third.absmax2.data_ptr(), third.offset.ptr)
    assert mod.launches[2 * count][1] == (x.data_ptr(), *made[1:6], third.packed.data_ptr(), *made[7:])
    assert mod.launches[-1][1] == (*last[:8], *at, *last[11:])
    n = 64 * 8 * 3000  # a larger shape: the scratch grows
    fused.quantize(torch.zeros(n, dtype=torch.bfloat16), n, "bfloat16", 64, "nf4", True, Stream())
    count = len(mod.launches)
    quantize(fused, "nf4", True)
    assert mod.prepared[-1] < count  # the first shape's spare was dropped for the other shape's


def test_a_packed_first_launch_is_not_used_for_another_scratch(host):
    """The packed launch names the scratch of the call that made it: a call whose scratch moved (grown here
    by hand; a larger shape in between would also have taken the spare) launches in the call."""
    fused, mod = host()
    quantize(fused, "nf4", True)
    ws = cuda_memory.Workspace._local.cache[0]
    _kept = ws._scratch
    ws.scratch(16 * _kept.numel())  # grown: allocated afresh, at another address
    count = len(mod.launches)
    q, _ = quantize(fused, "nf4", True)
    assert all(i < count for i in mod.prepared)  # neither packed launch
    assert mod.launches[count][1][7] == ws._scratch_at  # the new scratch, not the packed one
    assert mod.launches[-1][1][0] == ws._scratch_at


def test_a_prepared_launch_packs_the_struct_with_the_input_first():
    """Module.prepare's Prepared: the driver gets the parameter struct packed from the values, with the
    address given at launch in its first field, and the same memory packed again serves the next launch."""

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


@pytest.mark.parametrize("layout", ["LUT_ARGS", "DQ_ARGS", "FUSED_ARGS"])
def test_a_prepared_launch_moves_only_the_fields_it_names(layout):
    """Prepared.move rewrites the address fields named at its making (`moving`), in order, and leaves every
    other byte as packed: the struct equals one packed afresh with those values."""
    layout = getattr(L, layout)
    mod = SimpleNamespace(_driver=None)
    values = tuple(range(101, 101 + len(K.field_offsets(layout))))
    moving = (0, len(values) - 1) if layout is not L.FUSED_ARGS else L.MOVING
    ready = K.Prepared(mod, (101, 396, 1, 1, 256, 1, 1, 128), layout, values, moving=moving)
    new = [v << 33 for v in range(1, len(moving) + 1)]
    ready.move(*new)
    want = list(values)
    for i, v in zip(moving, new):
        want[i] = v
    assert bytes(ready.mem.buf)[: layout.size] == layout.pack(*want)


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
    q, x = quantize(fused, "nf4", dq)
    assert mod.launches[0][1][6] == q.packed.data_ptr() and getattr(fused._local, "spare", None) is None
    fused.empty = empty
    made = _counting(fused, mod)
    second, _ = quantize(fused, "nf4", dq)
    assert made[0][1] == second.packed.data_ptr() and len(made) == 2  # its own state, then a spare


def test_a_packed_launch_is_not_used_after_an_unfinished_call(host):
    """The packed launches name a workspace whose sums the last call's kernels left zero: after a call that
    did not finish (here by hand, as one that raised) the next call clears the workspace and launches in
    the call."""
    fused, mod = host()
    quantize(fused, "nf4", True)
    ws = cuda_memory.Workspace._local.cache[0]
    ws.finished = False
    count = len(mod.launches)
    quantize(fused, "nf4", True)
    assert all(i < count for i in mod.prepared)
    assert mod.launches[count][1][9] == ws.sums  # LutArgs' sums: the workspace's
