"""CUDA kernels (compiled by CuPy's NVRTC) for blockwise quantization, shared by the CuPy backend and
the PyTorch backend on CUDA. Every decision point is the reference's (qref/blockwise.py):

  one warp per block: absmax by a warp max; d = max(absmax, 1e-38); full blocks x * (1/d) with
  1/d an IEEE float32 division, the tail block x / d; clamp to [-1, 1]; code = order[#{midpoints < s}]
  (a count for <= 16 codes, a binary search otherwise); full blocks store absmax, the tail stores d.
  Dequantization: table[code] * absmax in float32, optionally absmax = dyn[q] * absmax2 + offset
  (two roundings), rounded to the output format to nearest even.

Compiled with --fmad=false so that no multiply-add is contracted into an FMA (the reference rounds
each product). Formats: 0 float32, 1 float16, 2 bfloat16 (as its uint16 bits).
"""
from __future__ import annotations

import os
from functools import cache

import numpy as np

SOURCE = r"""
#define FLOOR 1e-38f

__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}

template <int FMT> __device__ __forceinline__ float load(const void* p, long long i) {
    if (FMT == 0) return ((const float*)p)[i];
    if (FMT == 1) return half_to_float(((const unsigned short*)p)[i]);
    return __uint_as_float(((unsigned int)((const unsigned short*)p)[i]) << 16);
}

template <int FMT> __device__ __forceinline__ void store(void* p, long long i, float v) {
    if (FMT == 0) { ((float*)p)[i] = v; return; }
    if (FMT == 1) { ((unsigned short*)p)[i] = float_to_half(v); return; }
    unsigned int u = __float_as_uint(v);
    ((unsigned short*)p)[i] = (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ unsigned char nearest(float s, const float* mids, const unsigned char* order, int nm) {
    int c = 0;
    if (nm <= 15) {  // mids[nm..15] hold +inf: a branchless binary search counts the midpoints below s
        c += (s > mids[c + 7]) << 3;
        c += (s > mids[c + 3]) << 2;
        c += (s > mids[c + 1]) << 1;
        c += (s > mids[c]);
    } else {  // lower bound: number of midpoints strictly below s
        int lo = 0, hi = nm;
        while (lo < hi) { int mid = (lo + hi) >> 1; if (mids[mid] < s) lo = mid + 1; else hi = mid; }
        c = lo;
    }
    return order[c];
}

// One warp per block of B elements; PACK: two codes a byte, first element in the high nibble.
template <int FMT, bool PACK>
__device__ void quant_blocks(const void* x, long long n, int B, const float* mids_g, const unsigned char* order_g,
                             int nm, float offset, unsigned char zero_code, unsigned char* out, float* absmax,
                             int* bad) {
    __shared__ float mids[256];
    __shared__ unsigned char order[256];
    for (int j = threadIdx.x; j < max(nm, 16); j += blockDim.x) mids[j] = j < nm ? mids_g[j] : __int_as_float(0x7f800000);
    for (int j = threadIdx.x; j <= nm; j += blockDim.x) order[j] = order_g[j];
    __syncthreads();
    long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    long long nblocks = (n + B - 1) / B;
    if (w >= nblocks) return;
    long long start = w * B;
    int len = (int)min((long long)B, n - start);
    float m = 0.0f;
    bool finite = true;
    for (int i = lane; i < len; i += 32) {
        float v = load<FMT>(x, start + i) - offset;
        finite &= isfinite(v);
        m = fmaxf(m, fabsf(v));
    }
    if (!__all_sync(0xffffffffu, finite) && lane == 0) atomicOr(bad, 1);
    for (int k = 16; k > 0; k >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, k));
    bool tail = len < B;
    float d = fmaxf(m, FLOOR);
    float r = 1.0f / d;
    if (lane == 0) absmax[w] = tail ? d : m;
    if (PACK) {
        for (int p = lane; p < (len + 1) / 2; p += 32) {
            float v0 = load<FMT>(x, start + 2 * p) - offset;
            float s0 = fminf(fmaxf(tail ? v0 / d : v0 * r, -1.0f), 1.0f);
            unsigned char c1 = zero_code;
            if (2 * p + 1 < len) {
                float v1 = load<FMT>(x, start + 2 * p + 1) - offset;
                c1 = nearest(fminf(fmaxf(tail ? v1 / d : v1 * r, -1.0f), 1.0f), mids, order, nm);
            }
            out[start / 2 + p] = (unsigned char)((nearest(s0, mids, order, nm) << 4) | c1);
        }
    } else {
        for (int i = lane; i < len; i += 32) {
            float v = load<FMT>(x, start + i) - offset;
            out[start + i] = nearest(fminf(fmaxf(tail ? v / d : v * r, -1.0f), 1.0f), mids, order, nm);
        }
    }
}

// Block size 64, packed, <= 16 codes, no offset: the common QLoRA case. One warp per K consecutive
// full blocks, one pair of elements per lane and block, all K pairs loaded before any is used (the
// loads overlap); the same arithmetic as quant_blocks (absmax m, 1/max(m, 1e-38), clamp, count).
template <int FMT> __device__ __forceinline__ void load_pair(const void* x, long long i, float& a, float& b) {
    if (FMT == 0) { float2 v = ((const float2*)x)[i >> 1]; a = v.x; b = v.y; return; }
    unsigned int u = ((const unsigned int*)x)[i >> 1];
    if (FMT == 1) { a = half_to_float((unsigned short)(u & 0xFFFFu)); b = half_to_float((unsigned short)(u >> 16)); }
    else { a = __uint_as_float(u << 16); b = __uint_as_float(u & 0xFFFF0000u); }
}

template <int FMT, int K>
__device__ void quant64(const void* x, long long nfull, const float* mids_g, const unsigned char* order_g, int nm,
                        unsigned char* out, float* absmax, int* bad) {
    __shared__ float mids[16];
    __shared__ unsigned char order[16];
    if (threadIdx.x < 16) mids[threadIdx.x] = threadIdx.x < nm ? mids_g[threadIdx.x] : __int_as_float(0x7f800000);
    if (threadIdx.x <= nm) order[threadIdx.x] = order_g[threadIdx.x];
    __syncthreads();
    long long b0 = (((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5) * K;
    int lane = threadIdx.x & 31;
    if (b0 >= nfull) return;  // the whole warp leaves together

    float a[K], c[K];
    #pragma unroll
    for (int k = 0; k < K; ++k) {
        if (b0 + k < nfull) load_pair<FMT>(x, (b0 + k) * 64 + 2 * lane, a[k], c[k]);
        else { a[k] = 0.0f; c[k] = 0.0f; }
    }
    bool finite = true;
    #pragma unroll
    for (int k = 0; k < K; ++k) {
        finite &= isfinite(a[k]) && isfinite(c[k]);
        float m = fmaxf(0.0f, fmaxf(fabsf(a[k]), fabsf(c[k])));
        for (int s = 16; s > 0; s >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, s));
        if (b0 + k < nfull) {
            float r = 1.0f / fmaxf(m, FLOOR);
            float s0 = fminf(fmaxf(a[k] * r, -1.0f), 1.0f), s1 = fminf(fmaxf(c[k] * r, -1.0f), 1.0f);
            out[(b0 + k) * 32 + lane] = (unsigned char)((nearest(s0, mids, order, nm) << 4) | nearest(s1, mids, order, nm));
            if (lane == 0) absmax[b0 + k] = m;
        }
    }
    if (!__all_sync(0xffffffffu, finite) && lane == 0) atomicOr(bad, 1);
}

// absmax of block b, plain or double-quantized
__device__ __forceinline__ float block_scale(long long b, const float* absmax, const unsigned char* qabsmax,
                                             const float* absmax2, const float* dyn, float offset, int B2) {
    if (qabsmax == 0) return absmax[b];
    return dyn[qabsmax[b]] * absmax2[b / B2] + offset;
}

// One thread per byte (PACK: two codes) or per code.
template <int OUT, bool PACK>
__device__ void dequant_blocks(const unsigned char* codes, long long n, int B, const float* table,
                               const float* absmax, const unsigned char* qabsmax, const float* absmax2,
                               const float* dyn, float offset, int B2, void* out, int* bad) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (PACK) {
        long long i = 2 * t;
        if (i >= n) return;
        unsigned char byte = codes[t];
        float a = block_scale(i / B, absmax, qabsmax, absmax2, dyn, offset, B2);  // B even: one block
        if (!isfinite(a)) atomicOr(bad, 1);
        store<OUT>(out, i, table[byte >> 4] * a);
        if (i + 1 < n) store<OUT>(out, i + 1, table[byte & 15] * a);
    } else {
        if (t >= n) return;
        float a = block_scale(t / B, absmax, qabsmax, absmax2, dyn, offset, B2);
        if (!isfinite(a)) atomicOr(bad, 1);
        store<OUT>(out, t, table[codes[t]] * a);
    }
}

// Packed codes, n % 8 == 0 and B % 8 == 0: one thread per 4 bytes, 8 outputs in one wide store.
template <int OUT>
__device__ void dequant8(const unsigned int* packed, long long n, int B, const float* table_g, const float* absmax,
                         const unsigned char* qabsmax, const float* absmax2, const float* dyn, float offset, int B2,
                         void* out, int* bad) {
    __shared__ float table[16];
    if (threadIdx.x < 16) table[threadIdx.x] = table_g[threadIdx.x];
    __syncthreads();
    #pragma unroll
    for (int w = 0; w < DQ_WORDS; ++w) {  // DQ_WORDS words per thread, each step coalesced across the CTA
        long long t = ((long long)blockIdx.x * DQ_WORDS + w) * blockDim.x + threadIdx.x;
        if (8 * t >= n) return;
        unsigned int word = packed[t];
        long long b = (8 * t) >> (__ffs(B) - 1);  // B is a power of two on this path (host checks): no division
        float a = qabsmax == 0 ? absmax[b]
            : dyn[qabsmax[b]] * absmax2[(B2 & (B2 - 1)) == 0 ? b >> (__ffs(B2) - 1) : b / B2] + offset;
        if (!isfinite(a)) atomicOr(bad, 1);
        float v[8];
        #pragma unroll
        for (int k = 0; k < 4; ++k) {  // byte k of the word holds outputs 2k (high nibble) and 2k+1
            unsigned int byte = (word >> (8 * k)) & 0xFFu;
            v[2 * k] = table[byte >> 4] * a;
            v[2 * k + 1] = table[byte & 15u] * a;
        }
        if (OUT == 0) {
            float4* o = (float4*)out + 2 * t;
            o[0] = make_float4(v[0], v[1], v[2], v[3]);
            o[1] = make_float4(v[4], v[5], v[6], v[7]);
        } else {
            unsigned short h[8];
            #pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (OUT == 1) h[k] = float_to_half(v[k]);
                else { unsigned int u = __float_as_uint(v[k]); h[k] = (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16); }
            }
            uint4 o;
            o.x = h[0] | ((unsigned int)h[1] << 16); o.y = h[2] | ((unsigned int)h[3] << 16);
            o.z = h[4] | ((unsigned int)h[5] << 16); o.w = h[6] | ((unsigned int)h[7] << 16);
            ((uint4*)out)[t] = o;
        }
    }
}

// Group-wise RTN (qref/groupwise.py), one thread per (row, group); PROFILE 0 gptq-asym, 1 gptq-sym, 2 minmax.
extern "C" __global__ void groupwise(const float* W, long long groups_total, int g, int bits, int profile,
                                     unsigned char* codes, float* scales, float* zeros) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= groups_total) return;
    const float* w = W + k * g;
    float maxq = (float)((1 << bits) - 1);
    float lo = w[0], hi = w[0];
    for (int i = 1; i < g; ++i) { lo = fminf(lo, w[i]); hi = fmaxf(hi, w[i]); }
    float scale, zero;
    if (profile == 2) {
        scale = (hi - lo) / maxq;
        if (scale == 0.0f) scale = 1.0f;
        for (int i = 0; i < g; ++i) codes[k * g + i] = (unsigned char)fminf(fmaxf(rintf((w[i] - lo) / scale), 0.0f), maxq);
        scales[k] = scale; zeros[k] = lo; return;
    }
    float xmin = fminf(lo, 0.0f), xmax = fmaxf(hi, 0.0f);
    if (profile == 1) { xmax = fmaxf(fabsf(xmin), xmax); if (xmin < 0.0f) xmin = -xmax; }
    if ((xmin == 0.0f && xmax == 0.0f) || (xmax - xmin) / maxq == 0.0f) { xmin = -1.0f; xmax = 1.0f; }
    scale = (xmax - xmin) / maxq;
    zero = profile == 1 ? (float)((1 << bits) / 2) : rintf(-xmin / scale);
    for (int i = 0; i < g; ++i) codes[k * g + i] = (unsigned char)fminf(fmaxf(rintf(w[i] / scale) + zero, 0.0f), maxq);
    scales[k] = scale; zeros[k] = zero;
}

// float32 <-> float64 without flushing subnormals (CuPy's own casts run with -ftz=true).
extern "C" __global__ void f32_to_f64(const float* a, double* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) b[i] = (double)a[i];
}
extern "C" __global__ void f64_to_f32(const double* a, float* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) b[i] = (float)a[i];
}

// Integer significand sums per frexp exponent (qref.double_quant.exponent_sums), exact.
extern "C" __global__ void exponent_sums(const float* v, long long n, unsigned long long* sums) {
    __shared__ unsigned long long bins[277];
    for (int j = threadIdx.x; j < 277; j += blockDim.x) bins[j] = 0;
    __syncthreads();
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int e;
        float f = frexpf(v[i], &e);
        int m = (int)(f * 16777216.0f);  // the 24-bit significand, exactly (|f| in [0.5, 1))
#if __CUDA_ARCH__ >= 800
        // warp-aggregated: lanes with the same exponent add their significands first (|sum| < 2^29), one
        // shared atomic per exponent present in the warp (absmax values share few exponents)
        int key = m != 0 ? e + 148 : -1;
        unsigned group = __match_any_sync(__activemask(), key);
        int part = __reduce_add_sync(group, m);
        if (key >= 0 && (int)(threadIdx.x & 31) == __ffs(group) - 1)
            atomicAdd(&bins[key], (unsigned long long)(long long)part);
#else
        if (m != 0) atomicAdd(&bins[e + 148], (unsigned long long)(long long)m);
#endif
    }
    __syncthreads();
    for (int j = threadIdx.x; j < 277; j += blockDim.x)
        if (bins[j]) atomicAdd(&sums[j], bins[j]);
}
"""

QUANT_NAMES = {(fmt, pack): f"quant_f{fmt}_p{int(pack)}" for fmt in range(3) for pack in (False, True)}
DEQUANT_NAMES = {(fmt, pack): f"dequant_f{fmt}_p{int(pack)}" for fmt in range(3) for pack in (False, True)}


def _wrappers() -> str:
    out = []
    for (fmt, pack), name in QUANT_NAMES.items():
        out.append(
            f'extern "C" __global__ void {name}(const void* x, long long n, int B, const float* mids, '
            f"const unsigned char* order, int nm, float offset, unsigned char zero_code, unsigned char* out, "
            f"float* absmax, int* bad) {{ quant_blocks<{fmt}, {str(pack).lower()}>(x, n, B, mids, order, nm, "
            f"offset, zero_code, out, absmax, bad); }}")
    for (fmt, pack), name in DEQUANT_NAMES.items():
        out.append(
            f'extern "C" __global__ void {name}(const unsigned char* codes, long long n, int B, const float* table, '
            f"const float* absmax, const unsigned char* qabsmax, const float* absmax2, const float* dyn, "
            f"float offset, int B2, void* out, int* bad) {{ dequant_blocks<{fmt}, {str(pack).lower()}>(codes, n, B, "
            f"table, absmax, qabsmax, absmax2, dyn, offset, B2, out, bad); }}")
    for fmt in range(3):
        out.append(
            f'extern "C" __global__ void quant64_f{fmt}(const void* x, long long nfull, const float* mids, '
            f"const unsigned char* order, int nm, unsigned char* out, float* absmax, int* bad) "
            f"{{ quant64<{fmt}, QUANT64_K>(x, nfull, mids, order, nm, out, absmax, bad); }}")
        out.append(
            f'extern "C" __global__ void dequant8_f{fmt}(const unsigned int* packed, long long n, int B, '
            f"const float* table, const float* absmax, const unsigned char* qabsmax, const float* absmax2, "
            f"const float* dyn, float offset, int B2, void* out, int* bad) {{ dequant8<{fmt}>(packed, n, B, table, "
            f"absmax, qabsmax, absmax2, dyn, offset, B2, out, bad); }}")
    return "\n".join(out)


FORMATS = {"float32": 0, "float16": 1, "bfloat16": 2}
WARPS_PER_CTA = int(os.environ.get("QREF_WARPS_PER_CTA", 8))  # env: for tuning sweeps only
# Blocks per warp in the block-64 kernel. Sweeps on an H100 (asv_bench/tune_kernels.py): 4 and 8 within
# noise of each other (~1000-1090 GB/s at 28672 x 8192); midpoints in registers chosen by selects were
# slower (710-800 GB/s) than the shared-memory binary search, and were dropped.
QUANT64_K = int(os.environ.get("QREF_QUANT64_K", 4))
DQ_WORDS = int(os.environ.get("QREF_DQ_WORDS", 1))  # packed 32-bit words per thread in dequant8


OPTIONS = ("--std=c++14", "--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")


@cache
def module(device_id: int):
    """The kernels compiled by NVRTC directly: CuPy's RawModule appends -ftz=true to every compile
    (cupy/cuda/compiler.py), which would flush subnormals and break the reference's semantics."""
    import cupy as cp
    from cupy.cuda import function
    from cupy_backends.cuda.libs import nvrtc

    with cp.cuda.Device(device_id) as dev:
        arch = f"--gpu-architecture=compute_{dev.compute_capability}"
        head = f"#define QUANT64_K {QUANT64_K}\n#define DQ_WORDS {DQ_WORDS}\n"
        prog = nvrtc.createProgram(head + SOURCE + _wrappers(), "qref_kernels.cu", [], [])
        try:
            nvrtc.compileProgram(prog, [*OPTIONS, arch])
        except Exception as e:
            raise RuntimeError(f"NVRTC failed: {e}\n{nvrtc.getProgramLog(prog)}") from e
        ptx = nvrtc.getPTX(prog)
        nvrtc.destroyProgram(prog)
        mod = function.Module()
        mod.load(ptx if isinstance(ptx, bytes) else ptx.encode())
        return mod


def groupwise(W32, bits: int, group_size: int, profile: str):
    """(codes, scales, zeros) of a C-contiguous float32 cupy weight (D_out, D_in)."""
    import cupy as cp

    d_out, d_in = W32.shape
    total = d_out * (d_in // group_size)
    codes = cp.empty((d_out, d_in), dtype=cp.uint8)
    scales = cp.empty((d_out, d_in // group_size), dtype=cp.float32)
    zeros = cp.empty_like(scales)
    prof = {"gptq-asym": 0, "gptq-sym": 1, "minmax": 2}[profile]
    module(W32.device.id).get_function("groupwise")(
        (-(-total // 128),), (128,),
        (W32, np.int64(total), np.int32(group_size), np.int32(bits), np.int32(prof), codes, scales, zeros))
    return codes, scales, zeros


def convert(a, dtype: str):
    """float32 <-> float64 with IEEE semantics (subnormals kept)."""
    import cupy as cp

    a = cp.ascontiguousarray(a)
    out = cp.empty(a.shape, dtype=dtype)
    name = "f32_to_f64" if dtype == "float64" else "f64_to_f32"
    if a.size:
        module(a.device.id).get_function(name)((-(-a.size // 256),), (256,), (a, out, np.int64(a.size)))
    return out


def quantize(x, fmt: str, n: int, blocksize: int, mids, order, pack: bool, zero_code: int = 0,
             offset: float = 0.0, check: bool = True):
    """Codes (uint8, n or ceil(n/2) packed) and absmax (float32) of the flat cupy array x. check=False
    skips reading the non-finite flag back (a host round-trip) where x is known finite."""
    import cupy as cp

    nblocks = -(-n // blocksize)
    out = cp.empty((n + 1) // 2 if pack else n, dtype=cp.uint8)
    absmax = cp.empty(nblocks, dtype=cp.float32)
    bad = cp.zeros(1, dtype=cp.int32)
    done = 0
    aligned = x.data.ptr % (8 if fmt == "float32" else 4) == 0
    if pack and blocksize == 64 and mids.size <= 15 and offset == 0.0 and aligned and n >= 64:
        done = n // 64  # full blocks by the block-64 kernel, the tail (if any) by the general one
        grid = -(-done // (QUANT64_K * WARPS_PER_CTA))
        module(x.device.id).get_function(f"quant64_f{FORMATS[fmt]}")(
            (grid,), (32 * WARPS_PER_CTA,), (x, np.int64(done), mids, order, np.int32(mids.size), out, absmax, bad))
    if done < nblocks:
        kernel = module(x.device.id).get_function(QUANT_NAMES[(FORMATS[fmt], pack)])
        grid = -(-(nblocks - done) // WARPS_PER_CTA)
        start = done * blocksize
        kernel((grid,), (32 * WARPS_PER_CTA,),
               (x[start:], np.int64(n - start), np.int32(blocksize), mids, order, np.int32(mids.size),
                np.float32(offset), np.uint8(zero_code), out[start // 2 if pack else start:], absmax[done:], bad))
    if check and int(bad.get()[0]):
        raise ValueError("x contains non-finite values; the reference rejects NaN and Inf (docs/nan-inf.md)")
    return out, absmax


def dequantize(codes, n: int, blocksize: int, table, out_fmt: str, pack: bool, absmax=None, qabsmax=None,
               absmax2=None, dyn=None, offset=0.0, blocksize2: int = 256):
    """float values (cupy; bfloat16 as uint16 bits) of n codes, plain or double-quantized absmax."""
    import cupy as cp

    out = cp.empty(n, dtype=cp.float32 if out_fmt == "float32" else cp.uint16)
    threads = (n + 1) // 2 if pack else n
    kernel = module(codes.device.id).get_function(DEQUANT_NAMES[(FORMATS[out_fmt], pack)])
    if pack and n % 8 == 0 and blocksize % 8 == 0 and blocksize & (blocksize - 1) == 0 and codes.data.ptr % 4 == 0:
        threads = -(-(n // 8) // DQ_WORDS)
        kernel = module(codes.device.id).get_function(f"dequant8_f{FORMATS[out_fmt]}")
    null = np.uint64(0)
    bad = cp.zeros(1, dtype=cp.int32)
    kernel((-(-threads // 256),), (256,),
           (codes, np.int64(n), np.int32(blocksize), table,
            absmax if absmax is not None else null, qabsmax if qabsmax is not None else null,
            absmax2 if absmax2 is not None else null, dyn if dyn is not None else null,
            np.float32(offset), np.int32(blocksize2), out, bad))
    if int(bad.get()[0]):
        raise ValueError("absmax (after double dequantization) is not finite: it overflows float32 "
                         "(docs/double-quant.md)")
    return out


def exponent_sums(values) -> np.ndarray:
    import cupy as cp

    sums = cp.zeros(277, dtype=cp.uint64)
    n = values.size
    if n:
        module(values.device.id).get_function("exponent_sums")(
            (min(-(-n // 256), 1024),), (256,), (values, np.int64(n), sums))
    return cp.asnumpy(sums).view(np.int64)
