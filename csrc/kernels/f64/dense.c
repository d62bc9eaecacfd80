/*
 * The dense layer in double: y = act(x @ w + b) and its backward pass.
 *
 * Design decisions:
 * - The GEMM adds the bias; the activation is a second pass by rows.
 * - The bias gradient sums each column of dz over the rows in order,
 *   threads splitting the columns, so the sums do not depend on the
 *   thread count.
 */
#include "core/threads.h"
#include "kernels/f64/kernels_f64.h"

#include <string.h>

void bp_dense_forward_f64(double *y, double *z, const double *x,
                          const double *w, const double *b,
                          bp_activation act, double param, int64_t batch,
                          int64_t n_in, int64_t n_out)
{
    double *pre = z != NULL ? z : y;

    /* An untransposed B needs no scratch, so this cannot fail. */
    (void)bp_dgemm_bias(pre, n_out, x, n_in, w, n_out, BP_TRANS_NO,
                        BP_TRANS_NO, 1.0, 0.0, b, batch, n_out, n_in);
    bp_activation_forward_f64(y, pre, act, param, batch, n_out);
}

/* The buffers of one bias gradient, shared by its threads. */
typedef struct bp_bias_args {
    double *db;
    const double *dz;
    int64_t batch, n_out;
} bp_bias_args;

static void bp_bias_cols(void *ctx, int64_t begin, int64_t end)
{
    const bp_bias_args *a = ctx;

    memset(a->db + begin, 0, (size_t)(end - begin) * sizeof *a->db);
    for (int64_t i = 0; i < a->batch; i++) {
        const double *row = a->dz + i * a->n_out;

        for (int64_t j = begin; j < end; j++)
            a->db[j] += row[j];
    }
}

bp_status bp_dense_backward_f64(double *dx, double *dw, double *db,
                                double *dz, const double *dy,
                                const double *x, const double *w,
                                const double *y, const double *z,
                                bp_activation act, double param,
                                int64_t batch, int64_t n_in, int64_t n_out)
{
    bp_activation_backward_f64(dz, dy, y, z, act, param, batch, n_out);

    /* dw = x^T @ dz: B is dz, untransposed, so this cannot fail. */
    (void)bp_dgemm_bias(dw, n_out, x, n_in, dz, n_out, BP_TRANS_YES,
                        BP_TRANS_NO, 1.0, 0.0, NULL, n_in, n_out, batch);
    if (db != NULL) {
        bp_bias_args args = {db, dz, batch, n_out};

        bp_parallel_for(bp_threads_for((double)batch * n_out), n_out,
                        bp_bias_cols, &args);
    }
    if (dx == NULL)
        return BP_STATUS_OK;
    return bp_dgemm_bias(dx, n_in, dz, n_out, w, n_out, BP_TRANS_NO,
                         BP_TRANS_YES, 1.0, 0.0, NULL, batch, n_in, n_out);
}
