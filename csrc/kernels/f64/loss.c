/*
 * Losses and their gradients in double, with the formulas, options and
 * sample weights of the float kernels (kernels/loss.c), and the same
 * fixed-order reduction over rows (bp_loss_reduce_rows).
 */
#include "core/check.h"
#include "kernels/f64/kernels_f64.h"
#include "kernels/loss.h"

#include <math.h>

/* The buffers of one loss call; `scale` turns a difference into a grad. */
typedef struct bp_loss_args_f64 {
    double *grad;
    const double *pred, *target;
    const int32_t *labels;
    const double *weights;
    const bp_loss_config *cfg;
    int64_t cols;
    double scale;
} bp_loss_args_f64;

/* Row i's weight. */
static double bp_row_weight(const bp_loss_args_f64 *a, int64_t i)
{
    return a->weights != NULL ? a->weights[i] : 1.0;
}

/* The loss of one element-wise term and its derivative, by kind. */
static double bp_term(const bp_loss_config *cfg, double p, double t,
                      double *g)
{
    double d = p - t, ad = fabs(d), delta = cfg->delta;

    switch (cfg->kind) {
    case BP_LOSS_MSE:
        *g = d;
        return d * d;
    case BP_LOSS_MAE:
        /* NOTE: the gradient of |d| at d == 0 is taken as 0. */
        *g = (double)((d > 0.0) - (d < 0.0));
        return ad;
    case BP_LOSS_HUBER:
        *g = ad <= delta ? d : (d > 0.0 ? delta : -delta);
        return ad <= delta ? 0.5 * d * d : delta * (ad - 0.5 * delta);
    case BP_LOSS_POISSON: {
        double rate = exp(p);

        *g = rate - t;
        return rate - t * p;
    }
    default: {
        /* Binary cross-entropy from the logit p, sigmoid fused. */
        double pw = cfg->pos_weight, e = exp(-fabs(p));
        double s = p >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        double sp = (p > 0.0 ? p : 0.0) + log1p(e);

        *g = s * (pw * t + 1.0 - t) - pw * t;
        return pw * t * (sp - p) + (1.0 - t) * sp;
    }
    }
}

static double bp_elementwise_row(const void *ctx, int64_t i)
{
    const bp_loss_args_f64 *a = ctx;
    const double *p = a->pred + i * a->cols;
    const double *t = a->target + i * a->cols;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double sum = 0.0, g;

    for (int64_t j = 0; j < a->cols; j++) {
        sum += bp_term(a->cfg, p[j], t[j], &g);
        if (a->grad != NULL)
            a->grad[i * a->cols + j] = scale * g;
    }
    return sum * w;
}

/*
 * Cross-entropy of one row from logits: sum_k c_k q_k (lse - z_k) for
 * the smoothed targets q and class weights c (all 1 by default); its
 * gradient is (sum_k c_k q_k) softmax(z) - c q.
 */
static double bp_cross_entropy_row(const void *ctx, int64_t i)
{
    const bp_loss_args_f64 *a = ctx;
    const double *z = a->pred + i * a->cols;
    const float *cw = a->cfg->class_weights;
    double w = bp_row_weight(a, i), scale = a->scale * w;
    double s = a->cfg->label_smoothing, uniform = s / (double)a->cols;
    double max = z[0], sum = 0.0, loss = 0.0, total = 0.0;
    double *g = a->grad != NULL ? a->grad + i * a->cols : NULL;

    for (int64_t k = 1; k < a->cols; k++)
        max = z[k] > max ? z[k] : max;
    for (int64_t k = 0; k < a->cols; k++)
        sum += exp(z[k] - max);

    double log_sum = log(sum);
    for (int64_t k = 0; k < a->cols; k++) {
        double p = a->labels != NULL ? (a->labels[i] == k ? 1.0 : 0.0)
                                     : a->target[i * a->cols + k];
        double ck = (cw != NULL ? (double)cw[k] : 1.0) *
                    ((1.0 - s) * p + uniform);

        loss += ck * ((max - z[k]) + log_sum);
        total += ck;
        if (g != NULL)
            g[k] = ck;
    }
    for (int64_t k = 0; g != NULL && k < a->cols; k++)
        g[k] = scale * (exp(z[k] - max) / sum * total - g[k]);
    return loss * w;
}

void bp_loss_run_f64(double *loss, double *grad, const double *pred,
                     const double *target, const int32_t *labels,
                     const double *weights, const bp_loss_config *cfg,
                     int64_t rows, int64_t cols)
{
    int per_row = cfg->kind == BP_LOSS_CROSS_ENTROPY;
    double count = per_row ? (double)rows : (double)rows * cols;
    bp_loss_args_f64 a = {
        .grad = grad, .pred = pred, .target = target, .labels = labels,
        .weights = weights, .cfg = cfg, .cols = cols,
        .scale = count > 0 ? 1.0 / count : 0.0,
    };

    /* NOTE: mse is mean(d^2), so its gradient carries the factor 2. */
    if (cfg->kind == BP_LOSS_MSE)
        a.scale *= 2.0;

    double sum = 0.0;
    if (rows > 0)
        sum = bp_loss_reduce_rows(&a, per_row ? bp_cross_entropy_row
                                              : bp_elementwise_row,
                                  rows, (double)rows * cols * 40.0);
    if (loss != NULL)
        *loss = count > 0 ? sum / count : 0.0;
}

bp_status bp_weights_check_f64(const char *fn, const double *weights,
                               int64_t n)
{
    if (weights == NULL)
        return BP_STATUS_OK;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(weights[i]) || weights[i] < 0.0)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: weights[%lld] is %g; sample weights must be "
                           "finite and >= 0", fn, (long long)i, weights[i]);
    return BP_STATUS_OK;
}
