// Blockwise absmax quantization (qref/blockwise.py). Every decision point is the reference's:
// absmax m of the block; d = max(m, 1e-38); full blocks scale by x * (1/d), 1/d an IEEE float32
// division, the tail block by x / d; clamp to [-1, 1]; code = order[#{midpoints < s}]; full blocks
// store m, the tail stores d.

// #{midpoints < s} by a branchless binary search over mids[0 .. P-2] (sorted, padded with +inf), then
// the code at that position.
template <int P>
__device__ __forceinline__ unsigned char nearest(float s, const float* mids, const unsigned char* order) {
    int c = 0;
    #pragma unroll
    for (int step = P >> 1; step > 0; step >>= 1) c += s > mids[c + step - 1] ? step : 0;
    return order[c];
}

// Any block size and codebook (P = 16: up to 15 midpoints, P = 256: up to 255); one warp per block.
// offset (a device scalar, or null for 0) is subtracted first: the double quantization of the absmax.
template <int FMT, bool PACK, int P>
__device__ void quant_blocks(const void* x, long long n, int B, const float* mids_g, const unsigned char* order_g,
                             int nm, const float* offset_p, unsigned char zero_code, unsigned char* out,
                             float* absmax, int* bad) {
    __shared__ float mids[P];
    __shared__ unsigned char order[P];
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        mids[j] = j < nm ? mids_g[j] : __int_as_float(0x7f800000);
        order[j] = j <= nm ? order_g[j] : 0;
    }
    __syncthreads();
    float offset = offset_p ? *offset_p : 0.0f;
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
    if (!__all_sync(FULL, finite) && lane == 0) { if (bad) *(volatile int*)bad = 1; }
    for (int k = 16; k > 0; k >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL, m, k));
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
                c1 = nearest<P>(fminf(fmaxf(tail ? v1 / d : v1 * r, -1.0f), 1.0f), mids, order);
            }
            out[start / 2 + p] = (unsigned char)((nearest<P>(s0, mids, order) << 4) | c1);
        }
    } else {
        for (int i = lane; i < len; i += 32) {
            float v = load<FMT>(x, start + i) - offset;
            out[start + i] = nearest<P>(fminf(fmaxf(tail ? v / d : v * r, -1.0f), 1.0f), mids, order);
        }
    }
}

// ---- Block 64, packed, a codebook with a bucket table (backends/cuda_lut.py): the QLoRA case ----
// code of s: lut[(bits(s + 6) >> shift) & mask] = (midpoint or +inf, lo | hi << 8); s > midpoint ? hi : lo.
// NEXT (a codebook whose codes are in value order, as NF4: the code above a midpoint is the next one;
// cuda_lut.next_entries): the entry holds lo alone and the code is lo + (s > midpoint), two instructions
// fewer per value than the general select.
template <bool NEXT>
__device__ __forceinline__ unsigned int lut_code(float s, const uint2* lut, int shift, unsigned int mask) {
#if LUT_DIAG == 1  // diagnostics only (asv_bench/tune_kernels.py): the bucket without the lookup
    return (__float_as_uint(s + 6.0f) >> shift) & 15u;
#endif
    uint2 e = lut[(__float_as_uint(s + 6.0f) >> shift) & mask];
    if (NEXT) return e.y + (s > __uint_as_float(e.x) ? 1u : 0u);
    return (s > __uint_as_float(e.x) ? e.y >> 8 : e.y) & 15u;
}

// 4 lanes per block, 16 values per lane: lane j of a block holds its 16-byte chunks j, j + 4, ... so every
// load instruction of a warp reads whole 32-byte sectors. absmax by an integer max of |bits| (NaN above
// inf: one comparison flags both). A persistent grid walks groups of 8 blocks. SUMS: also the exact
// sums of the absmax and, in the CTA that finishes last, the double-quantization offset from them.
struct LutArgs {  // one by-value kernel parameter: a launch costs about a microsecond per parameter
    const uint4* x; long long nfull; const uint2* lut; int lut_size, shift; unsigned int mask;
    unsigned char* out; float* absmax; int* bad; unsigned long long* sums; unsigned int* done; float* offset;
    long long n_absmax; int* fin;  // MODE 0, 2: signal_end(done, fin); MODE 1: done counts the sums' CTAs
};
static_assert(sizeof(LutArgs) == 104, "LutArgs: layout of backends/cuda_launch.LUT_ARGS");

// MODE 0: codes and absmax; 1: also the sums and the offset (last CTA); 2: the sums only (the fused kernel's,
// and before quant_dq256's own offset). NEXT: lut_code's.
template <int FMT, int MODE, bool NEXT = false, bool SLOT_MAJOR = false>
__device__ __forceinline__ void quant_lut(const LutArgs a) {
    constexpr bool SUMS = MODE != 0;
    const uint4* __restrict__ x = a.x;
    const long long nfull = a.nfull;
    const int shift = a.shift;
    const unsigned int mask = a.mask;
    unsigned char* __restrict__ out = a.out;
    float* __restrict__ absmax = a.absmax;
    extern __shared__ uint2 lut[];  // lut_size entries, then (SUMS) 277 bins
    constexpr int NC = FMT == 0 ? 4 : 2;  // 16-byte chunks per lane and block
    const int lut_size = a.lut_size;
    unsigned long long* bins = (unsigned long long*)(lut + lut_size);
    for (int k = threadIdx.x; k < lut_size; k += blockDim.x) lut[k] = a.lut[k];
    if (SUMS) for (int k = threadIdx.x; k < 277; k += blockDim.x) bins[k] = 0;
    dependents_may_start();  // a kernel launched after this one with programmatic serialization
    __syncthreads();
    fused_stamp(0);
    const int lane = threadIdx.x & 31, j = lane & 3;
    // SLOT_MAJOR: warps numbered slot by slot (warp 0 of every CTA, then warp 1, ...), so that the groups of the
    // last, partial sweep go to every CTA, not to the first CTAs, which a cooperative launch places two or three
    // to a multiprocessor (the one launch's FUSED_SLOT_MAJOR); else CTA by CTA
    const long long warp = SLOT_MAJOR ? (long long)(threadIdx.x >> 5) * gridDim.x + blockIdx.x
                                      : ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long nwarps = ((long long)gridDim.x * blockDim.x) >> 5;
    bool finite = true;
    int base = NOBASE;
    unsigned long long acc = 0;
    for (long long g0 = warp * 8; g0 < nfull; g0 += QUANT_ITER * nwarps * 8) {
        uint4 w[QUANT_ITER][NC];  // QUANT_ITER groups' loads issued before any is used
        #pragma unroll
        for (int it = 0; it < QUANT_ITER; ++it) {
            const long long b = g0 + it * nwarps * 8 + (lane >> 2);
            #pragma unroll
            for (int c = 0; c < NC; ++c)
                w[it][c] = b < nfull ? (QUANT_LDCS ? __ldcs(x + b * (4 * NC) + j + 4 * c) : x[b * (4 * NC) + j + 4 * c])
                                     : make_uint4(0u, 0u, 0u, 0u);
        }
        #pragma unroll
        for (int it = 0; it < QUANT_ITER; ++it) {
            const long long b = g0 + it * nwarps * 8 + (lane >> 2);
            const bool valid = b < nfull;
            unsigned int am = 0;
            #pragma unroll
            for (int c = 0; c < NC; ++c) {
                const unsigned int ws[4] = {w[it][c].x, w[it][c].y, w[it][c].z, w[it][c].w};
                #pragma unroll
                for (int q = 0; q < 4; ++q) am = FMT == 0 ? max(am, ws[q] & 0x7FFFFFFFu) : __vmaxu2(am, ws[q] & 0x7FFF7FFFu);
            }
            if (FMT != 0) am = max(am & 0xFFFFu, am >> 16);
            am = max(am, __shfl_xor_sync(FULL, am, 1));
            am = max(am, __shfl_xor_sync(FULL, am, 2));
            finite &= am < (FMT == 0 ? 0x7F800000u : FMT == 1 ? 0x7C00u : 0x7F80u);
            const float m = FMT == 0 ? __uint_as_float(am) : FMT == 1 ? half_to_float((unsigned short)am)
                                                                      : __uint_as_float(am << 16);
            const float r = 1.0f / fmaxf(m, FLOOR);
            #pragma unroll
            for (int c = 0; c < NC; ++c) {
                const unsigned int ws[4] = {w[it][c].x, w[it][c].y, w[it][c].z, w[it][c].w};
                unsigned int packed = 0;
                #pragma unroll
                for (int q = 0; q < (FMT == 0 ? 2 : 4); ++q) {  // output byte q: values 2q (high nibble), 2q + 1
                    float v0, v1;
                    if (FMT == 0) { v0 = __uint_as_float(ws[2 * q]); v1 = __uint_as_float(ws[2 * q + 1]); }
                    else if (FMT == 1) { v0 = half_to_float((unsigned short)(ws[q] & 0xFFFFu)); v1 = half_to_float((unsigned short)(ws[q] >> 16)); }
                    else { v0 = __uint_as_float(ws[q] << 16); v1 = __uint_as_float(ws[q] & 0xFFFF0000u); }
                    const unsigned int byte = (lut_code<NEXT>(v0 * r, lut, shift, mask) << 4) | lut_code<NEXT>(v1 * r, lut, shift, mask);
                    packed |= byte << (8 * q);
                }
                if (valid) {
                    if (FMT == 0) ((unsigned short*)out)[b * 16 + j + 4 * c] = (unsigned short)packed;
                    else ((unsigned int*)out)[b * 8 + j + 4 * c] = packed;
                }
            }
            if (j == 0 && valid) {
                absmax[b] = m;
                if (SUMS && SUMS_DIAG != 1 && m != 0.0f && finite) sum_absmax(m, base, acc, bins);  // no bin for inf
            }
        }
    }
    if (!__all_sync(FULL, finite) && lane == 0 && a.bad) { *(volatile int*)a.bad = 1; __threadfence_system(); }
    fused_stamp_cta(1);
    if (SUMS && SUMS_DIAG != 2) {
        cta_sums(base, acc, bins, a.sums);
        // MODE 2: the fused kernel's grid barrier, or the kernel's end, orders the sums before anyone reads them
        if (MODE == 1) last_cta_offset(a.sums, a.done, a.n_absmax, a.offset);
    }
    if (MODE != 1) signal_end(a.done, a.fin);  // after the flag's write and (MODE 2) the sums
    if (MODE == 0) write_stamps(a.out);
}

// ---- Fused double quantization: one cooperative launch (every CTA resident) ----
// Phase 1 is quant_lut with the sums; the grid barrier after it signals its end (q.fin: the non-finite flag
// is final then). Then every CTA computes the same offset from the sums, the grid quantizes absmax - offset
// (blocks of 256, the log-scale table) and the CTA that counts itself last clears the sums (release_sums).
struct FusedArgs {
    LutArgs q; const uint2* lut2; int lut2_size, shift2, low2, high2;
    unsigned char* qabsmax; float* absmax2; float* offset_copy; unsigned int* bar;
};
static_assert(sizeof(FusedArgs) == 160, "FusedArgs: layout of backends/cuda_launch.FUSED_ARGS");

// BAR_RELEASE 1: the add with acquire-release semantics and the poll an acquire load (PTX's memory model);
// 0: a full fence before the add and after the wait.
__device__ __forceinline__ unsigned int barrier_add(unsigned int* word, unsigned int add) {
    unsigned int old;
#if BAR_RELEASE
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(word), "r"(add) : "memory");
#else
    __threadfence();
    old = atomicAdd(word, add);
#endif
    return old;
}

__device__ __forceinline__ unsigned int barrier_poll(const unsigned int* word) {
    unsigned int now;
#if BAR_RELEASE
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(word) : "memory");
#else
    now = *(const volatile unsigned int*)word;
#endif
    return now;
}

// A grid barrier of one word that is never reset (the scheme of CUDA's cooperative groups): CTA 0 adds
// 2^31 - (G - 1), every other CTA 1, so the word's top bit flips when the last of the G CTAs arrives and at no
// other add (its low bits start and end at 0); a waiting CTA polls for the flip. One atomic lies between the
// last arrival and the release (a counter reset by the last CTA and a generation word took a read, the
// atomic, the reset, a fence and a second atomic: 0.7-0.8 us more at 4096 x 4096 on an H200). fin (not
// null): the CTA whose add flipped the bit then signals the grid's end so far to the host, as signal_end
// would (the thread that set the non-finite flag fenced it at system scope before its CTA arrived). wait
// false: the CTA arrives and goes on without waiting.
__device__ void grid_sync(unsigned int* word, int* fin, bool wait) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned int add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
        const unsigned int old = barrier_add(word, add);
        fused_stamp(4);
        if ((old ^ (old + add)) & 0x80000000u) {
            if (fin) *(volatile int*)fin = 1;
        } else if (wait) {
            while (!((old ^ barrier_poll(word)) & 0x80000000u)) __nanosleep(32);
        }
        if (!BAR_RELEASE) __threadfence();
        fused_stamp(5);
    }
    __syncthreads();
}

template <int FMT, bool NEXT>
__device__ __forceinline__ void quant_lut_dq(const FusedArgs f) {
    LutArgs q = f.q;
    q.fin = nullptr;  // the barrier signals the first level's end: one count of the CTAs, not two
    const long long n = f.q.n_absmax, nblocks = (n + 255) / 256;
    // FUSED_EARLY: a CTA of the second level counts for the sums' release as its offset is known (second_level's
    // EARLY), so that the count's round trip runs while it quantizes (not with the diagnostic absmax offset)
    constexpr bool EARLY = FUSED_EARLY && FUSED_DIAG != 3;
    // FUSED_EXIT: a CTA without a block of the second level arrives and leaves (its count for release_sums
    // comes before the last reader's, which counts after its blocks)
    const bool works = !FUSED_EXIT || (long long)blockIdx.x * (blockDim.x >> 5) < nblocks;
    // FUSED_LUT2: the second level's table in shared memory after the first level's table and bins, copied as
    // the kernel starts (quant_lut's barrier orders the copy); 0: read in place through L1
    extern __shared__ uint2 smem[];
    uint2* lut2 = smem + f.q.lut_size + 277;
    if (FUSED_LUT2 && works)
        for (int k = threadIdx.x; k < f.lut2_size; k += blockDim.x) lut2[k] = f.lut2[k];
    quant_lut<FMT, 2, NEXT, FUSED_SLOT_MAJOR>(q);
    // FUSED_DIAG (diagnostics only, wrong results): 1 stops after the barrier; 2 after each CTA's offset; 3 takes
    // an absmax for the offset instead of the sums; 4 does not wait at the barrier
    grid_sync(f.bar, f.q.fin, works && FUSED_DIAG != 4);
    bool counted = false;  // whether the CTA has counted for the sums' release (EARLY, in second_level)
    if (works && FUSED_DIAG == 2) {
        const float offset = dq2_offset(f.q.sums, nullptr, n);
        if (threadIdx.x == 0 && blockIdx.x == 0) *f.offset_copy = offset;
    } else if (works && FUSED_DIAG != 1) {
        second_level<1, FUSED_LUT2 == 0, EARLY>(f.q.absmax, n, FUSED_DIAG == 3 ? nullptr : f.q.sums, f.q.absmax,
                                                f.offset_copy, FUSED_LUT2 ? lut2 : f.lut2, f.shift2, f.low2, f.high2,
                                                f.qabsmax, f.absmax2);
        counted = EARLY;
    }
    // every CTA counts once, after its last read of the sums (EARLY: the second level's CTAs as their offset is
    // known, inside second_level); the last clears them for the next call (on every path, the diagnostics' too)
    if (threadIdx.x < 32 && !counted) release_sums(f.q.sums);
    write_stamps(f.q.out);
}
