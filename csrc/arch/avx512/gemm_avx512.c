/*
 * AVX-512 GEMM micro-kernel: a 12 x 32 tile held in 24 zmm accumulators,
 * one broadcast of A against two vectors of B per row. A tile of at most
 * 16 columns (a layer of a few outputs) uses one vector of B and half
 * the accumulators. B is read with masked loads, so columns past `cols`
 * are never touched and an edge panel of B can be read in place.
 */
#include "arch/dispatch.h"

#include <immintrin.h>

#define MR 12
#define NR 32

/*
 * c_row = relu?(alpha * acc + beta * c_row + bias) for the lanes of one
 * 16-wide half that `mask` selects; the others are neither read nor
 * written.
 */
static inline void bp_epilogue16(float *c, __mmask16 mask, __m512 acc,
                                 __m512 alpha, float beta,
                                 const float *bias, int relu)
{
    __m512 v = _mm512_mul_ps(alpha, acc);

    if (beta != 0.0f)
        v = _mm512_fmadd_ps(_mm512_set1_ps(beta),
                            _mm512_maskz_loadu_ps(mask, c), v);
    if (bias != NULL)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias));
    if (relu)
        v = _mm512_max_ps(_mm512_setzero_ps(), v);
    _mm512_mask_storeu_ps(c, mask, v);
}

/*
 * The first `rows` rows and `cols` columns of a tile; `rows` and `wide`
 * (cols > 16) are constants in every caller, so each gets its own fully
 * unrolled copy.
 *   c     rows x cols, leading dimension ldc
 *   a     element (i, p) at a[i * a_rs + p * a_cs]
 *   b     kc x cols: packed (ldb = NR) or rows of B in place (ldb >= cols)
 *   bias  cols values or NULL
 */
static inline __attribute__((always_inline)) void
bp_gemm_rows_avx512(float *c, int64_t ldc, const float *a, int64_t a_rs,
                    int64_t a_cs, const float *b, int64_t ldb, float alpha,
                    float beta, const float *bias, int relu, int64_t kc,
                    const int rows, const int wide, int cols)
{
    __m512 acc[MR][2];
    __mmask16 lo = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 hi = cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;

#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }

    /* C is needed only after the loop: start fetching it now. */
#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }

    /* NOTE: a zero-masked load costs what a plain load does. */
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0 = wide ? _mm512_loadu_ps(b + p * ldb)
                         : _mm512_maskz_loadu_ps(lo, b + p * ldb);
        __m512 b1 = wide ? _mm512_maskz_loadu_ps(hi, b + p * ldb + 16)
                         : _mm512_setzero_ps();

#pragma GCC unroll 12
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i * a_rs + p * a_cs]);

            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (wide)
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }

    __m512 va = _mm512_set1_ps(alpha);

#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * ldc;

        bp_epilogue16(ci, lo, acc[i][0], va, beta, bias, relu);
        if (wide)
            bp_epilogue16(ci + 16, hi, acc[i][1], va, beta,
                          bias != NULL ? bias + 16 : NULL, relu);
    }
}

/* A tile of 1 to MR rows: dispatches to the copy for that count. */
static inline __attribute__((always_inline)) void
bp_gemm_tile_avx512(float *c, int64_t ldc, const float *a, int64_t a_rs,
                    int64_t a_cs, const float *b, int64_t ldb, float alpha,
                    float beta, const float *bias, int relu, int64_t kc,
                    int rows, const int wide, int cols)
{
    switch (rows) {
    case 1:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 1, wide, cols);
        break;
    case 2:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 2, wide, cols);
        break;
    case 3:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 3, wide, cols);
        break;
    case 4:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 4, wide, cols);
        break;
    case 5:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 5, wide, cols);
        break;
    case 6:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 6, wide, cols);
        break;
    case 7:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 7, wide, cols);
        break;
    case 8:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 8, wide, cols);
        break;
    case 9:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 9, wide, cols);
        break;
    case 10:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 10, wide, cols);
        break;
    case 11:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 11, wide, cols);
        break;
    case 12:
        bp_gemm_rows_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, 12, wide, cols);
        break;
    }
}

static void bp_gemm_micro_avx512(float *c, int64_t ldc, const float *a,
                                 int64_t a_rs, int64_t a_cs, const float *b,
                                 int64_t ldb, float alpha, float beta,
                                 const float *bias, int relu, int64_t kc,
                                 int rows, int cols)
{
    if (cols > 16)
        bp_gemm_tile_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, rows, 1, cols);
    else
        bp_gemm_tile_avx512(c, ldc, a, a_rs, a_cs, b, ldb, alpha, beta, bias,
                            relu, kc, rows, 0, cols);
}

const bp_kernels bp_kernels_avx512 = {
    .level = BP_SIMD_AVX512,
    .gemm_mr = MR,
    .gemm_nr = NR,
    .gemm_kc = 256,
    .gemm_mc = 144,
    .gemm_nc = 4096,
    .gemm_b_cols_only = 1,
    .gemm_micro = bp_gemm_micro_avx512,
    .shifted_exps = bp_shifted_exps_avx512,
    .cross_entropy_rows = bp_cross_entropy_rows_avx512,
    .column_sums = bp_column_sums_avx512,
    .sgd_momentum = bp_sgd_momentum_avx512,
};
