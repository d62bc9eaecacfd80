/*
 * Batch norm, layer norm and dropout in double, with the formulas of the
 * float kernels (kernels/norm.c): two-pass variances, backward passes
 * that recompute the normalised input, running averages left alone by a
 * batch of one row, and dropout masks drawn from the same 16 bits per
 * element of the same Philox blocks, so that a float64 network drops
 * the units its float32 twin drops.
 *
 * Threads split columns (batch norm) or rows (layer norm's forward pass,
 * dropout's groups); every element has one fixed order of operations.
 */
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/f64/kernels_f64.h"

#include <math.h>
#include <string.h>

/* Dropout elements that share one Philox block: 8 x 16 bits. */
#define BP_DROPOUT_GROUP 8

/* The arguments of the ranges below; each uses what it needs. */
typedef struct bp_norm_args_f64 {
    double *y, *dx, *dgamma, *dbeta, *stats, *running;
    const double *x, *dy, *gamma, *beta, *stats_in, *running_in;
    double eps, momentum;
    int64_t batch, n;
} bp_norm_args_f64;

/* Threads worth using for `passes` passes over a B x n block. */
static int bp_norm_threads(int64_t batch, int64_t n, double passes)
{
    return bp_threads_for((double)batch * (double)n * passes *
                          BP_STREAM_COST);
}

/* Column j's mean and biased variance over the rows. */
static void bp_column_stats(const bp_norm_args_f64 *a, int64_t j,
                            double *mean, double *var)
{
    double sum = 0.0, sq = 0.0;

    for (int64_t i = 0; i < a->batch; i++)
        sum += a->x[i * a->n + j];
    *mean = sum / (double)a->batch;
    for (int64_t i = 0; i < a->batch; i++) {
        double d = a->x[i * a->n + j] - *mean;

        sq += d * d;
    }
    *var = sq / (double)a->batch;
}

static void bp_batch_norm_train_cols(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args_f64 *a = ctx;
    int64_t n = a->n;
    double unbias = a->batch > 1 ? (double)a->batch / (double)(a->batch - 1)
                                 : 0.0;

    for (int64_t j = begin; j < end; j++) {
        double mean, var;

        bp_column_stats(a, j, &mean, &var);

        double rstd = 1.0 / sqrt(var + a->eps);
        double scale = a->gamma[j] * rstd;
        double shift = (a->beta != NULL ? a->beta[j] : 0.0) - mean * scale;

        a->stats[j] = mean;
        a->stats[n + j] = rstd;
        /* One row says nothing about the spread. */
        if (a->batch > 1) {
            a->running[j] = (1.0 - a->momentum) * a->running[j] +
                            a->momentum * mean;
            a->running[n + j] = (1.0 - a->momentum) * a->running[n + j] +
                                a->momentum * var * unbias;
        }
        for (int64_t i = 0; i < a->batch; i++)
            a->y[i * n + j] = a->x[i * n + j] * scale + shift;
    }
}

void bp_batch_norm_train_f64(double *y, double *stats, double *running,
                             const double *x, const double *gamma,
                             const double *beta, double eps, double momentum,
                             int64_t batch, int64_t n)
{
    bp_norm_args_f64 a = {.y = y, .stats = stats, .running = running,
                          .x = x, .gamma = gamma, .beta = beta, .eps = eps,
                          .momentum = momentum, .batch = batch, .n = n};

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), n,
                    bp_batch_norm_train_cols, &a);
}

static void bp_batch_norm_infer_cols(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args_f64 *a = ctx;
    int64_t n = a->n;

    for (int64_t j = begin; j < end; j++) {
        double rstd = 1.0 / sqrt(a->running_in[n + j] + a->eps);
        double scale = a->gamma[j] * rstd;
        double shift = (a->beta != NULL ? a->beta[j] : 0.0) -
                       a->running_in[j] * scale;

        for (int64_t i = 0; i < a->batch; i++)
            a->y[i * n + j] = a->x[i * n + j] * scale + shift;
    }
}

void bp_batch_norm_infer_f64(double *y, const double *x,
                             const double *running, const double *gamma,
                             const double *beta, double eps, int64_t batch,
                             int64_t n)
{
    bp_norm_args_f64 a = {.y = y, .x = x, .running_in = running,
                          .gamma = gamma, .beta = beta, .eps = eps,
                          .batch = batch, .n = n};

    bp_parallel_for(bp_norm_threads(batch, n, 1.0), n,
                    bp_batch_norm_infer_cols, &a);
}

static void bp_batch_norm_backward_cols(void *ctx, int64_t begin,
                                        int64_t end)
{
    const bp_norm_args_f64 *a = ctx;
    int64_t n = a->n;

    for (int64_t j = begin; j < end; j++) {
        double mean = a->stats_in[j], rstd = a->stats_in[n + j];
        double sum_g = 0.0, sum_gx = 0.0;

        for (int64_t i = 0; i < a->batch; i++) {
            double g = a->dy[i * n + j];

            sum_g += g;
            sum_gx += g * (a->x[i * n + j] - mean) * rstd;
        }
        a->dgamma[j] = sum_gx;
        if (a->dbeta != NULL)
            a->dbeta[j] = sum_g;
        if (a->dx == NULL)
            continue;

        /* dx = gamma rstd (g - mean(g) - xh mean(g xh)). */
        double c0 = a->gamma[j] * rstd, c1 = sum_g / (double)a->batch;
        double c2 = sum_gx / (double)a->batch;
        for (int64_t i = 0; i < a->batch; i++) {
            double xh = (a->x[i * n + j] - mean) * rstd;

            a->dx[i * n + j] = c0 * (a->dy[i * n + j] - c1 - xh * c2);
        }
    }
}

void bp_batch_norm_backward_f64(double *dx, double *dgamma, double *dbeta,
                                const double *dy, const double *x,
                                const double *stats, const double *gamma,
                                int64_t batch, int64_t n)
{
    bp_norm_args_f64 a = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta,
                          .dy = dy, .x = x, .stats_in = stats,
                          .gamma = gamma, .batch = batch, .n = n};

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), n,
                    bp_batch_norm_backward_cols, &a);
}

/* The mean and 1 / sqrt(var + eps) of one row of n values. */
static void bp_row_stats(const double *row, int64_t n, double eps,
                         double *mean, double *rstd)
{
    double sum = 0.0, sq = 0.0;

    for (int64_t j = 0; j < n; j++)
        sum += row[j];
    *mean = sum / (double)n;
    for (int64_t j = 0; j < n; j++)
        sq += (row[j] - *mean) * (row[j] - *mean);
    *rstd = 1.0 / sqrt(sq / (double)n + eps);
}

static void bp_layer_norm_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args_f64 *a = ctx;
    int64_t n = a->n;

    for (int64_t i = begin; i < end; i++) {
        const double *row = a->x + i * n;
        double mean, rstd;

        bp_row_stats(row, n, a->eps, &mean, &rstd);
        for (int64_t j = 0; j < n; j++)
            a->y[i * n + j] = (row[j] - mean) * rstd * a->gamma[j] +
                              (a->beta != NULL ? a->beta[j] : 0.0);
    }
}

void bp_layer_norm_forward_f64(double *y, const double *x,
                               const double *gamma, const double *beta,
                               double eps, int64_t batch, int64_t n)
{
    bp_norm_args_f64 a = {.y = y, .x = x, .gamma = gamma, .beta = beta,
                          .eps = eps, .batch = batch, .n = n};

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), batch,
                    bp_layer_norm_rows, &a);
}

void bp_layer_norm_backward_f64(double *dx, double *dgamma, double *dbeta,
                                const double *dy, const double *x,
                                const double *gamma, double eps,
                                int64_t batch, int64_t n)
{
    memset(dgamma, 0, (size_t)n * sizeof *dgamma);
    if (dbeta != NULL)
        memset(dbeta, 0, (size_t)n * sizeof *dbeta);
    for (int64_t i = 0; i < batch; i++) {
        const double *row = x + i * n, *g = dy + i * n;
        double mean, rstd, sum_d = 0.0, sum_dx = 0.0;

        bp_row_stats(row, n, eps, &mean, &rstd);
        for (int64_t j = 0; j < n; j++) {
            double xh = (row[j] - mean) * rstd, d = g[j] * gamma[j];

            dgamma[j] += g[j] * xh;
            if (dbeta != NULL)
                dbeta[j] += g[j];
            sum_d += d;
            sum_dx += d * xh;
        }
        if (dx == NULL)
            continue;

        /* dx = rstd (d - mean(d) - xh mean(d xh)), d = g gamma. */
        double c1 = sum_d / (double)n, c2 = sum_dx / (double)n;
        for (int64_t j = 0; j < n; j++) {
            double xh = (row[j] - mean) * rstd;

            dx[i * n + j] = rstd * (g[j] * gamma[j] - c1 - xh * c2);
        }
    }
}

/* The arguments of the dropout groups. */
typedef struct bp_dropout_args_f64 {
    double *y, *mask;
    const double *x;
    uint64_t seed, stream;
    uint32_t threshold;  /* an element drops when its 16 bits are below */
    double keep;         /* 1 / (1 - rate) */
    int64_t count;
} bp_dropout_args_f64;

/* Group g of 8 elements takes its 16-bit draws from Philox block g. */
static void bp_dropout_groups(void *ctx, int64_t begin, int64_t end)
{
    const bp_dropout_args_f64 *a = ctx;

    for (int64_t g = begin; g < end; g++) {
        uint32_t word[4];

        bp_rng_block(word, a->seed, BP_RNG_DROPOUT, a->stream, (uint64_t)g);
        for (int k = 0; k < BP_DROPOUT_GROUP; k++) {
            int64_t i = g * BP_DROPOUT_GROUP + k;
            uint32_t bits = (word[k / 2] >> (16 * (k % 2))) & 0xffffu;

            if (i >= a->count)
                break;
            a->mask[i] = bits >= a->threshold ? a->keep : 0.0;
            a->y[i] = a->x[i] * a->mask[i];
        }
    }
}

void bp_dropout_forward_f64(double *y, double *mask, const double *x,
                            double rate, uint64_t seed, uint64_t stream,
                            int64_t count)
{
    double scaled = rate * 65536.0 + 0.5;
    bp_dropout_args_f64 a = {
        .y = y, .mask = mask, .x = x, .seed = seed, .stream = stream,
        .threshold = scaled < 65535.0 ? (uint32_t)scaled : 65535u,
        .keep = 1.0 / (1.0 - rate), .count = count,
    };

    if (rate <= 0.0) {
        for (int64_t i = 0; i < count; i++) {
            mask[i] = 1.0;
            y[i] = x[i];
        }
        return;
    }
    bp_parallel_for(bp_threads_for((double)count * 2.0 * BP_STREAM_COST),
                    (count + BP_DROPOUT_GROUP - 1) / BP_DROPOUT_GROUP,
                    bp_dropout_groups, &a);
}
