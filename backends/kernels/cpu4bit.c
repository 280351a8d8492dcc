/* qref's 4-bit kernels for the torch:cpu backend, compiled at first use by the system C compiler
   (backends/cpu_kernels.py). Plain IEEE float32 arithmetic, compiled without -ffast-math and with
   -ffp-contract=off: each product, reciprocal and comparison is the one qref/blockwise.py states,
   so codes, absmax and values are the reference's bits. Each function handles a range of blocks;
   the caller splits the blocks among its threads. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK 256

static inline float from_f32_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Whole blocks [b0, b1) of x (blocksize values per block, float32 or bfloat16 bits U, widened exactly
   to float32 as read): absmax = max |w| (NaN where the block holds a NaN, so that the caller refuses
   non-finite input on it); scaled = clamp(w * RN(1 / max(absmax, floor)), -1, 1);
   code = order[#{j < nmid : scaled > mid[j]}] (the count of midpoints below, one comparison per
   midpoint, vectorised over the elements of a chunk). |w| as bits (sign cleared, MASK) orders like
   the value, and every NaN lies above +inf: an integer max is max |w|, carrying any NaN or Inf.
   packed (blocksize even): the codes two per byte, the first in the high nibble (quantize_4bit's
   packing), at codes + b * blocksize / 2; else one per byte at codes + b * blocksize. */
#define CODES4(name, U, MASK, SHIFT)                                                                     \
    void name(const U *x, int64_t b0, int64_t b1, int64_t blocksize, const float *mid,                 \
              const uint8_t *order, int nmid, float floor_, uint8_t *codes, float *absmax, int packed) { \
        int ident = 1; /* codes in value order (NF4): the count is the code, no lookup */                \
        for (int j = 0; j <= nmid; j++) ident &= order[j] == j;                                          \
        for (int64_t b = b0; b < b1; b++) {                                                              \
            const U *w = x + b * blocksize;                                                              \
            uint8_t *c = codes + (packed ? b * (blocksize / 2) : b * blocksize);                         \
            U top = 0;                                                                                   \
            for (int64_t i = 0; i < blocksize; i++) {                                                    \
                const U a = (U)(w[i] & MASK);                                                            \
                top = a > top ? a : top;                                                                 \
            }                                                                                            \
            const float m = from_f32_bits((uint32_t)top << SHIFT);                                       \
            absmax[b] = m;                                                                               \
            if (m != m) continue; /* refused by the caller */                                            \
            const float inv = 1.0f / (m > floor_ ? m : floor_);                                          \
            for (int64_t i0 = 0; i0 < blocksize; i0 += CHUNK) {                                          \
                const int64_t len = blocksize - i0 < CHUNK ? blocksize - i0 : CHUNK;                     \
                float s[CHUNK];                                                                          \
                uint8_t k[CHUNK];                                                                        \
                for (int64_t i = 0; i < len; i++) {                                                      \
                    const float v = from_f32_bits((uint32_t)w[i0 + i] << SHIFT) * inv;                   \
                    s[i] = v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v);                                    \
                    k[i] = 0;                                                                            \
                }                                                                                        \
                for (int j = 0; j < nmid; j++) /* j outer, i inner: a vector comparison per midpoint */  \
                    for (int64_t i = 0; i < len; i++) k[i] += s[i] > mid[j];                             \
                if (packed && ident) /* len is even: blocksize is, and CHUNK */                         \
                    for (int64_t i = 0; i < len / 2; i++)                                                \
                        c[i0 / 2 + i] = (uint8_t)(k[2 * i] << 4 | k[2 * i + 1]);                         \
                else if (packed)                                                                         \
                    for (int64_t i = 0; i < len; i += 2)                                                 \
                        c[(i0 + i) / 2] = (uint8_t)(order[k[i]] << 4 | order[k[i + 1]]);                 \
                else                                                                                     \
                    for (int64_t i = 0; i < len; i++) c[i0 + i] = order[k[i]];                           \
            }                                                                                            \
        }                                                                                                \
    }

CODES4(qref_codes4, uint32_t, 0x7fffffffu, 0)
CODES4(qref_codes4_bf16, uint16_t, 0x7fffu, 16)

/* finite float32 -> bfloat16 bits, to nearest with ties to even (qref/dtypes.py's float32_to_bf16_bits;
   no NaN arises: the caller refuses a non-finite absmax, and |value| <= 1). */
static inline uint16_t bf16_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline uint32_t f32_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static inline float f32_value(float v) { return v; }

/* Values [v0, v1) of codes packed two per byte, high nibble first: out[i] = value[code i] *
   absmax[i / blocksize], one float32 product, stored as T (BITS of a value; ONE for a lone value). A
   byte's two values are written as one word W of two T (element i in the low half: little-endian
   x86-64). values: the 16 codes' values. v0 is a block edge and blocksize is even, so a byte's two
   codes lie in one block; v1 may be an odd n, whose last byte holds one code (its high nibble). */
#define DEQUANT4(name, T, W, BITS, ONE)                                                                 \
    void name(const uint8_t *restrict packed, const float *restrict absmax, const float *restrict values, \
              int64_t blocksize, int64_t v0, int64_t v1, T *restrict out) {                              \
        float t[16];                                                                                     \
        for (int k = 0; k < 16; k++) t[k] = values[k];                                                   \
        for (int64_t start = v0; start < v1; start += blocksize) {                                       \
            const int64_t end = start + blocksize < v1 ? start + blocksize : v1;                         \
            const float a = absmax[start / blocksize];                                                   \
            const uint8_t *p = packed + (start >> 1);                                                    \
            W *o = (W *)(out + start);                                                                   \
            const int64_t bytes = (end - start) >> 1;                                                    \
            for (int64_t j = 0; j < bytes; j++)                                                          \
                o[j] = (W)BITS(t[p[j] >> 4] * a) | ((W)BITS(t[p[j] & 15] * a) << (4 * sizeof(W)));      \
            if ((end - start) & 1) out[end - 1] = ONE(t[p[bytes] >> 4] * a);                             \
        }                                                                                                \
    }

DEQUANT4(qref_dequant4, float, uint64_t, f32_bits, f32_value)
/* rounded to bfloat16: the float32 product, then to nearest even */
DEQUANT4(qref_dequant4_bf16, uint16_t, uint32_t, bf16_bits, bf16_bits)

/* Ask for transparent huge pages on the 2 MiB-aligned interior of a fresh output before it is first
   written: the kernel then faults in 2 MiB pages instead of 4 KiB ones (a hint; no effect on values). */
void qref_huge_pages(void *out, int64_t bytes) {
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t lo = ((uintptr_t)out + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)out + (uintptr_t)bytes) & ~(huge - 1);
#ifdef MADV_HUGEPAGE
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#endif
}

#ifdef _OPENMP
#include <omp.h>

/* The same kernels over a whole range on the OpenMP runtime the library is linked with (torch's own,
   where cpu_kernels.py finds it shared: its intra-op threads, with no second pool competing for the
   cores): `threads` pieces, each [lo, hi) a multiple of `step` long but the last, as cpu_kernels._split. */
#define PIECE(count, step)                                                                                \
    const int64_t units_ = ((count) + (step) - 1) / (step);                                               \
    const int64_t per_ = (units_ + omp_get_num_threads() - 1) / omp_get_num_threads();                    \
    const int64_t lo = omp_get_thread_num() * per_ * (step);                                              \
    const int64_t hi = lo + per_ * (step) < (count) ? lo + per_ * (step) : (count);

#define CODES4_OMP(name, kernel, U)                                                                      \
    void name(const U *x, int64_t full, int64_t blocksize, const float *mid, const uint8_t *order,       \
              int nmid, float floor_, uint8_t *codes, float *absmax, int packed, int threads) {          \
        _Pragma("omp parallel num_threads(threads)") {                                                   \
            PIECE(full, 1)                                                                                \
            if (lo < hi) kernel(x, lo, hi, blocksize, mid, order, nmid, floor_, codes, absmax, packed);   \
        }                                                                                                \
    }

#define DEQUANT4_OMP(name, kernel, T)                                                                    \
    void name(const uint8_t *packed, const float *absmax, const float *values, int64_t blocksize,        \
              int64_t n, T *out, int threads) {                                                          \
        _Pragma("omp parallel num_threads(threads)") {                                                   \
            PIECE(n, blocksize)                                                                           \
            if (lo < hi) kernel(packed, absmax, values, blocksize, lo, hi, out);                          \
        }                                                                                                \
    }

CODES4_OMP(qref_codes4_omp, qref_codes4, uint32_t)
CODES4_OMP(qref_codes4_bf16_omp, qref_codes4_bf16, uint16_t)
DEQUANT4_OMP(qref_dequant4_omp, qref_dequant4, float)
DEQUANT4_OMP(qref_dequant4_bf16_omp, qref_dequant4_bf16, uint16_t)
#endif
