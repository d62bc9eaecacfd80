/*
 * The dense layer: y = act(x @ w + b) and its backward pass, built on
 * the fused GEMM.
 *
 * Design decisions:
 * - Bias and element-wise activations run in the GEMM epilogue; softmax,
 *   which needs a whole row, runs after it.
 * - The bias gradient sums columns of dz in blocks of columns, each
 *   block summed row by row into double accumulators, so every column's
 *   sum has the same order for any thread count.
 */
#include "core/check.h"
#include "core/threads.h"
#include "kernels/gemm.h"

/* Columns summed together by one pass over the rows. */
#define BP_BIAS_BLOCK 64

/* Validates the sizes and activation shared by forward and backward. */
static bp_status bp_dense_check(const char *fn, bp_activation act,
                                int64_t batch, int64_t n_in, int64_t n_out)
{
    if (bp_activation_name(act) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'act' is %d, which is not a "
                       "bp_activation", fn, (int)act);
    BP_TRY(bp_check_shape(fn, "batch", batch, "n_in", n_in));
    BP_TRY(bp_check_shape(fn, "batch", batch, "n_out", n_out));
    return bp_check_shape(fn, "n_in", n_in, "n_out", n_out);
}

bp_status bp_dense_forward(float *y, const float *x, const float *w,
                           const float *b, bp_activation act, int64_t batch,
                           int64_t n_in, int64_t n_out)
{
    static const char fn[] = "bp_dense_forward";

    BP_TRY(bp_dense_check(fn, act, batch, n_in, n_out));
    BP_REQUIRE_DATA(fn, y, batch * n_out);
    BP_REQUIRE_DATA(fn, x, batch * n_in);
    BP_REQUIRE_DATA(fn, w, n_in * n_out);

    int softmax = act == BP_ACTIVATION_SOFTMAX;
    bp_gemm_fused(y, n_out, x, n_in, w, n_out, BP_TRANS_NO, BP_TRANS_NO,
                  1.0f, 0.0f, b, softmax ? BP_ACTIVATION_IDENTITY : act,
                  batch, n_out, n_in);
    if (softmax)
        return bp_activation_forward(y, y, act, batch, n_out);
    return BP_STATUS_OK;
}

/* The buffers of one bias gradient, shared by its threads. */
typedef struct bp_bias_args {
    float *db;        /* O */
    const float *dz;  /* B x O */
    int64_t batch, n_out;
} bp_bias_args;

/* Column sums of dz for the column blocks [begin, end). */
static void bp_bias_blocks(void *ctx, int64_t begin, int64_t end)
{
    const bp_bias_args *a = ctx;

    for (int64_t k = begin; k < end; k++) {
        double sum[BP_BIAS_BLOCK] = {0};
        int64_t j0 = k * BP_BIAS_BLOCK;
        int64_t cols = a->n_out - j0 < BP_BIAS_BLOCK ? a->n_out - j0
                                                     : BP_BIAS_BLOCK;

        for (int64_t i = 0; i < a->batch; i++) {
            const float *row = a->dz + i * a->n_out + j0;

            for (int64_t j = 0; j < cols; j++)
                sum[j] += row[j];
        }
        for (int64_t j = 0; j < cols; j++)
            a->db[j0 + j] = (float)sum[j];
    }
}

/*
 * Column sums of dz.
 *   db  O  (OUT)      dz  B x O  (IN)
 */
static void bp_bias_grad(float *db, const float *dz, int64_t batch,
                         int64_t n_out)
{
    bp_bias_args args = {.db = db, .dz = dz, .batch = batch, .n_out = n_out};
    int64_t blocks = (n_out + BP_BIAS_BLOCK - 1) / BP_BIAS_BLOCK;

    bp_parallel_for(bp_threads_for((double)batch * n_out), blocks,
                    bp_bias_blocks, &args);
}

bp_status bp_dense_backward(float *dx, float *dw, float *db, float *dz,
                            const float *dy, const float *x, const float *w,
                            const float *y, bp_activation act, int64_t batch,
                            int64_t n_in, int64_t n_out)
{
    static const char fn[] = "bp_dense_backward";

    BP_TRY(bp_dense_check(fn, act, batch, n_in, n_out));
    BP_REQUIRE_DATA(fn, dw, n_in * n_out);
    BP_REQUIRE_DATA(fn, dz, batch * n_out);
    BP_REQUIRE_DATA(fn, dy, batch * n_out);
    BP_REQUIRE_DATA(fn, x, batch * n_in);
    BP_REQUIRE_DATA(fn, y, batch * n_out);
    if (dx != NULL)
        BP_REQUIRE_DATA(fn, w, n_in * n_out);

    /* dz = dy * act'(y): the gradient before the activation. */
    BP_TRY(bp_activation_backward(dz, dy, y, act, batch, n_out));

    /* dw = x^T @ dz, summed over the batch. */
    bp_gemm_fused(dw, n_out, x, n_in, dz, n_out, BP_TRANS_YES, BP_TRANS_NO,
                  1.0f, 0.0f, NULL, BP_ACTIVATION_IDENTITY, n_in, n_out,
                  batch);
    if (db != NULL)
        bp_bias_grad(db, dz, batch, n_out);

    /* dx = dz @ w^T, the gradient passed to the previous layer. */
    if (dx != NULL)
        bp_gemm_fused(dx, n_in, dz, n_out, w, n_out, BP_TRANS_NO,
                      BP_TRANS_YES, 1.0f, 0.0f, NULL, BP_ACTIVATION_IDENTITY,
                      batch, n_in, n_out);
    return BP_STATUS_OK;
}
