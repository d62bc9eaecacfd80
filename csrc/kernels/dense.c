/*
 * The dense layer: y = act(x @ w + b) and its backward pass, built on
 * the fused GEMM.
 *
 * Design decisions:
 * - Bias and element-wise activations run in the GEMM epilogue; softmax
 *   and log_softmax, which need whole rows, run after it, and so does
 *   any activation whose input z the caller keeps for the backward pass.
 * - The bias gradient sums columns of dz in blocks of columns (the
 *   kernel table's column_sums), each column row by row into a double,
 *   so every column's sum has the same order for any thread count and
 *   SIMD level.
 */
#include "arch/dispatch.h"
#include "core/check.h"
#include "core/threads.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"

/* Columns per unit of work when the bias gradient is split over threads. */
#define BP_BIAS_BLOCK 64

/*
 * Validates the sizes and activation shared by forward and backward, and
 * resolves the activation's parameter into *param.
 */
static bp_status bp_dense_check(const char *fn, bp_activation act,
                                float *param, int64_t batch, int64_t n_in,
                                int64_t n_out)
{
    BP_TRY(bp_activation_check(fn, act, *param, param));
    BP_TRY(bp_check_shape(fn, "batch", batch, "n_in", n_in));
    BP_TRY(bp_check_shape(fn, "batch", batch, "n_out", n_out));
    return bp_check_shape(fn, "n_in", n_in, "n_out", n_out);
}

/* The forward pass; `fn` names the public entry point in messages. */
static bp_status bp_dense_forward_impl(const char *fn, float *y, float *z,
                                       const float *x, const float *w,
                                       const float *b, bp_activation act,
                                       float param, int64_t batch,
                                       int64_t n_in, int64_t n_out)
{
    BP_TRY(bp_dense_check(fn, act, &param, batch, n_in, n_out));
    BP_REQUIRE_DATA(fn, y, batch * n_out);
    BP_REQUIRE_DATA(fn, x, batch * n_in);
    BP_REQUIRE_DATA(fn, w, n_in * n_out);

    /* Per-row activations need whole rows; keeping z needs two outputs.
       Either way the GEMM stops at the bias and a second pass follows. */
    if (z != NULL || bp_activation_per_row(act)) {
        float *pre = z != NULL ? z : y;

        bp_gemm_fused(pre, n_out, x, n_in, w, n_out, BP_TRANS_NO,
                      BP_TRANS_NO, 1.0f, 0.0f, b, BP_ACTIVATION_IDENTITY,
                      0.0f, batch, n_out, n_in);
        return bp_activation_forward_ex(y, pre, act, param, batch, n_out);
    }
    bp_gemm_fused(y, n_out, x, n_in, w, n_out, BP_TRANS_NO, BP_TRANS_NO,
                  1.0f, 0.0f, b, act, param, batch, n_out, n_in);
    return BP_STATUS_OK;
}

bp_status bp_dense_forward(float *y, const float *x, const float *w,
                           const float *b, bp_activation act, int64_t batch,
                           int64_t n_in, int64_t n_out)
{
    return bp_dense_forward_impl("bp_dense_forward", y, NULL, x, w, b, act,
                                 0.0f, batch, n_in, n_out);
}

bp_status bp_dense_forward_ex(float *y, float *z, const float *x,
                              const float *w, const float *b,
                              bp_activation act, float param, int64_t batch,
                              int64_t n_in, int64_t n_out)
{
    return bp_dense_forward_impl("bp_dense_forward_ex", y, z, x, w, b, act,
                                 param, batch, n_in, n_out);
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
    int64_t j0 = begin * BP_BIAS_BLOCK;
    int64_t j1 = end * BP_BIAS_BLOCK < a->n_out ? end * BP_BIAS_BLOCK
                                                : a->n_out;

    bp_kernels_get()->column_sums(a->db + j0, a->dz + j0, a->batch, j1 - j0,
                                  a->n_out);
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

/* The backward pass; `fn` names the public entry point in messages. */
static bp_status bp_dense_backward_impl(const char *fn, float *dx, float *dw,
                                        float *db, float *dz, const float *dy,
                                        const float *x, const float *w,
                                        const float *y, const float *z,
                                        bp_activation act, float param,
                                        int64_t batch, int64_t n_in,
                                        int64_t n_out)
{
    BP_TRY(bp_dense_check(fn, act, &param, batch, n_in, n_out));
    BP_REQUIRE_DATA(fn, dw, n_in * n_out);
    BP_REQUIRE_DATA(fn, dz, batch * n_out);
    BP_REQUIRE_DATA(fn, dy, batch * n_out);
    BP_REQUIRE_DATA(fn, x, batch * n_in);
    BP_REQUIRE_DATA(fn, y, batch * n_out);
    if (dx != NULL)
        BP_REQUIRE_DATA(fn, w, n_in * n_out);
    if (bp_activation_needs_input(act) && batch * n_out > 0 && z == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'z' is NULL; the derivative of %s "
                       "needs the pre-activation (bp_dense_forward_ex "
                       "writes it)", fn, bp_activation_name(act));

    /* dz = dy * act'(y): the gradient before the activation. */
    BP_TRY(bp_activation_backward_ex(dz, dy, y, z, act, param, batch,
                                     n_out));

    /* dw = x^T @ dz, summed over the batch. */
    bp_gemm_fused(dw, n_out, x, n_in, dz, n_out, BP_TRANS_YES, BP_TRANS_NO,
                  1.0f, 0.0f, NULL, BP_ACTIVATION_IDENTITY, 0.0f, n_in,
                  n_out, batch);
    if (db != NULL)
        bp_bias_grad(db, dz, batch, n_out);

    /* dx = dz @ w^T, the gradient passed to the previous layer. */
    if (dx != NULL)
        bp_gemm_fused(dx, n_in, dz, n_out, w, n_out, BP_TRANS_NO,
                      BP_TRANS_YES, 1.0f, 0.0f, NULL, BP_ACTIVATION_IDENTITY,
                      0.0f, batch, n_in, n_out);
    return BP_STATUS_OK;
}

bp_status bp_dense_backward(float *dx, float *dw, float *db, float *dz,
                            const float *dy, const float *x, const float *w,
                            const float *y, bp_activation act, int64_t batch,
                            int64_t n_in, int64_t n_out)
{
    return bp_dense_backward_impl("bp_dense_backward", dx, dw, db, dz, dy, x,
                                  w, y, NULL, act, 0.0f, batch, n_in, n_out);
}

bp_status bp_dense_backward_ex(float *dx, float *dw, float *db, float *dz,
                               const float *dy, const float *x,
                               const float *w, const float *y,
                               const float *z, bp_activation act, float param,
                               int64_t batch, int64_t n_in, int64_t n_out)
{
    return bp_dense_backward_impl("bp_dense_backward_ex", dx, dw, db, dz, dy,
                                  x, w, y, z, act, param, batch, n_in,
                                  n_out);
}
