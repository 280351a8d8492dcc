// Shared by every qref CUDA kernel (compiled together by backends/cuda_kernels.py with --fmad=false and
// --ftz=false: every product and sum rounded once, subnormals kept, as in the reference).
// Formats: 0 float32, 1 float16, 2 bfloat16 (as its uint16 bits).
#define FLOOR 1e-38f
#define FULL 0xffffffffu

// The end of a grid, for the host that waits for it (cuda_memory.Flag.wait_end): each CTA counts itself at
// `count` (device memory, left 0 for the next grid); the CTA that counts last writes 1 to `fin` (mapped
// pinned memory the host polls). The thread that sets the non-finite flag fences it at system scope before
// its CTA's barrier here, so the flag is visible before its CTA counts, hence before fin: a host that sees
// fin sees the flag. No other write needs ordering for the host (the state's arrays are read in stream
// order, after the kernel). fin null: no signal (the host waits on the stream).
__device__ __forceinline__ void signal_end(unsigned int* count, int* fin) {
    if (!fin) return;
    __syncthreads();
    if (threadIdx.x == 0 && atomicAdd(count, 1u) == gridDim.x - 1) {
        *(volatile unsigned int*)count = 0;
        *(volatile int*)fin = 1;
    }
}

// FUSED_TIMES (diagnostics only, wrong codes; asv_bench/fused_times.py): the one launch's CTAs stamp the
// global timer (ns) at its stages into shared memory and write the stamps over the first codes at the end.
#define FUSED_STAMPS 16
__shared__ unsigned long long fused_times[FUSED_STAMPS];
__device__ __forceinline__ void fused_stamp(int k) {
#if FUSED_TIMES
    if (threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (k == 0) {
            for (int i = 1; i < FUSED_STAMPS; ++i) fused_times[i] = 0;  // a stage a CTA does not reach stays 0
            unsigned int sm;
            asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
            fused_times[FUSED_STAMPS - 1] = sm;  // the last word: the CTA's multiprocessor
        }
        fused_times[k] = t;
    }
#endif
}

// FUSED_TIMES: stage k's stamp once every thread of the CTA has reached it (a CTA barrier, only when stamping).
__device__ __forceinline__ void fused_stamp_cta(int k) {
#if FUSED_TIMES
    __syncthreads();
    fused_stamp(k);
#endif
}

// FUSED_TIMES: each CTA's FUSED_STAMPS stamps (fused_stamp) over the first codes, by its thread 0, as it leaves.
__device__ __forceinline__ void write_stamps(unsigned char* out) {
#if FUSED_TIMES
    fused_stamp(8);
    if (threadIdx.x == 0)
        for (int k = 0; k < FUSED_STAMPS; ++k)
            ((unsigned long long*)out)[FUSED_STAMPS * blockIdx.x + k] = fused_times[k];
#endif
}

// Programmatic dependent launch (sm_90 on; no-ops before it, and in a grid launched without it): a grid
// launched with the driver's programmatic serialization may start once every CTA of the grid before it has
// called dependents_may_start (or ended); its grid_wait returns once that grid has ended and its writes are
// visible. What comes before grid_wait must not read what the grid before writes.
__device__ __forceinline__ void grid_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void dependents_may_start() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
// bfloat16 bits of f rounded to nearest even (finite f; NaN is never stored by these kernels)
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
// two values rounded to the 16-bit format and packed, a in the low half (one instruction on sm_80+)
template <int FMT> __device__ __forceinline__ unsigned int pack2(float a, float b) {
#if __CUDA_ARCH__ >= 800
    unsigned int r;
    if (FMT == 1) asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    return r;
#else
    if (FMT == 1) return float_to_half(a) | ((unsigned int)float_to_half(b) << 16);
    return float_to_bf16(a) | ((unsigned int)float_to_bf16(b) << 16);
#endif
}

template <int FMT> __device__ __forceinline__ float load(const void* p, long long i) {
    if (FMT == 0) return ((const float*)p)[i];
    if (FMT == 1) return half_to_float(((const unsigned short*)p)[i]);
    return __uint_as_float(((unsigned int)((const unsigned short*)p)[i]) << 16);
}

template <int FMT> __device__ __forceinline__ void store(void* p, long long i, float v) {
    if (FMT == 0) { ((float*)p)[i] = v; return; }
    ((unsigned short*)p)[i] = FMT == 1 ? float_to_half(v) : float_to_bf16(v);
}
