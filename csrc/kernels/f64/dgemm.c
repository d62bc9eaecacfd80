/*
 * Double-precision matrix multiply in portable C.
 *
 * Design decisions:
 * - Loops, outermost first: columns in blocks of NC, depth in blocks of
 *   KC, then rows in groups of MR, each group accumulating a KC x NC
 *   block of op(B) into its MR rows of C. The innermost loop runs along
 *   a row of B and of C, contiguous in both, so the compiler vectorises
 *   it at whatever width the baseline ISA has; the MR rows share each
 *   load of B.
 * - op(B) is read in place when B is untransposed (the forward pass and
 *   the weight gradient) and otherwise transposed block by block into
 *   the calling thread's scratch (the input gradient, dz @ w^T).
 * - Threads split the row groups of each block. Group bounds depend on
 *   M only and every element of C sums its products in depth order, one
 *   block after another, so results are bitwise identical for any
 *   thread count.
 */
#include "core/check.h"
#include "core/threads.h"
#include "kernels/f64/kernels_f64.h"

#include <string.h>

#define BP_DGEMM_MR 4
#define BP_DGEMM_KC 128
#define BP_DGEMM_NC 512

/* One block's operands, shared by the threads that split its rows. */
typedef struct bp_dgemm_args {
    double *c;
    int64_t ldc;
    const double *a;
    int64_t lda;
    bp_trans trans_a;
    const double *b;  /* kb x nb block of op(B), row stride ldb */
    int64_t ldb;
    double alpha;
    int64_t m, p0, kb, j0, nb;
} bp_dgemm_args;

/* op(A)[i, p]. */
static double bp_a_at(const bp_dgemm_args *g, int64_t i, int64_t p)
{
    return g->trans_a == BP_TRANS_NO ? g->a[i * g->lda + p]
                                     : g->a[p * g->lda + i];
}

/* Adds the block's products to rows [4 * begin, 4 * end) of C. */
static void bp_dgemm_groups(void *ctx, int64_t begin, int64_t end)
{
    const bp_dgemm_args *g = ctx;
    int64_t nb = g->nb;

    for (int64_t q = begin; q < end; q++) {
        int64_t i0 = q * BP_DGEMM_MR;
        int64_t rows = g->m - i0 < BP_DGEMM_MR ? g->m - i0 : BP_DGEMM_MR;
        double *c[BP_DGEMM_MR];

        for (int64_t r = 0; r < BP_DGEMM_MR; r++)
            c[r] = g->c + (i0 + (r < rows ? r : 0)) * g->ldc + g->j0;
        for (int64_t p = 0; p < g->kb; p++) {
            const double *b = g->b + p * g->ldb;

            if (rows == BP_DGEMM_MR) {
                double a0 = g->alpha * bp_a_at(g, i0, g->p0 + p);
                double a1 = g->alpha * bp_a_at(g, i0 + 1, g->p0 + p);
                double a2 = g->alpha * bp_a_at(g, i0 + 2, g->p0 + p);
                double a3 = g->alpha * bp_a_at(g, i0 + 3, g->p0 + p);
                double *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3];

                for (int64_t j = 0; j < nb; j++) {
                    double bj = b[j];

                    c0[j] += a0 * bj;
                    c1[j] += a1 * bj;
                    c2[j] += a2 * bj;
                    c3[j] += a3 * bj;
                }
                continue;
            }
            for (int64_t r = 0; r < rows; r++) {
                double ar = g->alpha * bp_a_at(g, i0 + r, g->p0 + p);
                double *cr = c[r];

                for (int64_t j = 0; j < nb; j++)
                    cr[j] += ar * b[j];
            }
        }
    }
}

/* C = beta * C (0 without reading C when beta is 0), then + bias. */
static void bp_dgemm_start(double *c, int64_t ldc, double beta,
                           int64_t m, int64_t n)
{
    for (int64_t i = 0; i < m; i++) {
        double *row = c + i * ldc;

        if (beta == 0.0)
            memset(row, 0, (size_t)n * sizeof *row);
        else if (beta != 1.0)
            for (int64_t j = 0; j < n; j++)
                row[j] *= beta;
    }
}

bp_status bp_dgemm_bias(double *c, int64_t ldc, const double *a,
                        int64_t lda, const double *b, int64_t ldb,
                        bp_trans trans_a, bp_trans trans_b, double alpha,
                        double beta, const double *bias, int64_t m,
                        int64_t n, int64_t k)
{
    int64_t groups = (m + BP_DGEMM_MR - 1) / BP_DGEMM_MR;
    double *packed = NULL;

    if (trans_b == BP_TRANS_YES && k > 0 && n > 0 && m > 0) {
        packed = bp_scratch(BP_SCRATCH_DGEMM, BP_DGEMM_KC * BP_DGEMM_NC *
                                                  sizeof(double));
        if (packed == NULL)
            return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                           "bp_dgemm: cannot allocate the packing buffer");
    }
    bp_dgemm_start(c, ldc, beta, m, n);
    for (int64_t j0 = 0; j0 < n && k > 0 && alpha != 0.0; j0 += BP_DGEMM_NC) {
        int64_t nb = n - j0 < BP_DGEMM_NC ? n - j0 : BP_DGEMM_NC;

        for (int64_t p0 = 0; p0 < k; p0 += BP_DGEMM_KC) {
            int64_t kb = k - p0 < BP_DGEMM_KC ? k - p0 : BP_DGEMM_KC;
            bp_dgemm_args g = {
                .c = c, .ldc = ldc, .a = a, .lda = lda, .trans_a = trans_a,
                .b = b + p0 * ldb + j0, .ldb = ldb, .alpha = alpha, .m = m,
                .p0 = p0, .kb = kb, .j0 = j0, .nb = nb};

            if (trans_b == BP_TRANS_YES) {
                for (int64_t p = 0; p < kb; p++)
                    for (int64_t j = 0; j < nb; j++)
                        packed[p * nb + j] = b[(j0 + j) * ldb + p0 + p];
                g.b = packed;
                g.ldb = nb;
            }
            bp_parallel_for(bp_threads_for(2.0 * (double)m * nb * kb),
                            groups, bp_dgemm_groups, &g);
        }
    }
    if (bias != NULL)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] += bias[j];
    return BP_STATUS_OK;
}

bp_status bp_dgemm(double *c, int64_t ldc, const double *a, int64_t lda,
                   const double *b, int64_t ldb, bp_trans trans_a,
                   bp_trans trans_b, double alpha, double beta, int64_t m,
                   int64_t n, int64_t k)
{
    static const char fn[] = "bp_dgemm";
    int64_t a_cols = trans_a == BP_TRANS_NO ? k : m;
    int64_t b_cols = trans_b == BP_TRANS_NO ? n : k;

    BP_TRY(bp_check_shape(fn, "m", m, "n", n));
    BP_TRY(bp_check_shape(fn, "m", m, "k", k));
    BP_TRY(bp_check_shape(fn, "k", k, "n", n));
    if ((trans_a != BP_TRANS_NO && trans_a != BP_TRANS_YES) ||
        (trans_b != BP_TRANS_NO && trans_b != BP_TRANS_YES))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: trans_a and trans_b must be BP_TRANS_NO or "
                       "BP_TRANS_YES", fn);
    if (ldc < n || lda < a_cols || ldb < b_cols)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: a leading dimension is too small (ldc %lld for "
                       "n %lld, lda %lld for %lld, ldb %lld for %lld)", fn,
                       (long long)ldc, (long long)n, (long long)lda,
                       (long long)a_cols, (long long)ldb, (long long)b_cols);
    BP_REQUIRE_DATA(fn, c, m * n);
    BP_REQUIRE_DATA(fn, a, m * k);
    BP_REQUIRE_DATA(fn, b, k * n);
    return bp_dgemm_bias(c, ldc, a, lda, b, ldb, trans_a, trans_b, alpha,
                         beta, NULL, m, n, k);
}
