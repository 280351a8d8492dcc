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

// Integer significand sums per frexp exponent (qref.double_quant.exponent_sums), exact, added into sums.
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

// ---- The double-quantization offset on the device (qref.double_quant.offset_from_exponent_sums) ----
// total = sum_i sums[i] 2^i (units of 2^-172; sums[i] < 2^63, so total < 2^341: 6 limbs of 64 bits)
// rounded to 53 bits (nearest even, with a sticky bit), times 2^-172, divided by n in float64, rounded
// to float32: the reference's RN_f32(RN_f64(RN_f64(exact sum) / n)). Every index is a constant after
// unrolling, so the limbs stay in registers.
__device__ __forceinline__ float total_to_offset(const unsigned long long (&limb)[6], long long n) {
    int top = -1;
    unsigned long long t = 0, below = 0;  // the leading limb and the one under it
    bool sticky = false, any = false;      // any bit set in the limbs under those two; under limb q - 1
    #pragma unroll
    for (int q = 0; q < 6; ++q) {
        if (limb[q]) { top = q; t = limb[q]; below = q ? limb[q - 1] : 0ull; sticky = any; }
        if (q) any |= limb[q - 1] != 0;
    }
    if (top < 0) return 0.0f;
    const int lz = __clzll(t), msb = 64 * top + 63 - lz;
    unsigned long long hi = t << lz;  // the 64 bits at and below the leading one
    if (lz) hi |= below >> (64 - lz);
    sticky |= (below << lz) != 0;
    unsigned long long mant = hi >> 11, rest = hi & 0x7FFull;
    mant += rest > 0x400ull || (rest == 0x400ull && (sticky || (mant & 1ull)));
    const double total = ldexp((double)mant, msb - 52 - 172);  // exact: a power of two within the normal range
    return __double2float_rn(total / (double)n);
}

// Called by one whole warp; every lane returns the offset. The total as 32-bit digits: bin 32 r + lane adds
// v 2^lane times 2^(32 r), i.e. the low and high words of v << lane and the bits of v above 64 - lane to
// digits r, r + 1 and r + 2 (each lane's digit under 3 * 2^32); the warp's sum of each digit (under 2^39)
// then carried into 12 digits, 6 limbs. Cost: one round of loads and a few dozen warp reductions, whatever
// the number of bins in use.
__device__ float offset_value_warp(const unsigned long long* sums, long long n) {
    const int lane = threadIdx.x & 31;
    unsigned long long v[9], a[11];
    #pragma unroll
    for (int r = 0; r < 9; ++r) v[r] = 32 * r + lane < 277 ? __ldcg(sums + 32 * r + lane) : 0ull;  // all loads first
    #pragma unroll
    for (int p = 0; p < 11; ++p) a[p] = 0ull;
    #pragma unroll
    for (int r = 0; r < 9; ++r) {
        const unsigned long long lo = v[r] << lane, hi = lane ? v[r] >> (64 - lane) : 0ull;
        a[r] += lo & 0xFFFFFFFFull;
        a[r + 1] += lo >> 32;
        a[r + 2] += hi;
    }
    #pragma unroll
    for (int p = 0; p < 11; ++p) {
#if __CUDA_ARCH__ >= 800  // three 32-bit reductions of parts under 2^16 (sums under 2^21: none wraps)
        const unsigned int l = (unsigned int)a[p];
        a[p] = __reduce_add_sync(FULL, l & 0xFFFFu) + ((unsigned long long)__reduce_add_sync(FULL, l >> 16) << 16) +
               ((unsigned long long)__reduce_add_sync(FULL, (unsigned int)(a[p] >> 32)) << 32);
#else
        for (int o = 16; o > 0; o >>= 1) a[p] += __shfl_xor_sync(FULL, a[p], o);
#endif
    }
    unsigned long long limb[6], carry = 0;
    unsigned int d[12];
    #pragma unroll
    for (int p = 0; p < 11; ++p) { carry += a[p]; d[p] = (unsigned int)carry; carry >>= 32; }
    d[11] = (unsigned int)carry;
    #pragma unroll
    for (int q = 0; q < 6; ++q) limb[q] = d[2 * q] | (unsigned long long)d[2 * q + 1] << 32;
    return total_to_offset(limb, n);
}

// The offset written by lane 0; the sums and the finished-CTA counter (the word after them) left zero.
__device__ void offset_warp(const unsigned long long* sums, long long n, float* offset) {
    const float v = offset_value_warp(sums, n);
    if ((threadIdx.x & 31) == 0) *offset = v;
    clear_sums(const_cast<unsigned long long*>(sums));  // double_quant.cu
}

extern "C" __global__ void dq_offset(const unsigned long long* sums, long long n, float* offset) {
    if (threadIdx.x < 32) offset_warp(sums, n, offset);
}
