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
 *   backward pass and a repeated gradient call see the same mask, and
 *   threads can split the positions. 16 bits per element (8 elements per
 *   Philox block) keep the generator to a few percent of an epoch.
 * - Threads split batch norm by column blocks and layer norm's forward
 *   pass by rows; no output depends on the split.
 */
#include "kernels/norm.h"

#include "core/rng.h"
#include "core/threads.h"

#include <math.h>
#include <stddef.h>

/* Columns whose statistics are summed together in one pass. */
#define BP_NORM_BLOCK 64

/* Dropout elements that share one Philox block: 8 x 16 bits. */
#define BP_DROPOUT_GROUP 8

/* The arguments of the normalisation ranges; each uses what it needs. */
typedef struct bp_norm_args {
    float *y, *dx, *dgamma, *dbeta, *stats, *running;
    const float *x, *dy, *gamma, *beta, *stats_in, *running_in;
    float eps, momentum;
    int64_t batch, n;
} bp_norm_args;

/* Threads worth using for `passes` passes over a B x n block. */
static int bp_norm_threads(int64_t batch, int64_t n, double passes)
{
    return bp_threads_for((double)batch * (double)n * passes *
                          BP_STREAM_COST);
}

/* Batch norm in training on the column blocks [begin, end). */
static void bp_batch_norm_train_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args *a = ctx;
    int64_t batch = a->batch, n = a->n;
    double unbias = batch > 1 ? (double)batch / (double)(batch - 1) : 0.0;

    for (int64_t j0 = begin * BP_NORM_BLOCK; j0 < n && j0 < end * BP_NORM_BLOCK;
         j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        double sum[BP_NORM_BLOCK] = {0}, sq[BP_NORM_BLOCK] = {0};
        float scale[BP_NORM_BLOCK], shift[BP_NORM_BLOCK];

        for (int64_t i = 0; i < batch; i++) {
            const float *row = a->x + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                sum[j] += row[j];
        }
        for (int64_t j = 0; j < m; j++)
            sum[j] /= (double)batch;
        for (int64_t i = 0; i < batch; i++) {
            const float *row = a->x + i * n + j0;

            for (int64_t j = 0; j < m; j++) {
                double d = row[j] - sum[j];

                sq[j] += d * d;
            }
        }
        for (int64_t j = 0; j < m; j++) {
            double var = sq[j] / (double)batch;
            float rstd = (float)(1.0 / sqrt(var + a->eps));
            float *rm = a->running + j0 + j, *rv = a->running + n + j0 + j;

            a->stats[j0 + j] = (float)sum[j];
            a->stats[n + j0 + j] = rstd;
            /* One row says nothing about the spread: the averages keep
               their values rather than drift towards a variance of 0. */
            if (batch > 1) {
                *rm = (float)((1.0 - a->momentum) * *rm +
                              a->momentum * sum[j]);
                *rv = (float)((1.0 - a->momentum) * *rv +
                              a->momentum * var * unbias);
            }
            scale[j] = a->gamma[j0 + j] * rstd;
            shift[j] = (a->beta != NULL ? a->beta[j0 + j] : 0.0f) -
                       (float)sum[j] * scale[j];
        }
        for (int64_t i = 0; i < batch; i++) {
            const float *row = a->x + i * n + j0;
            float *out = a->y + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = row[j] * scale[j] + shift[j];
        }
    }
}

void bp_batch_norm_train(float *y, float *stats, float *running,
                         const float *x, const float *gamma,
                         const float *beta, float eps, float momentum,
                         int64_t batch, int64_t n)
{
    bp_norm_args a = {.y = y, .stats = stats, .running = running, .x = x,
                      .gamma = gamma, .beta = beta, .eps = eps,
                      .momentum = momentum, .batch = batch, .n = n};
    int64_t blocks = (n + BP_NORM_BLOCK - 1) / BP_NORM_BLOCK;

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), blocks,
                    bp_batch_norm_train_range, &a);
}

/* Batch norm at inference on the column blocks [begin, end). */
static void bp_batch_norm_infer_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args *a = ctx;
    int64_t n = a->n;

    for (int64_t j0 = begin * BP_NORM_BLOCK; j0 < n && j0 < end * BP_NORM_BLOCK;
         j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        float scale[BP_NORM_BLOCK], shift[BP_NORM_BLOCK];

        for (int64_t j = 0; j < m; j++) {
            double var = a->running_in[n + j0 + j];
            float rstd = (float)(1.0 / sqrt(var + a->eps));

            scale[j] = a->gamma[j0 + j] * rstd;
            shift[j] = (a->beta != NULL ? a->beta[j0 + j] : 0.0f) -
                       a->running_in[j0 + j] * scale[j];
        }
        for (int64_t i = 0; i < a->batch; i++) {
            const float *row = a->x + i * n + j0;
            float *out = a->y + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = row[j] * scale[j] + shift[j];
        }
    }
}

void bp_batch_norm_infer(float *y, const float *x, const float *running,
                         const float *gamma, const float *beta, float eps,
                         int64_t batch, int64_t n)
{
    bp_norm_args a = {.y = y, .x = x, .running_in = running, .gamma = gamma,
                      .beta = beta, .eps = eps, .batch = batch, .n = n};
    int64_t blocks = (n + BP_NORM_BLOCK - 1) / BP_NORM_BLOCK;

    bp_parallel_for(bp_norm_threads(batch, n, 1.0), blocks,
                    bp_batch_norm_infer_range, &a);
}

/* The backward pass of batch norm on the column blocks [begin, end). */
static void bp_batch_norm_backward_range(void *ctx, int64_t begin,
                                         int64_t end)
{
    const bp_norm_args *a = ctx;
    int64_t batch = a->batch, n = a->n;
    const float *mean = a->stats_in, *rstd = a->stats_in + n;

    for (int64_t j0 = begin * BP_NORM_BLOCK; j0 < n && j0 < end * BP_NORM_BLOCK;
         j0 += BP_NORM_BLOCK) {
        int64_t m = n - j0 < BP_NORM_BLOCK ? n - j0 : BP_NORM_BLOCK;
        double sum_g[BP_NORM_BLOCK] = {0}, sum_gx[BP_NORM_BLOCK] = {0};
        float c0[BP_NORM_BLOCK], c1[BP_NORM_BLOCK], c2[BP_NORM_BLOCK];

        for (int64_t i = 0; i < batch; i++) {
            const float *g = a->dy + i * n + j0, *row = a->x + i * n + j0;

            for (int64_t j = 0; j < m; j++) {
                float xh = (row[j] - mean[j0 + j]) * rstd[j0 + j];

                sum_g[j] += g[j];
                sum_gx[j] += g[j] * xh;
            }
        }
        for (int64_t j = 0; j < m; j++) {
            a->dgamma[j0 + j] = (float)sum_gx[j];
            if (a->dbeta != NULL)
                a->dbeta[j0 + j] = (float)sum_g[j];
            /* dx = gamma rstd (g - mean(g) - xh mean(g xh)), with xh
               written out as (x - mean) rstd. */
            c0[j] = a->gamma[j0 + j] * rstd[j0 + j];
            c1[j] = (float)(sum_g[j] / (double)batch);
            c2[j] = (float)(sum_gx[j] / (double)batch) * rstd[j0 + j];
        }
        if (a->dx == NULL)
            continue;
        for (int64_t i = 0; i < batch; i++) {
            const float *g = a->dy + i * n + j0, *row = a->x + i * n + j0;
            float *out = a->dx + i * n + j0;

            for (int64_t j = 0; j < m; j++)
                out[j] = c0[j] * (g[j] - c1[j] -
                                  (row[j] - mean[j0 + j]) * c2[j]);
        }
    }
}

void bp_batch_norm_backward(float *dx, float *dgamma, float *dbeta,
                            const float *dy, const float *x,
                            const float *stats, const float *gamma,
                            int64_t batch, int64_t n)
{
    bp_norm_args a = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy,
                      .x = x, .stats_in = stats, .gamma = gamma,
                      .batch = batch, .n = n};
    int64_t blocks = (n + BP_NORM_BLOCK - 1) / BP_NORM_BLOCK;

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), blocks,
                    bp_batch_norm_backward_range, &a);
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

/* Layer norm on the rows [begin, end). */
static void bp_layer_norm_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args *a = ctx;
    int64_t n = a->n;

    for (int64_t i = begin; i < end; i++) {
        const float *row = a->x + i * n;
        float *out = a->y + i * n;
        float mean, rstd;

        bp_row_stats(row, n, a->eps, &mean, &rstd);
        if (a->beta != NULL)
            for (int64_t j = 0; j < n; j++)
                out[j] = (row[j] - mean) * rstd * a->gamma[j] + a->beta[j];
        else
            for (int64_t j = 0; j < n; j++)
                out[j] = (row[j] - mean) * rstd * a->gamma[j];
    }
}

void bp_layer_norm_forward(float *y, const float *x, const float *gamma,
                           const float *beta, float eps, int64_t batch,
                           int64_t n)
{
    bp_norm_args a = {.y = y, .x = x, .gamma = gamma, .beta = beta,
                      .eps = eps, .batch = batch, .n = n};

    bp_parallel_for(bp_norm_threads(batch, n, 3.0), batch,
                    bp_layer_norm_range, &a);
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

/* The arguments of the dropout ranges. */
typedef struct bp_dropout_args {
    float *y, *mask;
    const float *x;
    uint64_t seed, stream;
    uint32_t threshold;  /* an element drops when its 16 bits are below */
    float keep;          /* 1 / (1 - rate) */
    int64_t count;
} bp_dropout_args;

/* mask = keep where bits >= threshold, else 0; y = x * mask. */
static void bp_dropout_apply(float *restrict mask, float *restrict y,
                             const float *restrict x,
                             const uint16_t *restrict bits, int64_t n,
                             float keep, uint32_t threshold)
{
    for (int64_t i = 0; i < n; i++) {
        float m = bits[i] >= threshold ? keep : 0.0f;

        mask[i] = m;
        y[i] = x[i] * m;
    }
}

/* Groups of dropout elements drawn together before they are applied. */
#define BP_DROPOUT_CHUNK 32

/*
 * Dropout on the groups [begin, end) of BP_DROPOUT_GROUP elements: group
 * g takes its 16-bit draws from block g of the stream, so any split of
 * the groups between threads gives the same mask. The draws of a chunk
 * of groups go to the stack first, so that the loop applying them has
 * no calls and vectorises.
 */
static void bp_dropout_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_dropout_args *a = ctx;
    uint16_t bits[BP_DROPOUT_CHUNK * BP_DROPOUT_GROUP];

    for (int64_t g0 = begin; g0 < end; g0 += BP_DROPOUT_CHUNK) {
        int64_t g1 = end - g0 < BP_DROPOUT_CHUNK ? end : g0 + BP_DROPOUT_CHUNK;

        for (int64_t g = g0; g < g1; g++) {
            uint32_t word[4];
            uint16_t *b = bits + (g - g0) * BP_DROPOUT_GROUP;

            bp_rng_block(word, a->seed, BP_RNG_DROPOUT, a->stream,
                         (uint64_t)g);
            for (int k = 0; k < 4; k++) {
                b[2 * k] = (uint16_t)word[k];
                b[2 * k + 1] = (uint16_t)(word[k] >> 16);
            }
        }

        int64_t first = g0 * BP_DROPOUT_GROUP;
        int64_t n = g1 * BP_DROPOUT_GROUP < a->count
                        ? (g1 - g0) * BP_DROPOUT_GROUP
                        : a->count - first;

        bp_dropout_apply(a->mask + first, a->y + first, a->x + first, bits,
                         n, a->keep, a->threshold);
    }
}

void bp_dropout_forward(float *y, float *mask, const float *x, float rate,
                        uint64_t seed, uint64_t stream, int64_t count)
{
    if (rate <= 0.0f) {
        for (int64_t i = 0; i < count; i++) {
            mask[i] = 1.0f;
            y[i] = x[i];
        }
        return;
    }

    /* 16 random bits per element: the rate is rounded to a multiple of
       2^-16, and one Philox block serves 8 elements. */
    double scaled = (double)rate * 65536.0 + 0.5;
    bp_dropout_args a = {
        .y = y, .mask = mask, .x = x, .seed = seed, .stream = stream,
        .threshold = scaled < 65535.0 ? (uint32_t)scaled : 65535u,
        .keep = 1.0f / (1.0f - rate), .count = count,
    };
    int64_t groups = (count + BP_DROPOUT_GROUP - 1) / BP_DROPOUT_GROUP;

    /* A Philox block costs about as much as streaming 8 floats twice. */
    bp_parallel_for(bp_threads_for((double)count * 2.0 * BP_STREAM_COST),
                    groups, bp_dropout_range, &a);
}
