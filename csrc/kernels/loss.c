/*
 * Losses and their gradients.
 *
 * Design decisions:
 * - Cross-entropy works on logits with log-sum-exp, and binary
 *   cross-entropy on logits in the form max(z, 0) - z t + log1p(e^-|z|),
 *   so any finite input gives a finite loss.
 * - Each row's loss is summed in double. Rows are grouped into at most
 *   BP_LOSS_CHUNKS chunks whose bounds depend on the row count only;
 *   chunks are summed in order, so the total does not depend on the
 *   thread count.
 * - An empty batch has loss 0.
 */
#include "kernels/loss.h"

#include "core/check.h"
#include "core/threads.h"
#include "kernels/exp.h"

#include <math.h>

#define BP_LOSS_CHUNKS 64

/* Exponentials of a cross-entropy row taken per vectorised pass. */
#define BP_EXP_BLOCK 256

/* The buffers of one loss call; `scale` turns a difference into a grad. */
typedef struct bp_loss_args {
    float *grad;
    const float *pred;
    const float *target;
    const int32_t *labels;
    int64_t rows;
    int64_t cols;
    double scale;
} bp_loss_args;

/* Returns row i's summed loss and writes its gradient if requested. */
typedef double (*bp_loss_row_fn)(const bp_loss_args *a, int64_t i);

/* Row i's start when `rows` rows are split into `chunks` near-equal parts. */
static int64_t bp_chunk_start(int64_t rows, int64_t chunks, int64_t i)
{
    int64_t q = rows / chunks, r = rows % chunks;

    return q * i + (i < r ? i : r);
}

/* One loss reduction, shared by its threads. */
typedef struct bp_reduce_args {
    const bp_loss_args *loss;
    bp_loss_row_fn row_fn;
    int64_t chunks;
    double *partial;  /* chunks sums */
} bp_reduce_args;

static void bp_reduce_chunks(void *ctx, int64_t begin, int64_t end)
{
    const bp_reduce_args *r = ctx;
    int64_t rows = r->loss->rows;

    for (int64_t c = begin; c < end; c++) {
        int64_t stop = bp_chunk_start(rows, r->chunks, c + 1);
        double sum = 0.0;

        for (int64_t i = bp_chunk_start(rows, r->chunks, c); i < stop; i++)
            sum += r->row_fn(r->loss, i);
        r->partial[c] = sum;
    }
}

/* The sum of row_fn over all rows, in a fixed order (see the top). */
static double bp_loss_reduce(const bp_loss_args *a, bp_loss_row_fn row_fn,
                             double cost_per_element)
{
    double partial[BP_LOSS_CHUNKS];
    bp_reduce_args args = {
        .loss = a, .row_fn = row_fn, .partial = partial,
        .chunks = a->rows < BP_LOSS_CHUNKS ? a->rows : BP_LOSS_CHUNKS};
    int threads = bp_threads_for((double)a->rows * a->cols *
                                 cost_per_element);

    bp_parallel_for(threads, args.chunks, bp_reduce_chunks, &args);

    double total = 0.0;
    for (int64_t c = 0; c < args.chunks; c++)
        total += partial[c];
    return total;
}

static double bp_mse_row(const bp_loss_args *a, int64_t i)
{
    const float *p = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double d = (double)p[j] - t[j];

        sum += d * d;
        if (a->grad != NULL)
            a->grad[i * a->cols + j] = (float)(a->scale * d);
    }
    return sum;
}

/* Cross-entropy of one row: logsumexp(z) - z[label], shifted by max(z). */
static double bp_cross_entropy_row(const bp_loss_args *a, int64_t i)
{
    const float *z = a->pred + i * a->cols;
    int32_t label = a->labels[i];
    float max = z[0];

    for (int64_t j = 1; j < a->cols; j++)
        max = z[j] > max ? z[j] : max;

    /* With a gradient, keep each exp there to normalise it afterwards.
       The exponentials are taken a block at a time, apart from the
       double-precision sum, so that their loop vectorises. */
    float *g = a->grad != NULL ? a->grad + i * a->cols : NULL;
    float block[BP_EXP_BLOCK];
    double sum = 0.0;
    for (int64_t j0 = 0; j0 < a->cols; j0 += BP_EXP_BLOCK) {
        int64_t n = a->cols - j0 < BP_EXP_BLOCK ? a->cols - j0
                                                : BP_EXP_BLOCK;
        float *e = g != NULL ? g + j0 : block;

        for (int64_t j = 0; j < n; j++)
            e[j] = bp_exp_neg(z[j0 + j] - max);
        for (int64_t j = 0; j < n; j++)
            sum += e[j];
    }

    if (g != NULL) {
        double inv = 1.0 / sum;

        for (int64_t j = 0; j < a->cols; j++)
            g[j] = (float)(a->scale * (g[j] * inv - (j == label)));
    }
    return ((double)max - z[label]) + log(sum);
}

static double bp_bce_row(const bp_loss_args *a, int64_t i)
{
    const float *z = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double zj = z[j], e = exp(-fabs(zj));

        sum += (zj > 0.0 ? zj : 0.0) - zj * t[j] + log1p(e);
        if (a->grad != NULL) {
            /* sigmoid(z) from the same e = exp(-|z|), never overflowing. */
            double s = zj >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);

            a->grad[i * a->cols + j] = (float)(a->scale * (s - t[j]));
        }
    }
    return sum;
}

const char *bp_loss_name(bp_loss loss)
{
    switch (loss) {
    case BP_LOSS_MSE:
        return "mse";
    case BP_LOSS_CROSS_ENTROPY:
        return "cross_entropy";
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        return "binary_cross_entropy";
    }
    return NULL;
}

bp_status bp_labels_check(const char *fn, const int32_t *labels,
                          int64_t rows, int64_t classes)
{
    if (classes < 1 && rows > 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: there are no classes (cols is 0), so no label "
                       "is valid", fn);
    for (int64_t i = 0; i < rows; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: labels[%lld] is %d; it must be in [0, %lld)",
                           fn, (long long)i, (int)labels[i],
                           (long long)classes);
    return BP_STATUS_OK;
}

/* Validates the arguments of mse. */
static bp_status bp_loss_check(const char *fn, const float *pred,
                               const float *target, int64_t rows,
                               int64_t cols)
{
    BP_TRY(bp_check_shape(fn, "rows", rows, "cols", cols));
    BP_REQUIRE_DATA(fn, pred, rows * cols);
    BP_REQUIRE_DATA(fn, target, rows * cols);
    return BP_STATUS_OK;
}

bp_status bp_loss_mse(double *loss, float *grad, const float *pred,
                      const float *target, int64_t rows, int64_t cols)
{
    BP_TRY(bp_loss_check("bp_loss_mse", pred, target, rows, cols));

    double count = (double)rows * cols;
    bp_loss_args a = {grad, pred, target, NULL, rows, cols,
                      count > 0 ? 2.0 / count : 0.0};
    double sum = bp_loss_reduce(&a, bp_mse_row, 3.0);

    if (loss != NULL)
        *loss = count > 0 ? sum / count : 0.0;
    return BP_STATUS_OK;
}

bp_status bp_loss_cross_entropy(double *loss, float *grad,
                                const float *logits, const int32_t *labels,
                                int64_t rows, int64_t classes)
{
    static const char fn[] = "bp_loss_cross_entropy";

    BP_TRY(bp_check_shape(fn, "rows", rows, "classes", classes));
    BP_REQUIRE_DATA(fn, labels, rows);
    BP_REQUIRE_DATA(fn, logits, rows * classes);
    BP_TRY(bp_labels_check(fn, labels, rows, classes));

    bp_loss_args a = {grad, logits, NULL, labels, rows, classes,
                      rows > 0 ? 1.0 / (double)rows : 0.0};
    double sum = bp_loss_reduce(&a, bp_cross_entropy_row, 40.0);

    if (loss != NULL)
        *loss = rows > 0 ? sum / (double)rows : 0.0;
    return BP_STATUS_OK;
}

bp_status bp_loss_binary_cross_entropy(double *loss, float *grad,
                                       const float *logits,
                                       const float *target, int64_t rows,
                                       int64_t cols)
{
    static const char fn[] = "bp_loss_binary_cross_entropy";

    /* Checked here, not by bp_loss_check, so messages say 'logits'. */
    BP_TRY(bp_check_shape(fn, "rows", rows, "cols", cols));
    BP_REQUIRE_DATA(fn, logits, rows * cols);
    BP_REQUIRE_DATA(fn, target, rows * cols);

    double count = (double)rows * cols;
    bp_loss_args a = {grad, logits, target, NULL, rows, cols,
                      count > 0 ? 1.0 / count : 0.0};
    double sum = bp_loss_reduce(&a, bp_bce_row, 40.0);

    if (loss != NULL)
        *loss = count > 0 ? sum / count : 0.0;
    return BP_STATUS_OK;
}
