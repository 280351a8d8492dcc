"""The host side of a block-64 quantize (Fused4bit.quantize64) without a GPU (tests/fused_standins.py: torch
CPU tensors stand in for device memory, a stand-in module records each launch). The kernels must get the
addresses of the very arrays the returned state holds (codes and absmax; or codes, qabsmax, absmax2 and the
offset kept after it), arrays that do not overlap; a flag set by a kernel must refuse the state; a codebook
in value order must launch the NEXT kernel, from a size on its wide form."""

import pytest
import torch
from fused_standins import SYNCS, Stream, make_host, quantize

from qref.backends import cuda_memory
from qref.backends.fused4bit import check_state, state_layout


class OtherStream(Stream):
    ptr = 8


@pytest.fixture
def host(monkeypatch):
    return make_host(monkeypatch)


@pytest.mark.parametrize("dq", [False, True])
def test_kernels_write_the_arrays_the_state_holds(host, dq):
    fused, mod = host()
    n = 64 * 1000
    seen = []
    q, x = quantize(fused, "nf4", dq, n, queued=seen.append)
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
        memory = q.offset.owner.untyped_storage()  # the memory the offset's owner keeps alive
        assert memory.data_ptr() <= offset_at and offset_at + 4 <= memory.data_ptr() + memory.nbytes()
        regions += [(qabsmax_at, q.qabsmax.numel()), (absmax2_at, 4 * q.absmax2.numel() + 4)]
    regions.sort()
    assert all(a + size <= b for (a, size), (b, _) in zip(regions, regions[1:]))  # nothing overlaps
    assert all(at % 16 == 0 for at, _ in regions)


@pytest.mark.parametrize("dq", [False, True])
def test_a_flag_set_by_a_kernel_refuses_the_state(host, dq):
    fused, mod = host(bad=True)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(fused, "nf4", dq)


@pytest.mark.parametrize(("quant_type", "kernel"), [("nf4", "quant_lut_f2_s0_next"), ("fp4", "quant_lut_f2_s0")])
def test_codebooks_in_value_order_launch_the_next_kernel(host, quant_type, kernel):
    fused, mod = host()
    quantize(fused, quant_type, False)
    assert mod.launches[0][0] == kernel
    fused, mod = host(LUT_NEXT=0)
    quantize(fused, quant_type, False)
    assert mod.launches[0][0] == "quant_lut_f2_s0"


@pytest.mark.parametrize("own", [0, 1])
@pytest.mark.parametrize("least", [1, 1000, 1001])
def test_absmax_summed_by_their_own_kernel_from_a_size_on(host, least, own):
    """SUMS_PASS_MIN: from that many blocks on, quant_lut without sums, then absmax_sums over the absmax it
    wrote into the workspace's sums; below it quant_lut sums. Then the second level, which (DQ2_OFFSET 1)
    computes the offset from those sums itself, launched after the kernel that summed (programmatic
    serialization, `launch_after`), or (0) reads the offset the summing kernel's last CTA wrote."""
    fused, mod = host(SUMS_PASS_MIN=least, DQ2_OFFSET=own)
    q, _ = quantize(fused, "nf4", True, n=64 * 1000)
    names = [name for name, _ in mod.launches]
    ws = cuda_memory.Workspace._local.cache[0]
    counter, _ = cuda_memory.Flag._local.flag.end(0, None)
    first, second = mod.launches[0][1], mod.launches[-1][1]
    offset = 0 if own else ws.offset  # the summing kernel's last CTA writes no offset where the second level does
    assert second[10] == q.offset.ptr  # the offset is kept with the state
    assert second[13] == (ws.sums if own else 0) and (second[7] == ws.offset or own)
    if least > 1000:  # below the size: the sums inside quant_lut, which counts its CTAs for its end signal
        assert names == [f"quant_lut_f2_s{2 if own else 1}_next", "quant_dq256"]  # or for its last CTA's offset
        assert first[9:13] == (ws.sums, counter if own else ws.done, offset, 1000)
        assert mod.after == ([1] if own else [])
        return
    assert names == ["quant_lut_f2_s0_next", "absmax_sums", "quant_dq256"]
    sums = mod.launches[1][1]
    assert first[9:13] == (0, counter, 0, 0)  # no sums inside quant_lut
    assert sums == (first[7], 1000, ws.sums, ws.done, offset)  # the absmax quant_lut wrote, all of them
    assert second[0] == first[7]
    assert mod.after == ([1, 2] if own else [1])


def test_double_quantization_of_any_block_size_sums_in_one_pass(host):
    """The general path (block 128 here): the general quantize kernel, then absmax_sums over every absmax it
    wrote (the exact sums and, by its last CTA, the offset, into the workspace), then the second level from
    that offset, writing the state's qabsmax and absmax2 and keeping the offset after them."""
    fused, mod = host()
    q, x = quantize(fused, "nf4", True, n=128 * 500, blocksize=128)
    names = [name for name, _ in mod.launches]
    assert names == ["quant_f2_p1_s16", "absmax_sums", "quant_dq256"]
    (_, first), (_, sums), (_, second) = mod.launches
    ws = cuda_memory.Workspace._local.cache[0]
    assert int(first[0]) == x.data_ptr() and int(first[8]) == q.packed.data_ptr()
    absmax_at = int(first[9])
    assert sums == (absmax_at, 500, ws.sums, ws.done, ws.offset)
    assert second[0] == absmax_at and second[7] == ws.offset
    assert second[8:11] == (q.qabsmax.data_ptr(), q.absmax2.data_ptr(), q.offset.ptr)


@pytest.mark.parametrize(
    ("dq", "knobs"),
    [(False, {}), (True, {}), (True, {"SUMS_PASS_MIN": 1}), (True, {"DQ2_OFFSET": 0}), (True, {"DQ2_WAIT": 1})],
)
def test_the_call_waits_for_the_end_signal_of_its_first_level(host, dq, knobs):
    """The first level's kernel (quant_lut), after which the non-finite flag is final, gets the thread's
    counter and fin (signal_end); no other kernel does: a double-quantized call returns while its second
    level runs, after it in stream order. Where quant_lut counts its CTAs for its last CTA's offset
    (DQ2_OFFSET 0), or the call waits for its second level too (DQ2_WAIT 1), the second level signals.
    Inside a batch no kernel signals (it waits once)."""
    fused, mod = host(**knobs)
    SYNCS.clear()
    quantize(fused, "nf4", dq)
    flag = cuda_memory.Flag._local.flag
    counter, fin = flag.end(0, None)
    index = len(mod.launches) - 1 if knobs.get("DQ2_OFFSET") == 0 or knobs.get("DQ2_WAIT") else 0
    values = mod.launches[index][1]
    got = values[11:13] if index else (values[10], values[13])  # DqArgs' count, fin; LutArgs' done, fin
    assert got == (counter, fin)
    assert all(fin not in v for i, (_, v) in enumerate(mod.launches) if i != index)
    assert not SYNCS  # the signal was seen: no driver wait
    mod.launches.clear()
    with fused.batch(7):
        quantize(fused, "nf4", dq)
    assert all(fin not in values for _, values in mod.launches)


def test_a_call_on_another_stream_waits_for_the_last_second_level(host):
    """A double-quantized call returns before its second level ends, which reads the workspace's scratch and
    clears its sums: the next call on the same stream comes after it in stream order, one on another stream
    waits for the device first; the state's offset records its stream (read from another, the device)."""
    fused, mod = host()
    SYNCS.clear()
    q, _ = quantize(fused, "nf4", True)
    assert q.offset.stream == Stream.ptr
    quantize(fused, "nf4", True)
    assert not SYNCS
    n = 64 * 1000
    fused.quantize(torch.zeros(n, dtype=torch.bfloat16), n, "bfloat16", 64, "nf4", True, OtherStream())
    assert SYNCS == ["device"]


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
    quantize(fused, quant_type, False, n=64 * 1000)
    assert mod.launches[0][0] == kernel
