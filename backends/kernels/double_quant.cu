// Double quantization (qref/double_quant.py) on the device: the exact sums of the first level's absmax and
// the offset from them, and the second level, blocks of 256 of the absmax minus the offset.

#define NOBASE (-100000)

// Exact integer sums of the absmax (bins[i] counts units of 2^(i - 172), as qref.double_quant's exponent
// sums): m = v 2^(e - 150), e its biased exponent (1 for subnormals), v its 24-bit significand, so m adds
// v to bins[e + 22]. Each lane keeps one 64-bit sum for exponents within [base, base + 8] of the first value
// it sees (v << 8 < 2^32: no sum overflows below 2^31 blocks); others go to the CTA's shared bins.
__device__ __forceinline__ void sum_absmax(float m, int& base, unsigned long long& acc, unsigned long long* bins) {
    const unsigned int u = __float_as_uint(m);
    const int ef = (int)(u >> 23), e = max(ef, 1);
    const unsigned long long v = (u & 0x7FFFFFu) | (ef ? 0x800000u : 0u);
    if (base == NOBASE) base = e - 4;
    const int sh = e - base;
    if (sh >= 0 && sh <= 8) acc += v << sh;
    else atomicAdd(&bins[e + 22], v);
}

__device__ void offset_warp(const unsigned long long* sums, long long n, float* offset);  // misc.cu

// The lanes' window sums into the CTA's bins (a whole warp calls it): one shared atomic per warp and window
// base present, not one per lane (a 64-bit atomic add on shared memory is a compare-and-swap loop: 256
// threads on one address serialize). A warp's sum stays below 2^63: below 2^31 blocks, each < 2^32.
__device__ __forceinline__ void flush_window(int base, unsigned long long acc, unsigned long long* bins) {
    const int lane = threadIdx.x & 31, key = acc ? base : NOBASE;
    unsigned int todo = __ballot_sync(FULL, key != NOBASE);
    while (todo) {
        const int src = __ffs(todo) - 1, k = __shfl_sync(FULL, key, src);
        const bool in = key == k;
        unsigned long long s = in ? acc : 0ull;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL, s, o);
        if (lane == src) atomicAdd(&bins[k + 22], s);
        todo &= ~__ballot_sync(FULL, in);
    }
}

// A CTA's sums (its lanes' windows and its shared bins) added into the global sums (the whole CTA calls it).
__device__ __forceinline__ void cta_sums(int base, unsigned long long acc, unsigned long long* bins,
                                         unsigned long long* sums) {
    flush_window(base, acc, bins);
    __syncthreads();
    fused_stamp(2);
    if (SUMS_DIAG == 3) return;  // diagnostics only: no global adds of the bins (wrong offsets)
    for (int k = threadIdx.x; k < 277; k += blockDim.x)
        if (bins[k]) atomicAdd(&sums[k], bins[k]);
    fused_stamp_cta(3);
}

// After cta_sums, by the whole CTA: the CTA that finishes last (the counter at done) computes the offset of
// n absmax from the sums and leaves the sums and the counter zero (offset_warp).
__device__ __forceinline__ void last_cta_offset(unsigned long long* sums, unsigned int* done, long long n,
                                                float* offset) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
    __syncthreads();
    if (last && threadIdx.x < 32) { __threadfence(); offset_warp(sums, n, offset); }
}

// The exact sums of n float32 absmax and, in the CTA that finishes last, the double-quantization offset
// (offset null: the sums alone, for quant_dq256 to compute it): the same sums and offset as quant_lut's
// SUMS, as their own pass over the first level's absmax (knob SUMS_PASS_MIN: large states, where reading
// the absmax again costs less than summing them inside quant_lut). Two 16-byte loads in flight per thread
// and step; the last n % 4 by the first threads.
struct SumsArgs { const float* v; long long n; unsigned long long* sums; unsigned int* done; float* offset; };
static_assert(sizeof(SumsArgs) == 40, "SumsArgs: layout of backends/cuda_launch.SUMS_ARGS");

extern "C" __global__ void absmax_sums(const SumsArgs a) {
    __shared__ unsigned long long bins[277];
    for (int k = threadIdx.x; k < 277; k += blockDim.x) bins[k] = 0;
    dependents_may_start();
    grid_wait();  // the absmax of the kernel before this one are written
    __syncthreads();
    int base = NOBASE;
    unsigned long long acc = 0;
    const long long n4 = a.n >> 2, stride = (long long)gridDim.x * blockDim.x;
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const float4* v4 = (const float4*)a.v;
    const float INF = __int_as_float(0x7f800000);  // non-finite absmax (a refused call) have no bin
    for (long long i = t; i < n4; i += 2 * stride) {
        const float4 p = __ldcg(v4 + i);
        const float4 q = i + stride < n4 ? __ldcg(v4 + i + stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const float m[8] = {p.x, p.y, p.z, p.w, q.x, q.y, q.z, q.w};
        #pragma unroll
        for (int k = 0; k < 8; ++k) if (m[k] != 0.0f && m[k] < INF) sum_absmax(m[k], base, acc, bins);
    }
    if (t < (a.n & 3)) {
        const float m = __ldcg(a.v + 4 * n4 + t);
        if (m != 0.0f && m < INF) sum_absmax(m, base, acc, bins);
    }
    cta_sums(base, acc, bins, a.sums);
    if (a.offset) last_cta_offset(a.sums, a.done, a.n, a.offset);
}

// The second level of double quantization (qref/double_quant.py): float32 absmax minus the offset (a device
// scalar), blocks of 256, unpacked codes of a codebook with a log-scale bucket table (backends/cuda_lut.py,
// build_log: the 8-bit dynamic map): clamped s, key = bits(|s|) >> shift clamped to [low, high], mirrored
// below 0; code = s > midpoint ? hi : lo. One warp per block, 8 consecutive values per lane (two 16-byte
// loads, one 8-byte store); the tail block as in quant_blocks.
// The offset is read at offset_p, or (sums not null) computed from the exact sums of the absmax by the kernel.
struct DqArgs { const float* x; long long n; const uint2* lut; int lut_size, shift, low, high;
                const float* offset_p; unsigned char* out; float* absmax; float* offset_copy;
                unsigned int* count; int* fin;  // signal_end's
                unsigned long long* sums; };
static_assert(sizeof(DqArgs) == 96, "DqArgs: layout of backends/cuda_launch.DQ_ARGS");

template <bool GLOBAL>  // the table in shared memory, or read in place through the read-only cache
__device__ __forceinline__ unsigned int log_code(float s, const uint2* lut, int shift, int low, int high) {
    const int kc = min(max((int)(__float_as_uint(fabsf(s)) >> shift), low), high) - low;
    const int r = high - low + 1;
    const int at = s < 0.0f ? r - 1 - kc : r + kc;
#if DQ2_NEXT  // cuda_lut.compact_log: 256 midpoints by code, then each bucket's code "not above" (a byte)
    const float* above = (const float*)lut;
    const unsigned char* lo = (const unsigned char*)lut + ABOVE_BYTES;
    const unsigned int c = GLOBAL ? __ldg(lo + at) : lo[at];
    return c + (s > (GLOBAL ? __ldg(above + c) : above[c]) ? 1u : 0u);
#else
    const uint2 e = GLOBAL ? __ldg(lut + at) : lut[at];
    return (s > __uint_as_float(e.x) ? e.y >> 8 : e.y) & 0xFFu;
#endif
}

// One block of 256 absmax (warp w) in two steps, so that a warp can have several blocks' loads in flight and
// issue them before the offset is known: dq_load reads lane's 8 values (through L2: other CTAs may have just
// written them, in the fused kernel), dq_store subtracts the offset (past the end: 0), quantizes and writes.
__device__ __forceinline__ void dq_load(const float* x, long long n, long long w, int lane, float v[8]) {
    const long long start = w * 256;
    const int len = (int)min(256LL, n - start);
    if (len == 256) {
        const float4 p = __ldcg((const float4*)(x + start) + 2 * lane), q = __ldcg((const float4*)(x + start) + 2 * lane + 1);
        v[0] = p.x; v[1] = p.y; v[2] = p.z; v[3] = p.w; v[4] = q.x; v[5] = q.y; v[6] = q.z; v[7] = q.w;
    } else {
        #pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = 8 * lane + k < len ? __ldcg(x + start + 8 * lane + k) : 0.0f;
    }
}

template <bool GLOBAL>
__device__ __forceinline__ void dq_store(long long n, long long w, int lane, float offset, float v[8], const uint2* lut,
                                         int shift, int low, int high, unsigned char* out, float* absmax) {
    const long long start = w * 256;
    const int len = (int)min(256LL, n - start);
    const bool tail = len < 256;
    float m = 0.0f;
    #pragma unroll
    for (int k = 0; k < 8; ++k) { v[k] = 8 * lane + k < len ? v[k] - offset : 0.0f; m = fmaxf(m, fabsf(v[k])); }
    for (int k = 16; k > 0; k >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL, m, k));
    const float d = fmaxf(m, FLOOR), r = 1.0f / d;
    if (lane == 0) absmax[w] = tail ? d : m;
    unsigned int c[8];
    float s[8];  // scaled in one branch, then looked up together (a branch per value: 10% slower, quant_dq256)
    if (tail) {
        #pragma unroll
        for (int k = 0; k < 8; ++k) s[k] = v[k] / d;
    } else {
        #pragma unroll
        for (int k = 0; k < 8; ++k) s[k] = v[k] * r;
    }
    #pragma unroll
    for (int k = 0; k < 8; ++k) c[k] = log_code<GLOBAL>(fminf(fmaxf(s[k], -1.0f), 1.0f), lut, shift, low, high);
    if (!tail) {
        ((uint2*)(out + start))[lane] = make_uint2(c[0] | c[1] << 8 | c[2] << 16 | c[3] << 24,
                                                    c[4] | c[5] << 8 | c[6] << 16 | c[7] << 24);
    } else {
        for (int k = 0; k < 8; ++k) if (8 * lane + k < len) out[start + 8 * lane + k] = (unsigned char)c[k];
    }
}

__device__ float offset_value_warp(const unsigned long long* sums, long long n);  // misc.cu

// Leaves the 277 sums and the counter word after them zero for the next call (one whole warp).
__device__ __forceinline__ void clear_sums(unsigned long long* sums) {
    for (int k = threadIdx.x & 31; k < 278; k += 32) ((volatile unsigned long long*)sums)[k] = 0ull;
}

// The offset of n absmax, by the whole CTA (a barrier inside): computed by its first warp from the exact sums
// (not null; as offset_warp), each CTA alone (its caller's release_sums clears them), or read at offset_p.
__device__ __forceinline__ float dq2_offset(const unsigned long long* sums, const float* offset_p, long long n) {
    __shared__ float offset;
    if (threadIdx.x < 32) {
        if (sums) {
            const float v = offset_value_warp(sums, n);
            if (threadIdx.x == 0) offset = v;
        } else if (threadIdx.x == 0) {
            offset = *offset_p;
        }
    }
    __syncthreads();
    return offset;
}

// After a CTA's blocks, by its first warp (whose lanes read the sums for the offset): the CTA that counts
// last (the word after the sums) clears them for the next call, off the path from the sums to the codes.
__device__ __forceinline__ void release_sums(unsigned long long* sums) {
    int last = 0;
    if (threadIdx.x == 0) last = atomicAdd((unsigned int*)(sums + 277), 1u) == gridDim.x - 1;
    if (__shfl_sync(FULL, last, 0)) clear_sums(sums);
}

// The second level of n absmax at x over the whole grid (every thread calls it; a CTA barrier inside, which
// also orders a table copied to shared memory before it): each warp loads BLOCKS blocks of 256 (nwarps
// apart) before it quantizes them, the first ones while its CTA's offset is computed (dq2_offset); block 0
// keeps the offset at offset_copy (not null). The caller releases the sums (release_sums) after it; EARLY
// (sums not null): the CTA counts itself as the offset is known (its last read of the sums) and the last to
// count clears them after its blocks, so the count's round trip runs while the CTA quantizes.
// quant_dq256's whole work, and quant_lut_dq's after its grid barrier.
template <int BLOCKS, bool GLOBAL, bool EARLY = false>
__device__ __forceinline__ void second_level(const float* x, long long n, unsigned long long* sums, const float* offset_p,
                                             float* offset_copy, const uint2* lut, int shift, int low, int high,
                                             unsigned char* out, float* absmax) {
    const long long nblocks = (n + 255) / 256, nwarps = ((long long)gridDim.x * blockDim.x) >> 5;
    const int lane = threadIdx.x & 31;
    const long long first = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    float v[BLOCKS][8];
    #pragma unroll
    for (int k = 0; k < BLOCKS; ++k)
        if (first + k * nwarps < nblocks) dq_load(x, n, first + k * nwarps, lane, v[k]);
    const float offset = dq2_offset(sums, offset_p, n);
    unsigned int counted = 0;  // EARLY: the count before this CTA's (thread 0's)
    if (EARLY && threadIdx.x == 0) counted = atomicAdd((unsigned int*)(sums + 277), 1u);
    fused_stamp(6);
    if (blockIdx.x == 0 && threadIdx.x == 0 && offset_copy) *offset_copy = offset;  // kept with the result
    for (long long w0 = first; w0 < nblocks; w0 += BLOCKS * nwarps) {
        if (w0 != first) {
            #pragma unroll
            for (int k = 0; k < BLOCKS; ++k)
                if (w0 + k * nwarps < nblocks) dq_load(x, n, w0 + k * nwarps, lane, v[k]);
        }
        #pragma unroll
        for (int k = 0; k < BLOCKS; ++k)
            if (w0 + k * nwarps < nblocks)
                dq_store<GLOBAL>(n, w0 + k * nwarps, lane, offset, v[k], lut, shift, low, high, out, absmax);
    }
    if (EARLY && threadIdx.x < 32 && __shfl_sync(FULL, counted, 0) == gridDim.x - 1) clear_sums(sums);
    fused_stamp_cta(7);
}

// DQ2_SHARED 0: the table read in place through the read-only cache (L1 holds its 22 KB); 1: each CTA of a
// persistent grid first copies it to shared memory. Each warp loads DQ2_BLOCKS blocks (nwarps apart) before
// it quantizes them; the first ones before the offset is known. Launched after the first level's kernel
// with programmatic serialization (knob PDL), the table's copy runs before that kernel has ended.
extern "C" __global__ void quant_dq256(const DqArgs a) {
    extern __shared__ uint2 lut_s[];
    if (DQ2_SHARED)
        for (int k = threadIdx.x; k < a.lut_size; k += blockDim.x) lut_s[k] = a.lut[k];
    grid_wait();  // the absmax (and sums) of the kernels before this one are written
    second_level<DQ2_BLOCKS, DQ2_SHARED == 0>(a.x, a.n, a.sums, a.offset_p, a.offset_copy, DQ2_SHARED ? lut_s : a.lut,
                                              a.shift, a.low, a.high, a.out, a.absmax);
    if (a.sums && threadIdx.x < 32) release_sums(a.sums);
    signal_end(a.count, a.fin);
}
