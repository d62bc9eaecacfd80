/*
 * AVX2 + FMA GEMM micro-kernel: a 6 x 16 tile held in 12 ymm
 * accumulators, one broadcast of A against two vectors of B per row.
 */
#include "arch/dispatch.h"

#include <immintrin.h>

#define MR 6
#define NR 16

/*
 * c_row = relu?(alpha * acc + beta * c_row + bias) for the lanes of one
 * 8-wide half that `mask` selects (all bits of a lane set); the others
 * are neither read nor written.
 */
static inline void bp_epilogue8(float *c, __m256i mask, __m256 acc,
                                __m256 alpha, float beta, const float *bias,
                                int relu)
{
    __m256 v = _mm256_mul_ps(alpha, acc);

    if (beta != 0.0f)
        v = _mm256_fmadd_ps(_mm256_set1_ps(beta),
                            _mm256_maskload_ps(c, mask), v);
    if (bias != NULL)
        v = _mm256_add_ps(v, _mm256_maskload_ps(bias, mask));
    if (relu)
        v = _mm256_max_ps(_mm256_setzero_ps(), v);
    _mm256_maskstore_ps(c, mask, v);
}

/*
 * The first `rows` rows and `cols` columns of a tile; `rows` is a
 * constant in every caller, so each row count gets its own fully unrolled
 * copy.
 *   c     rows x cols, leading dimension ldc
 *   a     element (i, p) at a[i * a_rs + p * a_cs]
 *   b     kc x NR: packed (ldb = NR) or rows of B in place (ldb >= NR)
 *   bias  NR or NULL
 */
static inline __attribute__((always_inline)) void
bp_gemm_rows_avx2(float *c, int64_t ldc, const float *a, int64_t a_rs,
                  int64_t a_cs, const float *b, int64_t ldb, float alpha,
                  float beta, const float *bias, int relu, int64_t kc,
                  const int rows, int cols)
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
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
    __m256i hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane);

#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * ldc;

        bp_epilogue8(ci, lo, acc[i][0], va, beta, bias, relu);
        if (cols > 8)
            bp_epilogue8(ci + 8, hi, acc[i][1], va, beta,
                         bias != NULL ? bias + 8 : NULL, relu);
    }
}

/* A tile of 1 to MR rows: dispatches to the copy for that count. */
static void bp_gemm_micro_avx2(float *c, int64_t ldc, const float *a,
                               int64_t a_rs, int64_t a_cs, const float *b,
                               int64_t ldb, float alpha, float beta,
                               const float *bias, int relu, int64_t kc,
                               int rows, int cols)
{
    switch (rows) {
    case 1:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 1, cols);
        break;
    case 2:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 2, cols);
        break;
    case 3:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 3, cols);
        break;
    case 4:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 4, cols);
        break;
    case 5:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 5, cols);
        break;
    case 6:
        bp_gemm_rows_avx2(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                          relu, kc, 6, cols);
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
    .gemm_b_cols_only = 0,
    .gemm_micro = bp_gemm_micro_avx2,
    .shifted_exps = bp_shifted_exps_avx2,
    .cross_entropy_rows = bp_cross_entropy_rows_avx2,
    .column_sums = bp_column_sums_avx2,
    .sgd_momentum = bp_sgd_momentum_avx2,
};
