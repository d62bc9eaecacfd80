/*
 * Batch norm, layer norm and dropout.
 *
 * Design decisions:
 * - Column statistics (batch norm) are summed in blocks of columns, each
 *   block row by row into double accumulators on the stack: the loops
 *   vectorise across columns, nothing is allocated, and every column's
 *   sum has one fixed order. Row statistics (layer norm) are summed in
 *   double along the row.
 * - The variance is the mean of squared deviations from the mean (two
 *   passes), which stays accurate when the mean is large.
 * - The backward passes recompute the normalised input from x and the
 *   statistics instead of keeping another B x n buffer.
 * - A dropout mask depends only on (seed, stream, position), so the
 *   backward pass and a repeated gradient call see the same mask.
 */
#include "kernels/norm.h"

#include "core/rng.h"

#include <math.h>
#include <stddef.h>

/* Columns whose statistics are summed together in one pass. */
#define BP_NORM_BLOCK 64

void bp_batch_norm_train(float *y, float *stats, float *running,
                         const float *x, const float *gamma,
                         const float *beta, float eps, float momentum,
                         int64_t batch, int64_t n)
{
    float *mean_out = stats, *rstd_out = stats + n;
    double unbias = batch > 1 ? (double)batch / (double)(batch - 1) : 0.0;

    for (int64_t j0 = 0; j0 < n; j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        double sum[BP_NORM_BLOCK] = {0}, sq[BP_NORM_BLOCK] = {0};
        float scale[BP_NORM_BLOCK], shift[BP_NORM_BLOCK];

        for (int64_t i = 0; i < batch; i++) {
            const float *row = x + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                sum[j] += row[j];
        }
        for (int64_t j = 0; j < m; j++)
            sum[j] /= (double)batch;
        for (int64_t i = 0; i < batch; i++) {
            const float *row = x + i * n + j0;

            for (int64_t j = 0; j < m; j++) {
                double d = row[j] - sum[j];

                sq[j] += d * d;
            }
        }
        for (int64_t j = 0; j < m; j++) {
            double var = sq[j] / (double)batch;
            float rstd = (float)(1.0 / sqrt(var + eps));
            float *rm = running + j0 + j, *rv = running + n + j0 + j;

            mean_out[j0 + j] = (float)sum[j];
            rstd_out[j0 + j] = rstd;
            /* One row says nothing about the spread: the averages keep
               their values rather than drift towards a variance of 0. */
            if (batch > 1) {
                *rm = (float)((1.0 - momentum) * *rm + momentum * sum[j]);
                *rv = (float)((1.0 - momentum) * *rv +
                              momentum * var * unbias);
            }
            scale[j] = gamma[j0 + j] * rstd;
            shift[j] = (beta != NULL ? beta[j0 + j] : 0.0f) -
                       (float)sum[j] * scale[j];
        }
        for (int64_t i = 0; i < batch; i++) {
            const float *row = x + i * n + j0;
            float *out = y + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = row[j] * scale[j] + shift[j];
        }
    }
}

void bp_batch_norm_infer(float *y, const float *x, const float *running,
                         const float *gamma, const float *beta, float eps,
                         int64_t batch, int64_t n)
{
    for (int64_t j0 = 0; j0 < n; j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        float scale[BP_NORM_BLOCK], shift[BP_NORM_BLOCK];

        for (int64_t j = 0; j < m; j++) {
            float rstd = (float)(1.0 / sqrt((double)running[n + j0 + j] + eps));

            scale[j] = gamma[j0 + j] * rstd;
            shift[j] = (beta != NULL ? beta[j0 + j] : 0.0f) -
                       running[j0 + j] * scale[j];
        }
        for (int64_t i = 0; i < batch; i++) {
            const float *row = x + i * n + j0;
            float *out = y + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = row[j] * scale[j] + shift[j];
        }
    }
}

void bp_batch_norm_backward(float *dx, float *dgamma, float *dbeta,
                            const float *dy, const float *x,
                            const float *stats, const float *gamma,
                            int64_t batch, int64_t n)
{
    const float *mean = stats, *rstd = stats + n;

    for (int64_t j0 = 0; j0 < n; j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        double sum_g[BP_NORM_BLOCK] = {0}, sum_gx[BP_NORM_BLOCK] = {0};
        float a[BP_NORM_BLOCK], b[BP_NORM_BLOCK], c[BP_NORM_BLOCK];

        for (int64_t i = 0; i < batch; i++) {
            const float *g = dy + i * n + j0, *row = x + i * n + j0;

            for (int64_t j = 0; j < m; j++) {
                float xh = (row[j] - mean[j0 + j]) * rstd[j0 + j];

                sum_g[j] += g[j];
                sum_gx[j] += g[j] * xh;
            }
        }
        for (int64_t j = 0; j < m; j++) {
            dgamma[j0 + j] = (float)sum_gx[j];
            if (dbeta != NULL)
                dbeta[j0 + j] = (float)sum_g[j];
            /* dx = gamma rstd (g - mean(g) - xh mean(g xh)), with xh
               written out as (x - mean) rstd. */
            a[j] = gamma[j0 + j] * rstd[j0 + j];
            c[j] = (float)(sum_gx[j] / (double)batch) * rstd[j0 + j];
            b[j] = (float)(sum_g[j] / (double)batch);
        }
        if (dx == NULL)
            continue;
        for (int64_t i = 0; i < batch; i++) {
            const float *g = dy + i * n + j0, *row = x + i * n + j0;
            float *out = dx + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = a[j] * (g[j] - b[j] -
                                 (row[j] - mean[j0 + j]) * c[j]);
        }
    }
}

/* The mean and 1 / sqrt(var + eps) of one row of n values. */
static void bp_row_stats(const float *row, int64_t n, float eps,
                         float *mean, float *rstd)
{
    double sum = 0.0, sq = 0.0;

    for (int64_t j = 0; j < n; j++)
        sum += row[j];
    double mu = sum / (double)n;
    for (int64_t j = 0; j < n; j++) {
        double d = row[j] - mu;

        sq += d * d;
    }
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(sq / (double)n + eps));
}

void bp_layer_norm_forward(float *y, const float *x, const float *gamma,
                           const float *beta, float eps, int64_t batch,
                           int64_t n)
{
    for (int64_t i = 0; i < batch; i++) {
        const float *row = x + i * n;
        float *out = y + i * n;
        float mean, rstd;

        bp_row_stats(row, n, eps, &mean, &rstd);
        if (beta != NULL)
            for (int64_t j = 0; j < n; j++)
                out[j] = (row[j] - mean) * rstd * gamma[j] + beta[j];
        else
            for (int64_t j = 0; j < n; j++)
                out[j] = (row[j] - mean) * rstd * gamma[j];
    }
}

void bp_layer_norm_backward(float *dx, float *dgamma, float *dbeta,
                            const float *dy, const float *x,
                            const float *gamma, float eps, int64_t batch,
                            int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        dgamma[j] = 0.0f;
        if (dbeta != NULL)
            dbeta[j] = 0.0f;
    }
    for (int64_t i = 0; i < batch; i++) {
        const float *row = x + i * n, *g = dy + i * n;
        float mean, rstd;
        double sum_d = 0.0, sum_dx = 0.0;

        bp_row_stats(row, n, eps, &mean, &rstd);
        for (int64_t j = 0; j < n; j++) {
            float xh = (row[j] - mean) * rstd;
            float d = g[j] * gamma[j];

            dgamma[j] += g[j] * xh;
            sum_d += d;
            sum_dx += d * xh;
        }
        if (dbeta != NULL)
            for (int64_t j = 0; j < n; j++)
                dbeta[j] += g[j];
        if (dx == NULL)
            continue;

        /* dx = rstd (d - mean(d) - xh mean(d xh)), d = g gamma. */
        float c1 = (float)(sum_d / (double)n);
        float c2 = (float)(sum_dx / (double)n);
        float *out = dx + i * n;
        for (int64_t j = 0; j < n; j++) {
            float xh = (row[j] - mean) * rstd;

            out[j] = rstd * (g[j] * gamma[j] - c1 - xh * c2);
        }
    }
}

void bp_dropout_forward(float *y, float *mask, const float *x, float rate,
                        uint64_t seed, uint64_t stream, int64_t count)
{
    float keep = 1.0f / (1.0f - rate);

    if (rate <= 0.0f) {
        for (int64_t i = 0; i < count; i++) {
            mask[i] = 1.0f;
            y[i] = x[i];
        }
        return;
    }

    /* An element is dropped when its 32 random bits fall below rate *
       2^32; the threshold is exact for every float rate below 1. */
    uint32_t threshold = (uint32_t)((double)rate * 4294967296.0);
    bp_rng rng;

    bp_rng_init(&rng, seed, BP_RNG_DROPOUT, stream);
    for (int64_t i = 0; i < count; i++) {
        mask[i] = bp_rng_u32(&rng) < threshold ? 0.0f : keep;
        y[i] = x[i] * mask[i];
    }
}
