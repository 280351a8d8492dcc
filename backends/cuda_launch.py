"""The host side of the hot kernels' calls: their by-value parameter structs, launch plans made once per
shape (function, grid, shared memory, everything but the addresses), and the launchers of the blockwise
quantize and dequantize (any block size, tail and alignment) that the fused 4-bit calls (fused4bit.py) and
the backends use. The kernels are compiled and launched by backends/cuda_kernels.py's Module."""

from __future__ import annotations

import struct
from contextlib import nullcontext

import numpy as np

from .cuda_kernels import FORMATS, Module, module
from .cuda_memory import N_BINS, DeviceScalar, ptr

# By-value parameter structs of the hot kernels (layouts of LutArgs, DqArgs, DequantArgs in kernels/*.cu,
# natural alignment, pads explicit): one parameter instead of 8-13, each of which costs CuPy's launcher
# about a microsecond.
LUT_ARGS = struct.Struct("<QqQiiI4xQQQQQQqQ")
DQ_ARGS = struct.Struct("<QqQiiiiQQQQQQQ")
FUSED_ARGS = struct.Struct(LUT_ARGS.format + "QiiiiQQQQ")
DEQUANT_ARGS = struct.Struct("<Qqi4xQQQQQf4xQi4xQQ")
SUMS_ARGS = struct.Struct("<QqQQQ")


NONFINITE = "x contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)"
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


class LutPlan:
    """quant_lut over `nfull` full blocks of 64 values of `fmt` with a codebook's bucket table (entries,
    bits), without the exact absmax sums (sums 0), with them and the offset (1) or with the sums alone (2,
    for quant_dq256 to compute the offset): everything but the addresses (Module.plan)."""

    def __init__(self, mod: Module, fmt: str, nfull: int, entries_at: int, bits: int, sums: int, nxt: bool = False):
        k, warps = 1 << bits, mod.knobs["WARPS_PER_CTA"]
        wide = nxt and 0 < mod.knobs["QUANT_WIDE_MIN"] <= nfull  # fewer registers, more CTAs an SM
        name = f"quant_lut_f{FORMATS[fmt]}_s{int(sums)}{'_next' if nxt else ''}{'_wide' if wide else ''}"
        self.mod, self.fn, self.block = mod, mod(name).ptr, 32 * warps
        self.shared = 8 * k + (8 * N_BINS if sums else 0)
        self.grid = min(mod.resident(name, self.block, self.shared), -(-nfull // (8 * warps)))
        self.head = (nfull, entries_at, k, 23 - bits, k - 1)
        self.kernel = f"f{FORMATS[fmt]}{'_next' if nxt else ''}"  # format and lookup, as FusedPlan names them

    def launch(
        self,
        x: int,
        out: int,
        absmax: int,
        bad: int,
        sums: int = 0,
        done: int = 0,
        offset: int = 0,
        n_absmax: int = 0,
        fin: int = 0,
        stream: int | None = None,
    ):
        """codes at out, absmax at absmax; with sums: the workspace's sums and counter, and (sums 1) the offset
        of the n_absmax absmax (this kernel's and any written before it) at offset. Without the offset (sums 0
        or 2), fin (not 0): the grid signals its end there, counting its CTAs at `done` (Flag.end)."""
        self.mod.launch(
            self.fn,
            self.grid,
            self.block,
            LUT_ARGS,
            (x, *self.head, out, absmax, bad, sums, done, offset, n_absmax, fin),
            self.shared,
            stream,
        )

    def prepare(self, out: int, absmax: int, bad: int, tail: tuple, ready=None):
        """A launch into codes at out and absmax at absmax but for the input's address (Prepared.launch);
        tail: `launch`'s last five values (sums, done, offset, n_absmax, fin). `ready`, a Prepared of this
        plan whose launch has returned, is packed again instead of making one."""
        values = (0, *self.head, out, absmax, bad, *tail)
        return self.mod.prepare(self.fn, self.grid, self.block, LUT_ARGS, values, self.shared, ready, moving=(6, 7))


class Dq2Plan:
    """quant_dq256, the second level of double quantization, over n float32 absmax with a log-scale bucket
    table (entries, size, shift, low, high) of the dynamic map: everything but the addresses."""

    def __init__(self, mod: Module, n: int, entries_at: int, size: int, shift: int, low: int, high: int):
        self.mod, self.fn = mod, mod("quant_dq256").ptr
        self.shared = 8 * size if mod.knobs["DQ2_SHARED"] else 0
        self.grid = -(-n // (8 * 256 * mod.knobs["DQ2_BLOCKS"]))  # DQ2_BLOCKS blocks of 256 per warp
        if self.shared:
            self.grid = min(self.grid, mod.resident("quant_dq256", 256, self.shared))
        self.head = (n, entries_at, size, shift, low, high)

    def launch(
        self,
        x: int,
        offset: int,
        out: int,
        absmax: int,
        offset_copy: int = 0,
        end: tuple = (0, 0),
        stream: int | None = None,
        sums: int = 0,
    ):
        """codes at out, absmax at absmax of the values at x minus the device scalar at offset (kept at
        offset_copy if not 0), or, where sums (an address) is given, minus the offset the kernel computes
        from the exact sums there (a workspace's: it leaves them zero); end: (counter, fin) of the grid's end
        signal (Flag.end), or (0, 0). With sums, on `stream`: launched after the kernel that wrote them
        (Module.launch_after)."""
        values = (x, *self.head, offset, out, absmax, offset_copy, *end, sums)
        launch = self.mod.launch_after if sums else self.mod.launch
        launch(self.fn, self.grid, 256, DQ_ARGS, values, self.shared, stream)

    def prepare(self, x: int, offset: int, out: int, absmax: int, offset_copy: int, end: tuple, sums: int, ready=None):
        """`launch`'s launch packed now (Prepared; x, the first field, is rewritten by Prepared.launch), or
        None where it goes through launch_after (programmatic serialization: the module's `pdl`); `ready`, a
        Prepared of this plan whose launch has returned, is packed again instead of making one."""
        if sums and self.mod.pdl:
            return None
        values = (x, *self.head, offset, out, absmax, offset_copy, *end, sums)
        return self.mod.prepare(self.fn, self.grid, 256, DQ_ARGS, values, self.shared, ready, moving=(8, 9, 10))


class FusedPlan:
    """quant_lut_dq: both levels of a double quantization in one cooperative launch (every CTA resident, a grid
    barrier between the levels): the first level as `first` (a LutPlan with the sums) plans it, codes, absmax
    and sums (the barrier signals its end: the non-finite flag is final), then each CTA's offset from the sums
    and the second level, as quant_dq256's (DQ2_OFFSET); the CTA that ends last clears the sums. A grid of at
    most as many CTAs as fit at once (grid 0: none fit). Everything but the addresses (Module.plan)."""

    def __init__(self, mod: Module, first: LutPlan, *second):
        name = f"quant_lut_dq_{first.kernel}"
        self.mod, self.fn, self.head = mod, mod(name).ptr, first.head
        self.block, self.shared = first.block, first.shared  # the first level's CTAs, their table and bins
        if mod.knobs["FUSED_LUT2"]:  # and the second level's table after them
            self.shared += 8 * second[1]
        blocks = 8 * (self.block // 32)  # blocks of 64 a CTA takes per step (8 a warp), as LutPlan's grid
        self.grid = min(mod.per_sm(name, self.block, self.shared) * mod.sms, -(-first.head[0] // blocks))
        self.second = second  # the log table's (address, size, shift, low, high)

    def values(self, x, out, absmax, bad, sums, end, n_absmax, qabsmax, absmax2, offset_copy, bar) -> tuple:
        """FUSED_ARGS' values: codes at out, the first level's absmax at absmax (n_absmax of them with any
        written before: their sums at `sums`, a workspace's, left zero again), the second level's codes and
        absmax at qabsmax and absmax2, the offset kept at offset_copy; end, (counter, fin) of the first
        level's end signal (Flag.end) or (0, 0); bar, the workspace's grid barrier."""
        first = (x, *self.head, out, absmax, bad, sums, end[0], 0, n_absmax, end[1])
        return (*first, *self.second, qabsmax, absmax2, offset_copy, bar)

    def launch(self, *addresses, stream: int | None = None) -> bool:
        """`values`' launch; False where the driver refuses it (too few resident CTAs: nothing ran)."""
        values = self.values(*addresses)
        return self.mod.launch_cooperative(self.fn, self.grid, self.block, FUSED_ARGS, values, self.shared, stream)

    def prepare(self, *addresses, ready=None):
        """`values`' launch but for the input's address (Prepared, cooperative); `ready`, a Prepared of this plan
        whose launch has returned, is packed again instead of making one."""
        values = self.values(0, *addresses)
        return self.mod.prepare(self.fn, self.grid, self.block, FUSED_ARGS, values, self.shared, ready, True, MOVING)


#: FUSED_ARGS' fields that name the state (Prepared.move): codes, qabsmax, absmax2, offset_copy.
MOVING = (6, 19, 20, 21)


class SumsPlan:
    """absmax_sums over n float32 absmax (16-byte aligned): the exact sums into a workspace and (offset not
    0) the offset from the CTA that finishes last, as quant_lut's sums do; a grid of SUMS_CTAS_PER_SM CTAs
    per multiprocessor at most. With a stream, launched after the kernel that wrote the absmax
    (Module.launch_after)."""

    def __init__(self, mod: Module, n: int):
        self.mod, self.fn, self.n = mod, mod("absmax_sums").ptr, n
        self.grid = max(1, min(mod.knobs["SUMS_CTAS_PER_SM"] * mod.sms, -(-n // (8 * 256))))

    def launch(self, x: int, sums: int, done: int, offset: int, stream: int | None = None):
        values = (x, self.n, sums, done, offset)
        if stream is None:
            self.mod.launch(self.fn, self.grid, 256, SUMS_ARGS, values, 0, stream)
        else:
            self.mod.launch_after(self.fn, self.grid, 256, SUMS_ARGS, values, 0, stream)


class Dequant8Plan:
    """dequant8 over n packed values (n % 8 == 0, block size a power of two >= 8) into out_fmt: its
    function and grid (DQ_GRID)."""

    def __init__(self, mod: Module, out_fmt: str, n: int, blocksize: int):
        name = f"dequant8_f{FORMATS[out_fmt]}"
        self.mod, self.fn = mod, mod(name).ptr
        steps = -(-(n // 8) // (256 * mod.knobs["DQ_WORDS"]))  # CTAs for one step per thread (DQ_GRID 2)
        persistent = {0: lambda: mod.resident(name, 256), 1: lambda: mod.sms * mod.knobs["CTAS_PER_SM"]}
        self.grid = min(steps, persistent[mod.knobs["DQ_GRID"]]()) if mod.knobs["DQ_GRID"] in persistent else steps

    def launch(self, values, stream: int | None = None):
        self.mod.launch(self.fn, self.grid, 256, DEQUANT_ARGS, values, 0, stream)

    def prepare(self, values):
        """The launch with its parameter packed once (a Prepared): `move(out)` sets the output's address,
        `launch(codes, stream)` the codes' (values[0]) and launches."""
        return self.mod.prepare(self.fn, self.grid, 256, DEQUANT_ARGS, values, moving=(OUT_AT,))


def lut_plan(mod: Module, fmt: str, nfull: int, table, sums: int, nxt=None) -> LutPlan:
    """table: (entries, bits) on the device; nxt: the same codebook's NEXT entries (cuda_lut.next_entries)
    or None; used where the knob LUT_NEXT is set."""
    entries, bits = table
    if nxt is not None and mod.knobs["LUT_NEXT"]:
        return mod.plan(LutPlan, fmt, nfull, int(ptr(nxt)), bits, sums, True)
    return mod.plan(LutPlan, fmt, nfull, int(ptr(entries)), bits, sums)


def fused_plan(mod: Module, first: LutPlan, table2) -> FusedPlan | None:
    """first: the first level's plan (lut_plan's, with the sums); table2: the second level's log table (entries,
    size, shift, low, high). None where no CTA of the kernel fits on a multiprocessor or the device has no
    cooperative launch."""
    entries2, *shape = table2
    plan = mod.plan(FusedPlan, first, int(ptr(entries2)), *shape)
    return plan if plan.grid > 0 and mod.cooperative else None


def dq2_plan(mod: Module, n: int, table) -> Dq2Plan:
    entries, *shape = table
    return mod.plan(Dq2Plan, n, int(ptr(entries)), *shape)


def sums_plan(mod: Module, n: int) -> SumsPlan:
    return mod.plan(SumsPlan, n)


def dequant8_plan(mod: Module, out_fmt: str, n: int, blocksize: int) -> Dequant8Plan | None:
    """dequant8's plan for packed codes, None where its conditions (n % 8 == 0, block size a power of two
    >= 8) fail: the general kernel."""
    if n % 8 or blocksize % 8 or blocksize & (blocksize - 1):
        return None
    return mod.plan(Dequant8Plan, out_fmt, n, blocksize)


def quantize(
    x,
    fmt: str,
    n: int,
    blocksize: int,
    mids,
    order,
    pack: bool,
    *,
    empty,
    zero_code: int = 0,
    offset=None,
    table=None,
    ws=None,
    offset_out: int = 0,
    offset_copy: int = 0,
    flag=None,
    absmax=None,
    out=None,
    second=None,
    device: int = 0,
):
    """Codes (uint8, n or ceil(n/2) packed) and absmax (float32, allocated by `empty(size, dtype)` of the
    caller's framework unless given) of the flat values at x (an array or its address), any block size and
    alignment. offset: a DeviceScalar subtracted first. table: (entries, bits), a codebook's
    cuda_lut.BucketTable on the device, for the block-64 kernel, or (entries, size, shift, low, high), a
    LogBucketTable, for the second level of double quantization. ws (a Workspace) with offset_out (an
    address): also the exact mean of the absmax, the double-quantization offset, written there.
    offset_copy: where the second level keeps a copy of its offset (an address, or 0). second: (log table,
    qabsmax, absmax2 array, offset address) for the fused double quantization: one cooperative launch does
    both levels (ws.fused tells whether it ran; if the driver refuses it, the first level runs alone as
    with ws). out: the codes' array. flag: the Flag the kernels set on non-finite input (read by the
    caller)."""
    mod = module(device)
    xp = int(x) if isinstance(x, (int, np.integer)) else int(ptr(x))
    nblocks = -(-n // blocksize)
    out = empty((n + 1) // 2 if pack else n, "uint8") if out is None else out
    absmax = empty(nblocks, "float32") if absmax is None else absmax
    outp, absp = int(ptr(out)), int(ptr(absmax))
    bad = flag.ptr if flag is not None else 0
    if (
        offset is not None
        and fmt == "float32"
        and not pack
        and blocksize == 256
        and xp % 16 == 0
        and isinstance(table, tuple)
        and len(table) == 5
    ):
        dq2_plan(mod, n, table).launch(xp, offset.ptr, outp, absp, offset_copy)
        return out, absmax
    fast = (
        table is not None
        and len(table) == 2
        and pack
        and blocksize == 64
        and offset is None
        and n >= 64
        and xp % 16 == 0
        and nblocks < 2**31
    )
    done = n // 64 if fast else 0  # full blocks by quant_lut, the tail (if any) by the general kernel first
    if done < nblocks:
        start = done * blocksize
        p = 16 if mids.size <= 15 else 256
        warps = mod.knobs["WARPS_PER_CTA"]
        mod(f"quant_f{FORMATS[fmt]}_p{int(pack)}_s{p}")(
            (-(-(nblocks - done) // warps),),
            (32 * warps,),
            (
                np.uint64(xp + start * ITEMSIZE[fmt]),
                np.int64(n - start),
                np.int32(blocksize),
                mids,
                order,
                np.int32(mids.size),
                offset.ptr if offset is not None else 0,
                np.uint8(zero_code),
                np.uint64(outp + (start // 2 if pack else start)),
                np.uint64(absp + 4 * done),
                bad,
            ),
        )
        if offset is not None and offset_copy:
            cp = mod._cp
            cp.cuda.runtime.memcpyAsync(
                int(offset_copy), offset.ptr, 4, cp.cuda.runtime.memcpyDeviceToDevice, cp.cuda.get_current_stream().ptr
            )
        if ws is not None and fast:  # the tail's absmax joins the sums before quant_lut's last CTA reads them
            mod("exponent_sums")(
                (1,), (32,), (np.uint64(absp + 4 * done), np.int64(nblocks - done), np.uint64(ws.sums))
            )
    if fast:
        plan = lut_plan(mod, fmt, done, table, int(ws is not None))
        sums = (ws.sums, ws.done, int(offset_out), nblocks) if ws is not None else ()
        if ws is not None and second is not None and mod.knobs["DQ_FUSED"]:
            table2, qabs, abs2, at = second
            fplan = fused_plan(mod, plan, table2)
            ws.fused = fplan is not None and fplan.launch(
                xp, outp, absp, bad, ws.sums, (0, 0), nblocks, int(ptr(qabs)), int(ptr(abs2)), at, ws.bar
            )  # no end signal: the caller waits on the stream
            if ws.fused:
                return out, absmax
        plan.launch(xp, outp, absp, bad, *sums)
    elif ws is not None:  # the exact sums of the fresh (aligned) absmax and, by its last CTA, the offset
        sums_plan(mod, nblocks).launch(absp, ws.sums, ws.done, int(offset_out))
    return out, absmax


#: Where dequant8's output address sits in dequant_values.
OUT_AT = 11


def dequant_values(cptr: int, n: int, blocksize: int, table, arrays, offset, blocksize2: int, flag_ptr: int) -> list:
    """dequant8's parameters (DEQUANT_ARGS) but for the output's address (OUT_AT, 0 here): the codes'
    address, n, block size, the table, absmax / qabsmax / absmax2 / dynamic map (None: 0), the offset (a
    float, a DeviceScalar read in place, or None for a plain state: 0), the second block size, the flag."""
    scales = [0 if a is None else int(ptr(a)) for a in arrays]
    if isinstance(offset, DeviceScalar):
        value, at = 0.0, offset.ptr
    else:
        value, at = (0.0 if offset is None else float(offset)), 0
    return [cptr, n, blocksize, int(ptr(table)), *scales, value, at, blocksize2, 0, flag_ptr]


def dequantize(
    codes,
    n: int,
    blocksize: int,
    table,
    out_fmt: str,
    pack: bool,
    *,
    empty,
    flag,
    absmax=None,
    qabsmax=None,
    absmax2=None,
    dyn=None,
    offset=0.0,
    blocksize2: int = 256,
    device: int = 0,
    plan: Dequant8Plan | None = None,
    stream=None,
):
    """float values (`empty` of the caller's framework; bfloat16 and float16 as uint16 bits) of n codes,
    plain or double-quantized absmax (offset a float or a DeviceScalar); flag set where an absmax is not
    finite (read by the caller). plan: dequant8's for these packed codes (else looked up), used when the
    codes are 4-byte aligned; stream: a CuPy stream (None: the current one)."""
    mod = module(device)
    out = empty(n, "float32" if out_fmt == "float32" else "uint16")
    cptr = int(ptr(codes))
    values = dequant_values(cptr, n, blocksize, table, (absmax, qabsmax, absmax2, dyn), offset, blocksize2, flag.ptr)
    scales, (value, at) = values[4:8], values[8:10]
    if plan is None and pack:
        plan = dequant8_plan(mod, out_fmt, n, blocksize)
    if plan is not None and pack and cptr % 4 == 0:
        values[OUT_AT] = int(ptr(out))
        plan.launch(tuple(values), None if stream is None else stream.ptr)
        return out
    threads = (n + 1) // 2 if pack else n
    with stream if stream is not None else nullcontext():
        mod(f"dequant_f{FORMATS[out_fmt]}_p{int(pack)}")(
            (-(-threads // 256),),
            (256,),
            (
                np.uint64(cptr),
                np.int64(n),
                np.int32(blocksize),
                table,
                *(np.uint64(a) for a in scales),
                np.float32(value),
                np.uint64(at),
                np.int32(blocksize2),
                ptr(out),
                flag.ptr,
            ),
        )
    return out


NONFINITE_SCALE = "absmax (after double dequantization) is not finite: it overflows float32 (docs/double-quant.md)"
