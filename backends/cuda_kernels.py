"""qref's CUDA kernels (backends/kernels/*.cu) compiled by NVRTC through CuPy, their knobs and launches by
the driver, shared by the CuPy backend and the PyTorch backend on CUDA (launch plans and the blockwise
launchers: backends/cuda_launch.py). The kernels state their decision points; each is the
reference's (qref/blockwise.py, qref/double_quant.py, qref/groupwise.py).

Compiled with --fmad=false (no multiply-add contracted into an FMA: the reference rounds each product)
and --ftz=false (subnormals kept). Formats: 0 float32, 1 float16, 2 bfloat16 (as its uint16 bits).
"""

from __future__ import annotations

import os
import re
import struct
import threading
from contextlib import contextmanager
from functools import cache
from importlib import resources

import numpy as np

from . import cuda_lut, kernel_cache
from .cuda_driver import (  # noqa: F401 (Prepared, field_offsets: used by the tests)
    COOPERATIVE_LAUNCH_TOO_LARGE,
    DEV_ATTR_COOPERATIVE_LAUNCH,
    LaunchConfig,
    ParamMemory,
    Prepared,
    field_offsets,
    launch_cooperative,
    libcuda,
)
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
    "QUANT_MIN_CTAS_WIDE": 4,  # the same for quant_lut's NEXT lookup from QUANT_WIDE_MIN blocks on
    "QUANT_WIDE_MIN": 2**21,  # blocks of 64 from which quant_lut's NEXT lookup uses QUANT_MIN_CTAS_WIDE (0: never)
    "DQ_WORDS": 4,  # packed 32-bit words per thread and step in dequant8
    "DQ_STREAM": 0,  # streaming (evict-first) loads and stores in dequant8
    "LUT_NEXT": 1,  # 1: quant_lut's NEXT lookup (code = lo + (s > midpoint)) for codebooks whose codes are in
    # value order (cuda_lut.next_entries); 0: the general select for every codebook
    "LUT_DIAG": 0,  # 1: quant_lut without its table lookup (wrong codes: diagnostics only)
    "SUMS_PASS_MIN": 2**21,  # block-64 double quantization of at least this many blocks (0: none) sums the absmax
    # in their own kernel (absmax_sums) after a quant_lut without sums, instead of inside quant_lut
    "SUMS_CTAS_PER_SM": 4,  # absmax_sums' grid: at most this many CTAs of 256 threads per multiprocessor
    "SUMS_DIAG": 0,  # 1: no per-block sums, 2: no end-of-CTA flush and offset, 3: no global adds of the CTA's bins
    # (wrong offsets: diagnostics only)
    "DQ_FUSED": 1,  # 1: double quantization in one cooperative launch (a grid barrier between the levels) where
    # the driver takes it; block 64: below SUMS_PASS_MIN blocks, with DQ2_OFFSET 1 and DQ2_WAIT 0. 0: two kernels
    "DQ_GRID": 2,  # dequant8's grid: 1 = CTAS_PER_SM x SMs CTAs (persistent), 0 = the occupancy calculator's,
    # 2 = one step per thread, every word covered (not persistent)
    "DQ2_SHARED": 1,  # quant_dq256: 0 = its table read through the read-only cache, one warp per block;
    # 1 = copied to shared memory by every CTA of a persistent grid
    "DQ2_NEXT": 1,  # 1: the second level's log table in its compact form (cuda_lut.compact_log: a code byte per
    # bucket, code = lo + (s > midpoint above lo)) where the codebook allows it; 0: 8-byte entries
    "DQ2_BLOCKS": 1,  # quant_dq256: blocks of 256 a warp loads before it quantizes them
    "SPARE_MAX": 2**27,  # a block-64 quantize's state of at most this many bytes is made while the previous
    # call of its shape waits for its kernels (the spare: one a thread; 0: none)
    "DQ2_OFFSET": 1,  # 1: a block-64 double quantization's quant_dq256 computes the offset from the sums
    # (quant_lut or absmax_sums leave the sums alone); 0: the last CTA of the kernel that sums computes it
    "PDL": 0,  # 1: quant_dq256 and absmax_sums are launched with programmatic serialization (sm_90 on): they
    # start before the kernel ahead of them ends and wait for it in the kernel (grid_wait); 0: no gain measured
    "DQ2_WAIT": 0,  # 1: a block-64 double-quantized call waits for its second level too (its last kernel signals);
    # 0: it returns once the first level's kernel has ended (the non-finite flag is final), the rest queued
    "FUSED_EXIT": 1,  # 1: in the one cooperative launch, CTAs without a block of the second level leave at the
    # barrier; 0: every CTA waits there
    "BAR_RELEASE": 1,  # 1: the one launch's barrier adds with acquire-release semantics and polls with acquire
    # loads; 0: a full fence before the add and after the wait
    "FUSED_DIAG": 0,  # the one launch, diagnostics only (wrong results): 1 stops after its barrier, 2 after each
    # CTA's offset, 3 takes an absmax for the offset, 4 does not wait at the barrier
    "FUSED_SLOT_MAJOR": 1,  # 1: the one launch's first level numbers its warps slot by slot across the CTAs (the
    # last, partial sweep of groups spread over every CTA); 0: CTA by CTA, as quant_lut
    "FUSED_LUT2": 1,  # 1: the one launch's second level reads its table from shared memory, copied as the kernel
    # starts; 0: in place through L1
    "FUSED_EARLY": 1,  # 1: a CTA of the one launch's second level counts itself for the sums' release as its offset
    # is known, the last to count clearing them after its blocks; 0: it counts after its blocks
    "FUSED_TIMES": 0,  # 1: the one launch's CTAs write global-timer stamps of its stages over the first codes
    # (wrong codes: diagnostics only, asv_bench/fused_times.py)
    "END_SIGNAL": 1,  # 1: the kernel a block-64 quantize waits for (its last; DQ2_WAIT) signals its grid's end,
    # which the call polls (Flag.wait_end); 0: the call polls an event recorded behind its kernels (Flag.wait)
}
KNOBS.update({k: int(os.environ[f"QREF_{k}"]) for k in KNOBS if f"QREF_{k}" in os.environ})
SOURCES = ("common.cuh", "double_quant.cu", "quant.cu", "dequant.cu", "misc.cu")
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
        for sums in (0, 1, 2):  # quant_lut's MODE
            for nxt, suffix, least in (
                (False, "", "QUANT_MIN_CTAS"),
                (True, "_next", "QUANT_MIN_CTAS"),
                (True, "_next_wide", "QUANT_MIN_CTAS_WIDE"),
            ):
                out.append(
                    f'extern "C" __global__ void __launch_bounds__(32 * WARPS_PER_CTA, {least}) '
                    f"quant_lut_f{fmt}_s{sums}{suffix}(const LutArgs a) "
                    f"{{ quant_lut<{fmt}, {sums}, {str(nxt).lower()}>(a); }}"
                )
        for nxt in (False, True):
            out.append(
                f'extern "C" __global__ void __launch_bounds__(32 * WARPS_PER_CTA, QUANT_MIN_CTAS) '
                f"quant_lut_dq_f{fmt}{'_next' if nxt else ''}(const FusedArgs f) "
                f"{{ quant_lut_dq<{fmt}, {str(nxt).lower()}>(f); }}"
            )
        out.append(
            f'extern "C" __global__ void dequant8_f{fmt}(const DequantArgs a) {{ dequant8<{fmt}>((const unsigned int*)'
            f"a.packed, a.n, a.B, a.table, a.absmax, a.qabsmax, a.absmax2, a.dyn, a.offset, a.offset_p, a.B2, "
            f"a.out, a.bad); }}"
        )
    return "\n".join(out)


#: Layout constants the kernels share with the host code that builds their tables (defined like the knobs).
LAYOUT = {"ABOVE_BYTES": cuda_lut.ABOVE_BYTES}


def source(knobs: dict) -> str:
    """The kernels' source with the knobs they read defined first (a knob only the host reads leaves the
    source, and so the compiled module kept by kernel_cache, as it is)."""
    files = resources.files(__package__) / "kernels"
    body = "\n".join((files / name).read_text() for name in SOURCES) + "\n" + _wrappers()
    code = re.sub(r"//[^\n]*", "", body)  # what the kernels read, not their comments
    head = "".join(f"#define {k} {v}\n" for k, v in {**knobs, **LAYOUT}.items() if re.search(rf"\b{k}\b", code))
    return head + body


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
            cc = int(dev.compute_capability)
            cooperative = bool(cp.cuda.runtime.deviceGetAttribute(DEV_ATTR_COOPERATIVE_LAUNCH, device_id))
        # programmatic serialization: compute capability 9.0 on, and a driver with cuLaunchKernelEx
        lib = libcuda()
        self.pdl = bool(self.knobs["PDL"]) and cc >= 90 and lib is not None and hasattr(lib, "cuLaunchKernelEx")
        self._configs = {}
        self._functions = {}
        self._local = threading.local()
        self._per_sm = {}
        self._plans = {}
        self._cp, self._driver = cp, cp.cuda.driver
        # cuLaunchCooperativeKernel: CuPy's driver binding, else through ctypes; None where the device has none
        coop = getattr(cp.cuda.driver, "launchCooperativeKernel", None) or (launch_cooperative if lib else None)
        self._coop = coop if cooperative else None
        self.cooperative = self._coop is not None

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
        try:
            mem = self._local.mem
        except AttributeError:  # this thread's first launch
            mem = self._local.mem = ParamMemory(256)
        layout.pack_into(mem.buf, 0, *values)
        return mem.at

    def launch(
        self, fn: int, grid: int, block: int, layout: struct.Struct, values, shared: int = 0, stream: int | None = None
    ):
        """Launch function handle `fn` with one by-value struct parameter packed from `values` (integers,
        floats) through the driver (no per-parameter conversion), on `stream` (a handle; None: CuPy's current
        stream). The driver copies the parameter at launch, so one buffer per thread serves every launch."""
        if stream is None:
            stream = self._cp.cuda.get_current_stream().ptr
        self._driver.launchKernel(fn, grid, 1, 1, block, 1, 1, shared, stream, self._params(layout, values), 0)

    def launch_after(self, fn: int, grid: int, block: int, layout: struct.Struct, values, shared: int, stream: int):
        """`launch`, with programmatic serialization where the module allows it (`pdl`): the kernel may start
        before the one ahead of it on the stream ends, and waits for it in its code (grid_wait)."""
        if not self.pdl:
            return self.launch(fn, grid, block, layout, values, shared, stream)
        key = (grid, block, shared)
        cfg = self._configs.get(key)
        if cfg is None:
            cfg = self._configs[key] = LaunchConfig(grid, block, shared)
        cfg.hStream = stream
        res = libcuda().cuLaunchKernelEx(cfg.at, fn, self._params(layout, values), None)
        if res:
            raise self._driver.CUDADriverError(res)

    def prepare(
        self,
        fn: int,
        grid: int,
        block: int,
        layout: struct.Struct,
        values,
        shared: int = 0,
        ready=None,
        cooperative: bool = False,
        moving: tuple = (),
    ):
        """A launch like `launch`'s (`launch_cooperative`'s) with its parameter packed now, into memory of its own
        (Prepared; `moving`, the indices of the address fields Prepared.move rewrites); `ready`, a Prepared of
        the same launch whose launch has returned, is packed again instead of making one."""
        if ready is not None:
            ready.pack(values)
            return ready
        return Prepared(self, (fn, grid, 1, 1, block, 1, 1, shared), layout, values, cooperative, moving)

    def launch_cooperative(
        self, fn: int, grid: int, block: int, layout: struct.Struct, values, shared: int = 0, stream: int | None = None
    ) -> bool:
        """`launch` as a cooperative launch (cuLaunchCooperativeKernel: the driver refuses it unless every CTA
        can be resident at once, which a grid barrier needs); False where it is refused or the device has
        none (nothing ran)."""
        if self._coop is None:
            return False
        if stream is None:
            stream = self._cp.cuda.get_current_stream().ptr
        try:
            self._coop(fn, grid, 1, 1, block, 1, 1, shared, stream, self._params(layout, values))
        except self._driver.CUDADriverError as e:
            if getattr(e, "status", None) != COOPERATIVE_LAUNCH_TOO_LARGE:
                raise
            return False
        return True


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
