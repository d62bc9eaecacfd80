/*
 * AVX2 + FMA GEMM micro-kernel: a 6 x 16 tile held in 12 ymm
 * accumulators, one broadcast of A against two vectors of B per row.
 */
#include "arch/dispatch.h"

#include <immintrin.h>

#define MR 6
#define NR 16

/* c_row = relu?(alpha * acc + beta * c_row + bias) for one 8-wide half. */
static inline __m256 bp_epilogue8(__m256 acc, const float *c, __m256 alpha,
                                  float beta, const float *bias, int relu)
{
    __m256 v = _mm256_mul_ps(alpha, acc);

    if (beta != 0.0f)
        v = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(c), v);
    if (bias != NULL)
        v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
    if (relu)
        v = _mm256_max_ps(_mm256_setzero_ps(), v);
    return v;
}

/*
 * The first `rows` rows of a tile; `rows` is a constant in every caller,
 * so each row count gets its own fully unrolled copy.
 *   c     rows x NR, leading dimension ldc
 *   a     element (i, p) at a[i * a_rs + p * a_cs]
 *   b     kc x NR: packed (ldb = NR) or rows of B in place (ldb >= NR)
 *   bias  NR or NULL
 */
static inline __attribute__((always_inline)) void
bp_gemm_rows_avx2(float *c, int64_t ldc, const float *a, int64_t a_rs,
                  int64_t a_cs, const float *b, int64_t ldb, float alpha,
                  float beta, const float *bias, int relu, int64_t kc,
                  const int rows)
{
    __m256 acc[MR][2];

#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }

    /* C is needed only after the loop: start fetching it now. */
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b + p * ldb);
        __m256 b1 = _mm256_loadu_ps(b + p * ldb + 8);

#pragma GCC unroll 6
        for (int i = 0; i < rows; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * a_rs + p * a_cs);

            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }

    __m256 va = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * ldc;

        _mm256_storeu_ps(ci, bp_epilogue8(acc[i][0], ci, va, beta, bias,
                                          relu));
        _mm256_storeu_ps(ci + 8, bp_epilogue8(acc[i][1], ci + 8, va, beta,
                                              bias ? bias + 8 : NULL, relu));
    }
}

/* A tile of 1 to MR rows: dispatches to the copy for that count. */
static void bp_gemm_micro_avx2(float *c, int64_t ldc, const float *a,
                               int64_t a_rs, int64_t a_cs, const float *b,
                               int64_t ldb, float alpha, float beta,
                               const float *bias, int relu, int64_t kc,
                               int rows)
{
    switch (rows) {
    case 1:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 1);
        break;
    case 2:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 2);
        break;
    case 3:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 3);
        break;
    case 4:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 4);
        break;
    case 5:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 5);
        break;
    case 6:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 6);
        break;
    }
}

const bp_kernels bp_kernels_avx2 = {
    .level = BP_SIMD_AVX2,
    .gemm_mr = MR,
    .gemm_nr = NR,
    .gemm_kc = 256,
    .gemm_mc = 144,
    .gemm_nc = 4096,
    .gemm_micro = bp_gemm_micro_avx2,
};
