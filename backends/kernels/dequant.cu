// Blockwise dequantization (qref/blockwise.py, qref/double_quant.py): table[code] * absmax in float32,
// absmax plain or double-quantized as dyn[q] * absmax2 + offset (two roundings), the product rounded to
// the output format to nearest even. offset_p: a device scalar (the fused quantize's), or null for offset.

__device__ __forceinline__ float block_scale(long long b, const float* absmax, const unsigned char* qabsmax,
                                             const float* absmax2, const float* dyn, float offset, int B2) {
    if (qabsmax == 0) return absmax[b];
    return dyn[qabsmax[b]] * absmax2[(B2 & (B2 - 1)) == 0 ? b >> (__ffs(B2) - 1) : b / B2] + offset;
}

// Any block size: one thread per byte (PACK: two codes, the first in the high nibble) or per code.
template <int OUT, bool PACK>
__device__ void dequant_blocks(const unsigned char* codes, long long n, int B, const float* table,
                               const float* absmax, const unsigned char* qabsmax, const float* absmax2,
                               const float* dyn, float offset, const float* offset_p, int B2, void* out, int* bad) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (offset_p) offset = *offset_p;
    if (PACK) {
        long long i = 2 * t;
        if (i >= n) return;
        unsigned char byte = codes[t];
        float a = block_scale(i / B, absmax, qabsmax, absmax2, dyn, offset, B2);  // B even: one block
        if (!isfinite(a)) { if (bad) *(volatile int*)bad = 1; }
        store<OUT>(out, i, table[byte >> 4] * a);
        if (i + 1 < n) store<OUT>(out, i + 1, table[byte & 15] * a);
    } else {
        if (t >= n) return;
        float a = block_scale(t / B, absmax, qabsmax, absmax2, dyn, offset, B2);
        if (!isfinite(a)) { if (bad) *(volatile int*)bad = 1; }
        store<OUT>(out, t, table[codes[t]] * a);
    }
}

#if DQ_STREAM  // streaming (evict-first) loads and stores: the outputs are not read again by this kernel
#define LOAD_CS(p) __ldcs(p)
#define STORE_CS(p, v) __stcs(p, v)
#else
#define LOAD_CS(p) (*(p))
#define STORE_CS(p, v) (*(p) = (v))
#endif

struct DequantArgs {  // one by-value kernel parameter (dequant8)
    const void* packed; long long n; int B; const float* table; const float* absmax; const unsigned char* qabsmax;
    const float* absmax2; const float* dyn; float offset; const float* offset_p; int B2; void* out; int* bad;
};
static_assert(sizeof(DequantArgs) == 104, "DequantArgs: layout of backends/cuda_launch.DEQUANT_ARGS");

// Packed codes, n % 8 == 0, B a power of two >= 8: a grid-stride loop (by default one step per thread,
// DQ_GRID in backends/cuda_kernels.py); each thread takes DQ_WORDS 32-bit
// words a step (each coalesced across the CTA), all loaded before any is used; 8 outputs per word in one
// 16-byte (32 for float32) store.
template <int OUT>
__device__ void dequant8(const unsigned int* __restrict__ packed, long long n, int B, const float* table_g,
                         const float* __restrict__ absmax, const unsigned char* __restrict__ qabsmax,
                         const float* __restrict__ absmax2, const float* __restrict__ dyn, float offset,
                         const float* offset_p, int B2, void* __restrict__ out, int* bad) {
    __shared__ float table[16];
    if (threadIdx.x < 16) table[threadIdx.x] = table_g[threadIdx.x];
    __syncthreads();
    if (offset_p) offset = *offset_p;
    const int lb = __ffs(B) - 1;
    const long long nwords = n >> 3, step = (long long)gridDim.x * DQ_WORDS * blockDim.x;
    bool finite = true;
    for (long long t0 = (long long)blockIdx.x * DQ_WORDS * blockDim.x + threadIdx.x; t0 < nwords; t0 += step) {
        unsigned int word[DQ_WORDS];
        float a[DQ_WORDS];
        #pragma unroll
        for (int w = 0; w < DQ_WORDS; ++w) {
            const long long t = t0 + (long long)w * blockDim.x;
            word[w] = t < nwords ? LOAD_CS(packed + t) : 0u;
            a[w] = t < nwords ? block_scale((8 * t) >> lb, absmax, qabsmax, absmax2, dyn, offset, B2) : 0.0f;
        }
        #pragma unroll
        for (int w = 0; w < DQ_WORDS; ++w) {
            const long long t = t0 + (long long)w * blockDim.x;
            if (t >= nwords) break;
            finite &= isfinite(a[w]);
            float v[8];
            #pragma unroll
            for (int k = 0; k < 4; ++k) {  // byte k of the word holds outputs 2k (high nibble) and 2k + 1
                unsigned int byte = (word[w] >> (8 * k)) & 0xFFu;
                v[2 * k] = table[byte >> 4] * a[w];
                v[2 * k + 1] = table[byte & 15u] * a[w];
            }
            if (OUT == 0) {
                float4* o = (float4*)out + 2 * t;
                STORE_CS(o, make_float4(v[0], v[1], v[2], v[3]));
                STORE_CS(o + 1, make_float4(v[4], v[5], v[6], v[7]));
            } else {
                STORE_CS((uint4*)out + t, make_uint4(pack2<OUT>(v[0], v[1]), pack2<OUT>(v[2], v[3]),
                                                     pack2<OUT>(v[4], v[5]), pack2<OUT>(v[6], v[7])));
            }
        }
    }
    if (!finite) { if (bad) *(volatile int*)bad = 1; }
}
