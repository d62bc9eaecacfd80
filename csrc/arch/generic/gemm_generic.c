/*
 * Portable GEMM micro-kernel: plain C11 with fixed loop bounds, which
 * compilers keep in registers and vectorise for the baseline ISA (SSE2
 * on x86-64, NEON on AArch64).
 */
#include "arch/dispatch.h"

#define MR 4
#define NR 8

/*
 *   c     rows x cols (at most MR x NR), leading dimension ldc
 *   a     element (i, p) at a[i * a_rs + p * a_cs]
 *   b     kc x NR: packed (ldb = NR) or rows of B in place (ldb >= NR)
 *   bias  NR or NULL
 */
static void bp_gemm_micro_generic(float *c, int64_t ldc, const float *a,
                                  int64_t a_rs, int64_t a_cs,
                                  const float *b, int64_t ldb,
                                  float alpha, float beta,
                                  const float *bias, int relu, int64_t kc,
                                  int rows, int cols)
{
    float acc[MR][NR] = {{0.0f}};

    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;

        for (int i = 0; i < rows; i++) {
            float ai = a[i * a_rs + p * a_cs];

            for (int j = 0; j < NR; j++)
                acc[i][j] += ai * bp[j];
        }
    }

    for (int i = 0; i < rows; i++) {
        float *ci = c + i * ldc;
        float row[NR];

        for (int j = 0; j < NR; j++)
            row[j] = alpha * acc[i][j];
        if (beta != 0.0f)
            for (int j = 0; j < cols; j++)
                row[j] += beta * ci[j];
        if (bias != NULL)
            for (int j = 0; j < cols; j++)
                row[j] += bias[j];
        /* Written so that NaN passes through, as max(0, x) does in SIMD. */
        if (relu)
            for (int j = 0; j < NR; j++)
                row[j] = row[j] < 0.0f ? 0.0f : row[j];
        for (int j = 0; j < cols; j++)
            ci[j] = row[j];
    }
}

const bp_kernels bp_kernels_generic = {
    .level = BP_SIMD_GENERIC,
    .gemm_mr = MR,
    .gemm_nr = NR,
    .gemm_kc = 256,
    .gemm_mc = 128,
    .gemm_nc = 4096,
    .gemm_b_cols_only = 0,
    .gemm_micro = bp_gemm_micro_generic,
    .shifted_exps = bp_shifted_exps_generic,
    .cross_entropy_rows = bp_cross_entropy_rows_generic,
    .column_sums = bp_column_sums_generic,
    .sgd_momentum = bp_sgd_momentum_generic,
};
