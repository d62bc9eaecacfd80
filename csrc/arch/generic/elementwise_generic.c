/*
 * Portable element-wise kernels: softmax cross-entropy rows and column
 * sums in plain C11, written so that their loops vectorise for the
 * baseline ISA.
 */
#include "arch/dispatch.h"

#include "kernels/exp.h"

#include <math.h>

/* Exponentials taken per vectorised pass when no gradient holds them. */
#define BP_EXP_BLOCK 256

/* Columns summed together by one pass over the rows. */
#define BP_SUM_BLOCK 64

/*
 * The exponentials are taken a block at a time, apart from their
 * double-precision sum, so that their loop vectorises.
 */
double bp_shifted_exps_generic(float *e, float *max_out, const float *z,
                               int64_t cols)
{
    float block[BP_EXP_BLOCK];
    float max = z[0];
    double sum = 0.0;

    for (int64_t j = 1; j < cols; j++)
        max = z[j] > max ? z[j] : max;
    for (int64_t j0 = 0; j0 < cols; j0 += BP_EXP_BLOCK) {
        int64_t n = cols - j0 < BP_EXP_BLOCK ? cols - j0 : BP_EXP_BLOCK;
        float *ej = e != NULL ? e + j0 : block;

        for (int64_t j = 0; j < n; j++)
            ej[j] = bp_exp_neg(z[j0 + j] - max);
        for (int64_t j = 0; j < n; j++)
            sum += ej[j];
    }
    *max_out = max;
    return sum;
}

/*
 * One row's cross-entropy, logsumexp(z) - z[label], shifted by max(z);
 * with g, its gradient scaled by s, the exponentials kept there until
 * normalised.
 *   g  K  (OUT; NULL for none)     z  K  (IN)
 */
static double bp_cross_entropy_row(float *g, const float *z, int32_t label,
                                   double s, int64_t cols)
{
    float max;
    double sum = bp_shifted_exps_generic(g, &max, z, cols);

    if (g != NULL) {
        double inv = 1.0 / sum;

        for (int64_t j = 0; j < cols; j++)
            g[j] = (float)(s * (g[j] * inv - (j == label)));
    }
    return ((double)max - z[label]) + log(sum);
}

void bp_cross_entropy_rows_generic(float *grad, double *loss,
                                   const float *logits, const int32_t *labels,
                                   const float *weights, double scale,
                                   int64_t rows, int64_t cols)
{
    for (int64_t i = 0; i < rows; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;
        float *g = grad != NULL ? grad + i * cols : NULL;

        loss[i] = bp_cross_entropy_row(g, logits + i * cols, labels[i],
                                       scale * w, cols) * w;
    }
}

void bp_column_sums_generic(float *sums, const float *x, int64_t rows,
                            int64_t cols, int64_t ld)
{
    for (int64_t j0 = 0; j0 < cols; j0 += BP_SUM_BLOCK) {
        double acc[BP_SUM_BLOCK] = {0};
        int64_t n = cols - j0 < BP_SUM_BLOCK ? cols - j0 : BP_SUM_BLOCK;

        for (int64_t i = 0; i < rows; i++) {
            const float *row = x + i * ld + j0;

            for (int64_t j = 0; j < n; j++)
                acc[j] += row[j];
        }
        for (int64_t j = 0; j < n; j++)
            sums[j0 + j] = (float)acc[j];
    }
}

/* The loop of bp_sgd_momentum_generic for a constant `nesterov`. */
static inline void bp_sgd_momentum_loop(float *restrict w, float *restrict m,
                                        const float *restrict grad, float lr,
                                        float mu, float decay,
                                        const int nesterov, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float wi = w[i];
        float g = grad[i] + decay * wi;
        float v = mu * m[i] + g;

        m[i] = v;
        w[i] = wi - lr * (nesterov ? g + mu * v : v);
    }
}

void bp_sgd_momentum_generic(float *w, float *m, const float *grad, float lr,
                             float mu, float decay, int nesterov, int64_t n)
{
    if (nesterov)
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 1, n);
    else
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 0, n);
}
