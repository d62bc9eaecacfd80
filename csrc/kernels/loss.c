/*
 * Losses and their gradients.
 *
 * Design decisions:
 * - Cross-entropy works on logits with log-sum-exp, and binary
 *   cross-entropy on logits in the form max(z, 0) - z t + log1p(e^-|z|),
 *   so any finite input gives a finite loss. Poisson takes e^z of the
 *   log-rate z in double: it overflows only where the loss itself is
 *   beyond double's range (z > 709).
 * - The options (bp_loss_config) and per-sample weights take their own
 *   paths only when set: with defaults and no weights every loss runs
 *   the same operations as the plain kernels, bit for bit.
 * - Each row's loss is summed in double. Rows are grouped into at most
 *   BP_LOSS_CHUNKS chunks whose bounds depend on the row count only;
 *   chunks are summed in order, so the total does not depend on the
 *   thread count.
 * - Cross-entropy with labels, the loss of classifiers, runs a block of
 *   rows per call to the kernel table's cross_entropy_rows (the SIMD
 *   levels hold a row of up to 16 classes in one or two vectors); its
 *   row losses are then summed in the same chunks, in the same order.
 * - An empty batch has loss 0.
 */
#include "kernels/loss.h"

#include "arch/dispatch.h"
#include "core/check.h"
#include "core/threads.h"

#include <math.h>

#define BP_LOSS_CHUNKS 64

/* Rows per call of a block function when a chunk holds more. */
#define BP_LOSS_BLOCK 64

/* The buffers of one loss call; `scale` turns a difference into a grad. */
typedef struct bp_loss_args {
    float *grad;
    const float *pred;
    const float *target;
    const int32_t *labels;
    int64_t rows;
    int64_t cols;
    double scale;
    const float *weights;        /* rows, or NULL for all 1 */
    const bp_loss_config *cfg;   /* resolved options, or NULL for none */
} bp_loss_args;

/* Row i's weight. */
static double bp_row_weight(const bp_loss_args *a, int64_t i)
{
    return a->weights != NULL ? (double)a->weights[i] : 1.0;
}


/*
 * Writes the summed losses of rows [i0, i0 + n) to loss[0..n) and their
 * gradients if requested.
 */
typedef void (*bp_loss_block_fn)(const void *ctx, int64_t i0,
                                 int64_t n, double *loss);

/* Row i's start when `rows` rows are split into `chunks` near-equal parts. */
static int64_t bp_chunk_start(int64_t rows, int64_t chunks, int64_t i)
{
    int64_t q = rows / chunks, r = rows % chunks;

    return q * i + (i < r ? i : r);
}

/* One loss reduction, shared by its threads; one of the functions set. */
typedef struct bp_reduce_args {
    const void *loss;
    bp_loss_row_fn row_fn;
    bp_loss_block_fn block_fn;
    int64_t rows;
    int64_t chunks;
    double *partial;  /* chunks sums */
} bp_reduce_args;

/* The losses of rows [begin, end), summed in row order. */
static double bp_reduce_rows(const bp_reduce_args *r, int64_t begin,
                             int64_t end)
{
    double losses[BP_LOSS_BLOCK];
    double sum = 0.0;

    if (r->block_fn == NULL) {
        for (int64_t i = begin; i < end; i++)
            sum += r->row_fn(r->loss, i);
        return sum;
    }
    for (int64_t i0 = begin; i0 < end; i0 += BP_LOSS_BLOCK) {
        int64_t n = end - i0 < BP_LOSS_BLOCK ? end - i0 : BP_LOSS_BLOCK;

        r->block_fn(r->loss, i0, n, losses);
        for (int64_t k = 0; k < n; k++)
            sum += losses[k];
    }
    return sum;
}

static void bp_reduce_chunks(void *ctx, int64_t begin, int64_t end)
{
    const bp_reduce_args *r = ctx;
    int64_t rows = r->rows;

    /* NOTE: with one row per chunk, a chunk's sum is its row's loss
       (0 + x is x, up to the sign of a zero, which the total's own
       0 + ... then drops), so one block call writes all the sums. */
    if (r->block_fn != NULL && r->chunks == rows) {
        r->block_fn(r->loss, begin, end - begin, r->partial + begin);
        return;
    }
    for (int64_t c = begin; c < end; c++)
        r->partial[c] = bp_reduce_rows(r, bp_chunk_start(rows, r->chunks, c),
                                       bp_chunk_start(rows, r->chunks, c + 1));
}

/*
 * The sum of row_fn (or block_fn, when not NULL) over `rows` rows, in a
 * fixed order (see the top).
 */
static double bp_reduce(const void *ctx, bp_loss_row_fn row_fn,
                        bp_loss_block_fn block_fn, int64_t rows, double cost)
{
    double partial[BP_LOSS_CHUNKS];
    bp_reduce_args args = {
        .loss = ctx, .row_fn = row_fn, .block_fn = block_fn, .rows = rows,
        .partial = partial,
        .chunks = rows < BP_LOSS_CHUNKS ? rows : BP_LOSS_CHUNKS};

    bp_parallel_for(bp_threads_for(cost), args.chunks, bp_reduce_chunks,
                    &args);

    double total = 0.0;
    for (int64_t c = 0; c < args.chunks; c++)
        total += partial[c];
    return total;
}

double bp_loss_reduce_rows(const void *ctx, bp_loss_row_fn row_fn,
                           int64_t rows, double cost)
{
    return bp_reduce(ctx, row_fn, NULL, rows, cost);
}

/* bp_reduce over a loss's rows, costing each element `cost_per_element`. */
static double bp_loss_reduce(const bp_loss_args *a, bp_loss_row_fn row_fn,
                             bp_loss_block_fn block_fn,
                             double cost_per_element)
{
    return bp_reduce(a, row_fn, block_fn, a->rows,
                     (double)a->rows * a->cols * cost_per_element);
}

static double bp_mse_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *p = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double d = (double)p[j] - t[j];

        sum += d * d;
        if (a->grad != NULL)
            a->grad[i * a->cols + j] = (float)(scale * d);
    }
    return sum * w;
}

/* NOTE: the gradient of |d| at d == 0 is taken as 0. */
static double bp_mae_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *p = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double d = (double)p[j] - t[j];

        sum += fabs(d);
        if (a->grad != NULL)
            a->grad[i * a->cols + j] =
                (float)(scale * (double)((d > 0.0) - (d < 0.0)));
    }
    return sum * w;
}

static double bp_huber_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *p = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double delta = a->cfg->delta, sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double d = (double)p[j] - t[j], ad = fabs(d);

        sum += ad <= delta ? 0.5 * d * d : delta * (ad - 0.5 * delta);
        if (a->grad != NULL) {
            double g = ad <= delta ? d : (d > 0.0 ? delta : -delta);

            a->grad[i * a->cols + j] = (float)(scale * g);
        }
    }
    return sum * w;
}

/* e^z - t z for the log-rate z; its gradient is e^z - t. */
static double bp_poisson_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *z = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double rate = exp((double)z[j]);

        sum += rate - (double)t[j] * z[j];
        if (a->grad != NULL)
            a->grad[i * a->cols + j] = (float)(scale * (rate - t[j]));
    }
    return sum * w;
}

/* Cross-entropy of rows with labels: logsumexp(z) - z[label]. */
static void bp_cross_entropy_block(const void *ctx, int64_t i0,
                                   int64_t n, double *loss)
{
    const bp_loss_args *a = ctx;
    int64_t at = i0 * a->cols;

    bp_kernels_get()->cross_entropy_rows(
        a->grad != NULL ? a->grad + at : NULL, loss, a->pred + at,
        a->labels + i0, a->weights != NULL ? a->weights + i0 : NULL,
        a->scale, n, a->cols);
}

/* Row i's target probability of class k, before smoothing. */
static double bp_target_prob(const bp_loss_args *a, int64_t i, int64_t k)
{
    if (a->labels != NULL)
        return a->labels[i] == k ? 1.0 : 0.0;
    return a->target[i * a->cols + k];
}

/*
 * Cross-entropy of one row with options: sum_k c_k q_k (lse - z_k) for
 * the smoothed targets q and class weights c. Its gradient is
 * (sum_k c_k q_k) softmax(z) - c q.
 */
static double bp_cross_entropy_soft_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *z = a->pred + i * a->cols;
    const float *cw = a->cfg->class_weights;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double s = a->cfg->label_smoothing, uniform = s / (double)a->cols;
    float max;

    float *g = a->grad != NULL ? a->grad + i * a->cols : NULL;
    /* The same exponentials as labels get, so one-hot targets give
       the same loss as their labels. */
    double sum = bp_kernels_get()->shifted_exps(g, &max, z, a->cols);
    double log_sum = log(sum), loss = 0.0, total = 0.0;

    for (int64_t k = 0; k < a->cols; k++) {
        double q = (1.0 - s) * bp_target_prob(a, i, k) + uniform;
        double ck = (cw != NULL ? (double)cw[k] : 1.0) * q;

        loss += ck * (((double)max - z[k]) + log_sum);
        total += ck;
    }

    if (g != NULL) {
        double inv = total / sum;

        for (int64_t k = 0; k < a->cols; k++) {
            double q = (1.0 - s) * bp_target_prob(a, i, k) + uniform;
            double ck = (cw != NULL ? (double)cw[k] : 1.0) * q;

            g[k] = (float)(scale * (g[k] * inv - ck));
        }
    }
    return loss * w;
}

static double bp_bce_row(const void *ctx, int64_t i)
{
    const bp_loss_args *a = ctx;
    const float *z = a->pred + i * a->cols;
    const float *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double pw = a->cfg != NULL ? a->cfg->pos_weight : 1.0;
    double sum = 0.0;

    for (int64_t j = 0; j < a->cols; j++) {
        double zj = z[j], tj = t[j], e = exp(-fabs(zj));
        /* sigmoid(z) from the same e = exp(-|z|), never overflowing. */
        double s = zj >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        double g;

        if (pw == 1.0) {
            sum += (zj > 0.0 ? zj : 0.0) - zj * tj + log1p(e);
            g = s - tj;
        } else {
            /* softplus(z) and softplus(-z) = softplus(z) - z. */
            double sp = (zj > 0.0 ? zj : 0.0) + log1p(e);

            sum += pw * tj * (sp - zj) + (1.0 - tj) * sp;
            g = s * (pw * tj + 1.0 - tj) - pw * tj;
        }
        if (a->grad != NULL)
            a->grad[i * a->cols + j] = (float)(scale * g);
    }
    return sum * w;
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
    case BP_LOSS_MAE:
        return "mae";
    case BP_LOSS_HUBER:
        return "huber";
    case BP_LOSS_POISSON:
        return "poisson";
    }
    return NULL;
}

/* Fails when an option is set that the loss does not take. */
static bp_status bp_loss_options_apply(const char *fn,
                                       const bp_loss_config *cfg)
{
    const char *option = NULL, *unset = "0";

    if (cfg->delta != 0.0f && cfg->kind != BP_LOSS_HUBER)
        option = "delta";
    else if (cfg->label_smoothing != 0.0f &&
             cfg->kind != BP_LOSS_CROSS_ENTROPY)
        option = "label_smoothing";
    else if (cfg->pos_weight != 0.0f &&
             cfg->kind != BP_LOSS_BINARY_CROSS_ENTROPY)
        option = "pos_weight";
    else if (cfg->class_weights != NULL &&
             cfg->kind != BP_LOSS_CROSS_ENTROPY) {
        option = "class_weights";
        unset = "NULL";
    }
    if (option == NULL)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: the loss %s takes no %s; set it to %s", fn,
                   bp_loss_name(cfg->kind), option, unset);
}

bp_status bp_loss_config_resolve(const char *fn, const bp_loss_config *cfg,
                                 int64_t classes, bp_loss_config *out)
{
    BP_REQUIRE_PTR(fn, cfg);
    if (bp_loss_name(cfg->kind) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the loss kind is %d, which is not a bp_loss", fn,
                       (int)cfg->kind);
    if (!isfinite(cfg->delta) || cfg->delta < 0.0f)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the huber delta is %g; it must be finite and "
                       "> 0 (0 selects 1)", fn, (double)cfg->delta);
    if (!(cfg->label_smoothing >= 0.0f && cfg->label_smoothing < 1.0f))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: label_smoothing is %g; it must be in [0, 1)", fn,
                       (double)cfg->label_smoothing);
    if (!isfinite(cfg->pos_weight) || cfg->pos_weight < 0.0f)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: pos_weight is %g; it must be finite and > 0 "
                       "(0 selects 1)", fn, (double)cfg->pos_weight);
    BP_TRY(bp_loss_options_apply(fn, cfg));
    if (cfg->class_weights != NULL)
        for (int64_t k = 0; k < classes; k++)
            if (!isfinite(cfg->class_weights[k]) ||
                cfg->class_weights[k] < 0.0f)
                return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                               "%s: class_weights[%lld] is %g; class "
                               "weights must be finite and >= 0", fn,
                               (long long)k,
                               (double)cfg->class_weights[k]);

    /* Only the loss's own options are resolved; the others stay 0. */
    *out = *cfg;
    if (out->kind == BP_LOSS_HUBER && out->delta == 0.0f)
        out->delta = 1.0f;
    if (out->kind == BP_LOSS_BINARY_CROSS_ENTROPY && out->pos_weight == 0.0f)
        out->pos_weight = 1.0f;
    return BP_STATUS_OK;
}

bp_status bp_weights_check(const char *fn, const float *weights, int64_t n)
{
    if (weights == NULL)
        return BP_STATUS_OK;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(weights[i]) || weights[i] < 0.0f)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: weights[%lld] is %g; sample weights must be "
                           "finite and >= 0", fn, (long long)i,
                           (double)weights[i]);
    return BP_STATUS_OK;
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
    bp_loss_args a = {.grad = grad, .pred = pred, .target = target,
                      .rows = rows, .cols = cols,
                      .scale = count > 0 ? 2.0 / count : 0.0};
    double sum = bp_loss_reduce(&a, bp_mse_row, NULL, 3.0);

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

    bp_loss_args a = {.grad = grad, .pred = logits, .labels = labels,
                      .rows = rows, .cols = classes,
                      .scale = rows > 0 ? 1.0 / (double)rows : 0.0};
    double sum = bp_loss_reduce(&a, NULL, bp_cross_entropy_block, 40.0);

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
    bp_loss_args a = {.grad = grad, .pred = logits, .target = target,
                      .rows = rows, .cols = cols,
                      .scale = count > 0 ? 1.0 / count : 0.0};
    double sum = bp_loss_reduce(&a, bp_bce_row, NULL, 40.0);

    if (loss != NULL)
        *loss = count > 0 ? sum / count : 0.0;
    return BP_STATUS_OK;
}

/*
 * The row function and cost of a resolved configuration; NULL with
 * *block set for cross-entropy with labels and no options.
 */
static bp_loss_row_fn bp_loss_row_of(const bp_loss_config *cfg,
                                     const int32_t *labels,
                                     bp_loss_block_fn *block, double *cost)
{
    *block = NULL;
    *cost = 3.0;
    switch (cfg->kind) {
    case BP_LOSS_MSE:
        return bp_mse_row;
    case BP_LOSS_MAE:
        return bp_mae_row;
    case BP_LOSS_HUBER:
        return bp_huber_row;
    case BP_LOSS_POISSON:
        *cost = 40.0;
        return bp_poisson_row;
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        *cost = 40.0;
        return bp_bce_row;
    case BP_LOSS_CROSS_ENTROPY:
        *cost = 40.0;
        if (labels != NULL && cfg->label_smoothing == 0.0f &&
            cfg->class_weights == NULL) {
            *block = bp_cross_entropy_block;
            return NULL;
        }
        return bp_cross_entropy_soft_row;
    }
    return NULL;
}

bp_status bp_loss_run(double *loss, float *grad, const float *pred,
                      const float *target, const int32_t *labels,
                      const float *weights, const bp_loss_config *cfg,
                      int64_t rows, int64_t cols)
{
    int per_row = cfg->kind == BP_LOSS_CROSS_ENTROPY;
    double count = per_row ? (double)rows : (double)rows * cols;
    double cost;
    bp_loss_block_fn block_fn;
    bp_loss_row_fn row_fn = bp_loss_row_of(cfg, labels, &block_fn, &cost);
    bp_loss_args a = {
        .grad = grad, .pred = pred, .target = target, .labels = labels,
        .rows = rows, .cols = cols, .weights = weights, .cfg = cfg,
        .scale = count > 0 ? 1.0 / count : 0.0,
    };

    if (row_fn == NULL && block_fn == NULL)
        return bp_fail(BP_STATUS_INTERNAL, "bp_loss: unknown loss %d",
                       (int)cfg->kind);
    /* NOTE: mse is mean(d^2), so its gradient carries the factor 2. */
    if (cfg->kind == BP_LOSS_MSE)
        a.scale *= 2.0;

    double sum = rows > 0 ? bp_loss_reduce(&a, row_fn, block_fn, cost)
                          : 0.0;
    if (loss != NULL)
        *loss = count > 0 ? sum / count : 0.0;
    return BP_STATUS_OK;
}

bp_status bp_loss_compute(double *loss, float *grad, const float *pred,
                          const float *target, const int32_t *labels,
                          const float *weights, const bp_loss_config *cfg,
                          int64_t rows, int64_t cols)
{
    static const char fn[] = "bp_loss_compute";
    bp_loss_config resolved;

    BP_TRY(bp_check_shape(fn, "rows", rows, "cols", cols));
    BP_TRY(bp_loss_config_resolve(fn, cfg, cols, &resolved));
    BP_REQUIRE_DATA(fn, pred, rows * cols);
    if (resolved.kind == BP_LOSS_CROSS_ENTROPY && labels != NULL)
        BP_TRY(bp_labels_check(fn, labels, rows, cols));
    else
        BP_REQUIRE_DATA(fn, target, rows * cols);
    BP_TRY(bp_weights_check(fn, weights, rows));
    return bp_loss_run(loss, grad, pred, target,
                       resolved.kind == BP_LOSS_CROSS_ENTROPY ? labels
                                                              : NULL,
                       weights, &resolved, rows, cols);
}
