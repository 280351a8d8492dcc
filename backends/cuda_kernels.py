"""Launchers of qref's CUDA kernels (backends/kernels/*.cu, compiled by NVRTC through CuPy), shared by the
CuPy backend and the PyTorch backend on CUDA. The kernels state their decision points; each is the
reference's (qref/blockwise.py, qref/double_quant.py, qref/groupwise.py).

Compiled with --fmad=false (no multiply-add contracted into an FMA: the reference rounds each product)
and --ftz=false (subnormals kept). Formats: 0 float32, 1 float16, 2 bfloat16 (as its uint16 bits).
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from contextlib import contextmanager, nullcontext
from functools import cache
from importlib import resources

import numpy as np

from . import kernel_cache
from .cuda_memory import N_BINS, DeviceScalar, Flag, Workspace, ptr  # noqa: F401 (used by the backends)

FORMATS = {"float32": 0, "float16": 1, "bfloat16": 2}
#: Launch shapes and compile-time switches; asv_bench/tune_kernels.py compares others side by side
#: (Module(device, **knobs)); the environment (QREF_<NAME>) overrides a default for a whole process.
KNOBS = {
    "WARPS_PER_CTA": 8,  # warps per CTA of every blockwise kernel
    "CTAS_PER_SM": 8,  # persistent grids: 8 = as many CTAs as fit at once (occupancy), 16 = twice that, ...
    "QUANT_ITER": 2,  # groups of 8 blocks loaded together in quant_lut
    "QUANT_LDCS": 0,  # 1: quant_lut reads its input with streaming (evict-first) loads
    "QUANT_MIN_CTAS": 1,  # __launch_bounds__ minimum resident CTAs per SM of quant_lut (caps its registers)
    "DQ_WORDS": 4,  # packed 32-bit words per thread and step in dequant8
    "DQ_STREAM": 0,  # streaming (evict-first) loads and stores in dequant8
    "LUT_NEXT": 1,  # 1: quant_lut's NEXT lookup (code = lo + (s > midpoint)) for codebooks whose codes are in
    # value order (cuda_lut.next_entries); 0: the general select for every codebook
    "LUT_DIAG": 0,  # 1: quant_lut without its table lookup (wrong codes: diagnostics only)
    "SUMS_DIAG": 0,  # 1: no per-block sums, 2: no end-of-CTA flush and offset (wrong offsets: diagnostics only)
    "DQ_FUSED": 0,  # 1: double quantization in one cooperative launch (grid barrier) instead of two kernels
    "DQ_GRID": 2,  # dequant8's grid: 1 = CTAS_PER_SM x SMs CTAs (persistent), 0 = the occupancy calculator's,
    # 2 = one step per thread, every word covered (not persistent)
    "DQ2_SHARED": 0,  # quant_dq256: 0 = its table read through the read-only cache, one warp per block;
    # 1 = copied to shared memory by every CTA of a persistent grid
    "DQ2_BLOCKS": 1,  # quant_dq256: blocks of 256 a warp loads before it quantizes them
}
KNOBS.update({k: int(os.environ[f"QREF_{k}"]) for k in KNOBS if f"QREF_{k}" in os.environ})
SOURCES = ("common.cuh", "quant.cu", "dequant.cu", "misc.cu")
OPTIONS = ("--std=c++14", "--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")


def _wrappers() -> str:
    out = []
    for fmt in range(3):
        for pack in (False, True):
            for p in (16, 256):
                out.append(
                    f'extern "C" __global__ void quant_f{fmt}_p{int(pack)}_s{p}(const void* x, long long n, int B, '
                    f"const float* mids, const unsigned char* order, int nm, const float* offset_p, "
                    f"unsigned char zero_code, unsigned char* out, float* absmax, int* bad) {{ quant_blocks<{fmt}, "
                    f"{str(pack).lower()}, {p}>(x, n, B, mids, order, nm, offset_p, zero_code, out, absmax, bad); }}"
                )
            out.append(
                f'extern "C" __global__ void dequant_f{fmt}_p{int(pack)}(const unsigned char* codes, long long n, '
                f"int B, const float* table, const float* absmax, const unsigned char* qabsmax, const float* absmax2, "
                f"const float* dyn, float offset, const float* offset_p, int B2, void* out, int* bad) {{ "
                f"dequant_blocks<{fmt}, {str(pack).lower()}>(codes, n, B, table, absmax, qabsmax, absmax2, dyn, "
                f"offset, offset_p, B2, out, bad); }}"
            )
        for sums in (0, 1):
            for nxt, suffix in ((False, ""), (True, "_next")):
                out.append(
                    f'extern "C" __global__ void __launch_bounds__(32 * WARPS_PER_CTA, QUANT_MIN_CTAS) '
                    f"quant_lut_f{fmt}_s{sums}{suffix}(const LutArgs a) "
                    f"{{ quant_lut<{fmt}, {sums}, {str(nxt).lower()}>(a); }}"
                )
        out.append(
            f'extern "C" __global__ void __launch_bounds__(32 * WARPS_PER_CTA, QUANT_MIN_CTAS) '
            f"quant_lut_dq_f{fmt}(const FusedArgs f) {{ quant_lut_dq<{fmt}>(f); }}"
        )
        out.append(
            f'extern "C" __global__ void dequant8_f{fmt}(const DequantArgs a) {{ dequant8<{fmt}>((const unsigned int*)'
            f"a.packed, a.n, a.B, a.table, a.absmax, a.qabsmax, a.absmax2, a.dyn, a.offset, a.offset_p, a.B2, "
            f"a.out, a.bad); }}"
        )
    return "\n".join(out)


def source(knobs: dict) -> str:
    head = "".join(f"#define {k} {v}\n" for k, v in knobs.items())
    files = resources.files(__package__) / "kernels"
    return head + "\n".join((files / name).read_text() for name in SOURCES) + "\n" + _wrappers()


class Module:
    """The compiled kernels of one device, functions looked up once."""

    def __init__(self, device_id: int, **knobs):
        self.knobs = {**KNOBS, **knobs}
        import cupy as cp
        from cupy.cuda import function
        from cupy_backends.cuda.libs import nvrtc

        with cp.cuda.Device(device_id) as dev:
            options = (*OPTIONS, f"--gpu-architecture=compute_{dev.compute_capability}")
            src, version = source(self.knobs), ".".join(map(str, nvrtc.getVersion()))

            def compile() -> bytes:
                prog = nvrtc.createProgram(src, "qref_kernels.cu", [], [])
                try:
                    nvrtc.compileProgram(prog, list(options))
                except Exception as e:
                    raise RuntimeError(f"NVRTC failed: {e}\n{nvrtc.getProgramLog(prog)}") from e
                ptx = nvrtc.getPTX(prog)
                nvrtc.destroyProgram(prog)
                return ptx if isinstance(ptx, bytes) else ptx.encode()

            self.mod = function.Module()
            try:
                self.mod.load(kernel_cache.ptx(src, options, version, compile))
            except cp.cuda.driver.CUDADriverError:  # a kept file the driver refuses: compile afresh
                kernel_cache.forget(src, options, version)
                self.mod = function.Module()
                self.mod.load(kernel_cache.ptx(src, options, version, compile))
            self.sms = dev.attributes["MultiProcessorCount"]
        self._functions = {}
        self._local = threading.local()
        self._per_sm = {}
        self._plans = {}
        self._cp, self._driver = cp, cp.cuda.driver

    def __call__(self, name):
        if name not in self._functions:
            self._functions[name] = self.mod.get_function(name)
        return self._functions[name]

    def per_sm(self, name: str, block: int, shared: int = 0) -> int:
        """CTAs of `name` one multiprocessor holds at once (the occupancy calculator, asked once)."""
        key = (name, block, shared)
        if key not in self._per_sm:
            self._per_sm[key] = self._driver.occupancyMaxActiveBlocksPerMultiprocessor(self(name).ptr, block, shared)
        return self._per_sm[key]

    def resident(self, name: str, block: int, shared: int = 0) -> int:
        """CTAs of `name` the device holds at once, times CTAS_PER_SM / 8 when that knob is set to other than
        8: the size of a persistent grid."""
        return max(1, self.per_sm(name, block, shared) * self.sms * self.knobs["CTAS_PER_SM"] // 8)

    def plan(self, kind, *key):
        """kind(self, *key), made once per key: a launch fixed but for its addresses."""
        plan = self._plans.get((kind, key))
        if plan is None:
            if len(self._plans) > 4096:  # a caller of many shapes keeps bounded memory
                self._plans.clear()
            plan = self._plans[kind, key] = kind(self, *key)
        return plan

    def _params(self, layout: struct.Struct, values) -> int:
        local = self._local
        if not hasattr(local, "buf"):
            local.buf = ctypes.create_string_buffer(256)
            local.params = (ctypes.c_void_p * 1)(ctypes.addressof(local.buf))
            local.params_at = ctypes.addressof(local.params)
        layout.pack_into(local.buf, 0, *values)
        return local.params_at

    def launch(
        self, fn: int, grid: int, block: int, layout: struct.Struct, values, shared: int = 0, stream: int | None = None
    ):
        """Launch function handle `fn` with one by-value struct parameter packed from `values` (integers,
        floats) through the driver (no per-parameter conversion), on `stream` (a handle; None: CuPy's current
        stream). The driver copies the parameter at launch, so one buffer per thread serves every launch."""
        if stream is None:
            stream = self._cp.cuda.get_current_stream().ptr
        self._driver.launchKernel(fn, grid, 1, 1, block, 1, 1, shared, stream, self._params(layout, values), 0)

    def launch_cooperative(self, name: str, block: int, layout: struct.Struct, values, shared: int = 0) -> bool:
        """A cooperative launch (cuLaunchCooperativeKernel: the driver refuses it unless every CTA can be
        resident at once, which the grid barrier needs) of as many CTAs as fit; False if refused."""
        per_sm = self.per_sm(name, block, shared)
        if per_sm < 1 or _libcuda() is None:
            return False
        params = self._params(layout, values)
        res = _libcuda().cuLaunchCooperativeKernel(
            ctypes.c_void_p(self(name).ptr),
            per_sm * self.sms,
            1,
            1,
            block,
            1,
            1,
            shared,
            ctypes.c_void_p(self._cp.cuda.get_current_stream().ptr),
            ctypes.c_void_p(params),
        )
        return res == 0


@cache
def _libcuda():
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    lib.cuLaunchCooperativeKernel.argtypes = [ctypes.c_void_p, *[ctypes.c_uint] * 7, ctypes.c_void_p, ctypes.c_void_p]
    lib.cuLaunchCooperativeKernel.restype = ctypes.c_int
    return lib


@cache
def _default_module(device_id: int) -> Module:
    return Module(device_id)


_override: list[Module] = []


def module(device_id: int) -> Module:
    """The kernels compiled by NVRTC directly: CuPy's RawModule appends -ftz=true to every compile
    (cupy/cuda/compiler.py), which would flush subnormals and break the reference's semantics."""
    return _override[-1] if _override else _default_module(device_id)


@contextmanager
def using(mod: Module):
    """Launch from `mod` (other knobs) inside the block: for side-by-side tuning in one process."""
    _override.append(mod)
    try:
        yield mod
    finally:
        _override.pop()


# By-value parameter structs of the hot kernels (layouts of LutArgs, DqArgs, DequantArgs in kernels/*.cu,
# natural alignment, pads explicit): one parameter instead of 8-13, each of which costs CuPy's launcher
# about a microsecond.
LUT_ARGS = struct.Struct("<QqQiiI4xQQQQQQq")
DQ_ARGS = struct.Struct("<QqQiiiiQQQQ")
FUSED_ARGS = struct.Struct(LUT_ARGS.format + "QiiiiQQQQQ")
DEQUANT_ARGS = struct.Struct("<Qqi4xQQQQQf4xQi4xQQ")


NONFINITE = "x contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)"
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


class LutPlan:
    """quant_lut over `nfull` full blocks of 64 values of `fmt` with a codebook's bucket table (entries,
    bits), with (sums) or without the exact absmax sums: everything but the addresses (Module.plan)."""

    def __init__(self, mod: Module, fmt: str, nfull: int, entries_at: int, bits: int, sums: bool, nxt: bool = False):
        k, warps = 1 << bits, mod.knobs["WARPS_PER_CTA"]
        name = f"quant_lut_f{FORMATS[fmt]}_s{int(sums)}{'_next' if nxt else ''}"
        self.mod, self.fn, self.block = mod, mod(name).ptr, 32 * warps
        self.shared = 8 * k + (8 * N_BINS if sums else 0)
        self.grid = min(mod.resident(name, self.block, self.shared), -(-nfull // (8 * warps)))
        self.head = (nfull, entries_at, k, 23 - bits, k - 1)

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
        stream: int | None = None,
    ):
        """codes at out, absmax at absmax; with sums: the workspace's sums and counter, and the offset of the
        n_absmax absmax (this kernel's and any written before it) at offset."""
        self.mod.launch(
            self.fn,
            self.grid,
            self.block,
            LUT_ARGS,
            (x, *self.head, out, absmax, bad, sums, done, offset, n_absmax),
            self.shared,
            stream,
        )


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

    def launch(self, x: int, offset: int, out: int, absmax: int, offset_copy: int = 0, stream: int | None = None):
        """codes at out, absmax at absmax of the values at x minus the device scalar at offset (kept at
        offset_copy if not 0)."""
        self.mod.launch(
            self.fn, self.grid, 256, DQ_ARGS, (x, *self.head, offset, out, absmax, offset_copy), self.shared, stream
        )


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


def lut_plan(mod: Module, fmt: str, nfull: int, table, sums: bool, nxt=None) -> LutPlan:
    """table: (entries, bits) on the device; nxt: the same codebook's NEXT entries (cuda_lut.next_entries)
    or None; used where the knob LUT_NEXT is set."""
    entries, bits = table
    if nxt is not None and mod.knobs["LUT_NEXT"]:
        return mod.plan(LutPlan, fmt, nfull, int(ptr(nxt)), bits, sums, True)
    return mod.plan(LutPlan, fmt, nfull, int(ptr(entries)), bits, sums)


def dq2_plan(mod: Module, n: int, table) -> Dq2Plan:
    entries, *shape = table
    return mod.plan(Dq2Plan, n, int(ptr(entries)), *shape)


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
        plan = lut_plan(mod, fmt, done, table, ws is not None)
        sums = (ws.sums, ws.done, int(offset_out), nblocks) if ws is not None else ()
        if ws is not None and second is not None and mod.knobs["DQ_FUSED"]:
            (lut2, size2, shift2, low2, high2), qabs, abs2, at = second
            ws.fused = mod.launch_cooperative(
                f"quant_lut_dq_f{FORMATS[fmt]}",
                plan.block,
                FUSED_ARGS,
                (
                    xp,
                    *plan.head,
                    outp,
                    absp,
                    bad,
                    *sums,
                    ptr(lut2),
                    size2,
                    shift2,
                    low2,
                    high2,
                    ptr(qabs),
                    ptr(abs2),
                    at,
                    ws.bar,
                    ws.other,
                ),
                shared=plan.shared,
            )
            if ws.fused:
                return out, absmax
        plan.launch(xp, outp, absp, bad, *sums)
    elif ws is not None:
        mod("exponent_sums")(
            (min(-(-nblocks // 256), 1024),), (256,), (np.uint64(absp), np.int64(nblocks), np.uint64(ws.sums))
        )
        mod("dq_offset")((1,), (32,), (np.uint64(ws.sums), np.int64(nblocks), np.uint64(offset_out)))
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


def groupwise(W32, bits: int, group_size: int, profile: str):
    """(codes, scales, zeros) of a C-contiguous float32 cupy weight (D_out, D_in)."""
    import cupy as cp

    d_out, d_in = W32.shape
    total = d_out * (d_in // group_size)
    codes = cp.empty((d_out, d_in), dtype=cp.uint8)
    scales = cp.empty((d_out, d_in // group_size), dtype=cp.float32)
    zeros = cp.empty_like(scales)
    prof = {"gptq-asym": 0, "gptq-sym": 1, "minmax": 2}[profile]
    module(W32.device.id)("groupwise")(
        (-(-total // 128),),
        (128,),
        (W32, np.int64(total), np.int32(group_size), np.int32(bits), np.int32(prof), codes, scales, zeros),
    )
    return codes, scales, zeros


def convert(a, dtype: str):
    """float32 <-> float64 with IEEE semantics (subnormals kept)."""
    import cupy as cp

    a = cp.ascontiguousarray(a)
    out = cp.empty(a.shape, dtype=dtype)
    name = "f32_to_f64" if dtype == "float64" else "f64_to_f32"
    if a.size:
        module(a.device.id)(name)((-(-a.size // 256),), (256,), (a, out, np.int64(a.size)))
    return out


def exponent_sums(values) -> np.ndarray:
    import cupy as cp

    sums = cp.zeros(N_BINS, dtype=cp.uint64)
    n = values.size
    if n:
        module(values.device.id)("exponent_sums")((min(-(-n // 256), 1024),), (256,), (values, np.int64(n), sums))
    return cp.asnumpy(sums).view(np.int64)


def device_offset(sums, n: int):
    """The double-quantization offset computed on the device from 277 uint64 sums (tests)."""
    import cupy as cp

    work = cp.zeros(N_BINS + 1, dtype=cp.uint64)  # the kernel clears the sums and the counter word after them
    work[:N_BINS] = sums
    out = cp.zeros(1, dtype=cp.float32)
    module(work.device.id)("dq_offset")((1,), (32,), (work, np.int64(n), out))
    assert not work.any(), "dq_offset leaves its workspace zero"
    return np.float32(out.get()[0])
