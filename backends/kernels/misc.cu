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
// to float32: the reference's RN_f32(RN_f64(RN_f64(exact sum) / n)).
__device__ __forceinline__ void limb_add(unsigned long long* limb, int q, unsigned long long v) {
    for (; q < 6 && v; ++q) { unsigned long long t = limb[q] + v; v = t < v; limb[q] = t; }
}

__device__ float total_to_offset(const unsigned long long* limb, long long n) {
    int top = 5;
    while (top >= 0 && limb[top] == 0) --top;
    if (top < 0) return 0.0f;
    int lz = __clzll(limb[top]);
    int msb = 64 * top + 63 - lz;
    unsigned long long hi = limb[top] << lz;  // the 64 bits below and at the leading one
    bool sticky = false;
    if (top > 0) {
        if (lz) hi |= limb[top - 1] >> (64 - lz);
        sticky = (limb[top - 1] << lz) != 0;
        for (int q = top - 2; q >= 0; --q) sticky |= limb[q] != 0;
    }
    unsigned long long mant = hi >> 11, rest = hi & 0x7FFull;
    mant += rest > 0x400ull || (rest == 0x400ull && (sticky || (mant & 1ull)));
    double total = ldexp((double)mant, msb - 52 - 172);
    return __double2float_rn(total / (double)n);
}

// Called by one whole warp: the nonzero bins found by ballot, added by lane 0, which returns the offset.
__device__ float offset_value_warp(const unsigned long long* sums, long long n) {
    const int lane = threadIdx.x & 31;
    unsigned long long limb[6] = {0, 0, 0, 0, 0, 0}, v[9];
    #pragma unroll
    for (int r = 0; r < 9; ++r) v[r] = 32 * r + lane < 277 ? __ldcg(sums + 32 * r + lane) : 0ull;  // all loads first
    #pragma unroll
    for (int r = 0; r < 9; ++r) {
        unsigned int nz = __ballot_sync(FULL, v[r] != 0ull);
        while (nz) {
            int src = __ffs(nz) - 1;
            nz &= nz - 1;
            unsigned long long s = __shfl_sync(FULL, v[r], src);
            int i = 32 * r + src, sh = i & 63;
            if (lane == 0) {
                limb_add(limb, i >> 6, s << sh);
                if (sh) limb_add(limb, (i >> 6) + 1, s >> (64 - sh));
            }
        }
    }
    return lane == 0 ? total_to_offset(limb, n) : 0.0f;
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
