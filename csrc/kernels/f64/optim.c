/*
 * Optimizer updates and the global gradient norm in double, with the
 * rules and conventions of the float kernels (kernels/optim.c): clipping
 * by value keeps NaN, the per-step scalars are computed once, eps is
 * added after the square root.
 */
#include "core/threads.h"
#include "kernels/f64/kernels_f64.h"

#include <math.h>

/* Doubles per block of bp_sum_squares_f64; fixed, whatever the threads. */
#define BP_NORM_BLOCK 4096

/* One update's buffers and per-step constants, shared by its threads. */
typedef struct bp_optim_args_f64 {
    double *w, *m, *s;
    const double *grad;
    const bp_optimizer *opt;
    double lr, scale, clip, decay, shrink;
    double step_size;  /* Adam: lr / (1 - beta1^t) */
    double root_bc2;   /* Adam: 1 / sqrt(1 - beta2^t) */
} bp_optim_args_f64;

static void bp_optim_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args_f64 *a = ctx;
    const bp_optimizer *o = a->opt;
    double mu = o->momentum, b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    double rho = o->rho, init = o->initial_accumulator, c = a->clip;

    for (int64_t i = begin; i < end; i++) {
        double wi = a->w[i], g = a->grad[i] * a->scale;
        double v, si;

        /* Each comparison keeps g when it is NaN. */
        g = c < g ? c : g;
        g = -c > g ? -c : g;
        g += a->decay * wi;
        switch (o->kind) {
        case BP_OPTIMIZER_SGD:
            if (mu == 0.0) {
                a->w[i] = wi - a->lr * g;
                break;
            }
            v = mu * a->m[i] + g;
            a->m[i] = v;
            a->w[i] = wi - a->lr * (o->nesterov ? g + mu * v : v);
            break;
        case BP_OPTIMIZER_ADAM:
        case BP_OPTIMIZER_ADAMW:
            v = b1 * a->m[i] + (1.0 - b1) * g;
            si = b2 * a->s[i] + (1.0 - b2) * (g * g);
            a->m[i] = v;
            a->s[i] = si;
            a->w[i] = wi * a->shrink -
                      a->step_size * v / (sqrt(si) * a->root_bc2 + eps);
            break;
        case BP_OPTIMIZER_RMSPROP:
            si = rho * a->s[i] + (1.0 - rho) * (g * g);
            a->s[i] = si;
            v = g / (sqrt(si) + eps);
            if (mu > 0.0) {
                v += mu * a->m[i];
                a->m[i] = v;
            }
            a->w[i] = wi - a->lr * v;
            break;
        case BP_OPTIMIZER_ADAGRAD:
            si = a->s[i] + g * g;
            a->s[i] = si;
            a->w[i] = wi - a->lr * (g / (sqrt(si + init) + eps));
            break;
        }
    }
}

void bp_optimizer_step_f64(double *w, double *m, double *s,
                           const double *grad, const bp_optimizer *opt,
                           const bp_update_scalars_f64 *u, int64_t n)
{
    double t = (double)u->step;
    bp_optim_args_f64 a = {
        .w = w, .m = m, .s = s, .grad = grad, .opt = opt, .lr = u->lr,
        .scale = u->grad_scale, .decay = u->weight_decay, .shrink = 1.0,
        .clip = opt->clip_value > 0.0f ? opt->clip_value : INFINITY};

    if (opt->kind == BP_OPTIMIZER_ADAMW) {
        a.shrink = 1.0 - u->lr * u->weight_decay;
        a.decay = 0.0;
    }
    a.step_size = u->lr / (1.0 - pow(opt->beta1, t));
    a.root_bc2 = 1.0 / sqrt(1.0 - pow(opt->beta2, t));
    bp_parallel_for(bp_threads_for((double)n * 4.0 * BP_STREAM_COST), n,
                    bp_optim_range, &a);
}

/* The blocks of bp_sum_squares_f64 and their partial sums. */
typedef struct bp_norm_args_f64 {
    const double *x;
    int64_t n;
    double *partial;
} bp_norm_args_f64;

static void bp_norm_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args_f64 *a = ctx;

    for (int64_t b = begin; b < end; b++) {
        int64_t lo = b * BP_NORM_BLOCK;
        int64_t hi = lo + BP_NORM_BLOCK < a->n ? lo + BP_NORM_BLOCK : a->n;
        double sum = 0.0;

        for (int64_t i = lo; i < hi; i++)
            sum += a->x[i] * a->x[i];
        a->partial[b] = sum;
    }
}

double bp_sum_squares_f64(const double *x, int64_t n)
{
    double partial[64], total = 0.0;
    int64_t blocks = (n + BP_NORM_BLOCK - 1) / BP_NORM_BLOCK;

    /* Runs of 64 blocks, each run's partial sums added in order. */
    for (int64_t first = 0; first < blocks; first += 64) {
        int64_t run = blocks - first < 64 ? blocks - first : 64;
        int64_t lo = first * BP_NORM_BLOCK;
        bp_norm_args_f64 args = {x + lo, n - lo, partial};

        bp_parallel_for(bp_threads_for((double)run * BP_NORM_BLOCK *
                                       BP_STREAM_COST),
                        run, bp_norm_range, &args);
        for (int64_t b = 0; b < run; b++)
            total += partial[b];
    }
    return total;
}
