/*
 * Optimizer updates (SGD, Adam, AdamW, RMSprop, Adagrad), learning-rate
 * schedules and the global gradient norm.
 *
 * Design decisions:
 * - Each kind has its own loop over a contiguous range, so the compiler
 *   vectorises it and the kind is tested once per call, not per element.
 *   Ranges are split over threads with bp_parallel_for; every element is
 *   updated alone, so results do not depend on the split.
 * - Clipping by value is a compare-and-select that leaves every value
 *   (NaN included) unchanged when the bound is infinite, so the
 *   unclipped update is the plain formula, bit for bit.
 * - Per-step scalars (bias corrections, AdamW's shrink factor, the
 *   scheduled rate) are computed once, in double, then rounded.
 * - PyTorch's conventions: momentum accumulates raw gradients and the
 *   rate multiplies the whole step; eps is added after the square root.
 */
#include "kernels/optim.h"

#include "arch/dispatch.h"
#include "core/check.h"
#include "core/threads.h"

#include <math.h>

/* Floats per block of bp_sum_squares; fixed, whatever the threads. */
#define BP_NORM_BLOCK 8192

/* Blocks summed per parallel region, with their partials on the stack. */
#define BP_NORM_BLOCKS 64

static const double bp_pi = 3.14159265358979323846;

const char *bp_optimizer_name(bp_optimizer_kind kind)
{
    switch (kind) {
    case BP_OPTIMIZER_SGD:
        return "sgd";
    case BP_OPTIMIZER_ADAM:
        return "adam";
    case BP_OPTIMIZER_ADAMW:
        return "adamw";
    case BP_OPTIMIZER_RMSPROP:
        return "rmsprop";
    case BP_OPTIMIZER_ADAGRAD:
        return "adagrad";
    }
    return NULL;
}

const char *bp_schedule_name(bp_schedule_kind kind)
{
    switch (kind) {
    case BP_SCHEDULE_CONSTANT:
        return "constant";
    case BP_SCHEDULE_STEP:
        return "step";
    case BP_SCHEDULE_EXPONENTIAL:
        return "exponential";
    case BP_SCHEDULE_INVERSE:
        return "inverse";
    case BP_SCHEDULE_COSINE:
        return "cosine";
    case BP_SCHEDULE_PLATEAU:
        return "plateau";
    }
    return NULL;
}

bp_status bp_optimizer_defaults(bp_optimizer *opt, bp_optimizer_kind kind)
{
    BP_REQUIRE_PTR("bp_optimizer_defaults", opt);
    if (bp_optimizer_name(kind) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "bp_optimizer_defaults: argument 'kind' is %d, "
                       "which is not a bp_optimizer_kind", (int)kind);
    *opt = (bp_optimizer){
        .kind = kind,
        .lr = 0.001f,
        .beta1 = 0.9f,
        .beta2 = 0.999f,
        .eps = 1e-8f,
        .rho = 0.9f,
    };
    if (kind == BP_OPTIMIZER_SGD || kind == BP_OPTIMIZER_ADAGRAD)
        opt->lr = 0.01f;
    if (kind == BP_OPTIMIZER_ADAGRAD)
        opt->eps = 1e-10f;
    if (kind == BP_OPTIMIZER_ADAMW)
        opt->weight_decay = 0.01f;
    return BP_STATUS_OK;
}

/* Fails unless lo <= value < hi (hi_open) or lo <= value <= hi. */
static bp_status bp_range_check(const char *fn, const char *field,
                                float value, float lo, float hi, int hi_open)
{
    int ok = value >= lo && (hi_open ? value < hi : value <= hi);

    if (ok)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: %s is %g; it must be in [%g, %g%c", fn, field,
                   (double)value, (double)lo, (double)hi,
                   hi_open ? ')' : ']');
}

/* Fails unless value is finite and >= 0 (or > 0 when `positive`). */
static bp_status bp_nonneg_check(const char *fn, const char *field,
                                 float value, int positive)
{
    if (isfinite(value) && (positive ? value > 0.0f : value >= 0.0f))
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: %s is %g; it must be finite and %s 0", fn, field,
                   (double)value, positive ? ">" : ">=");
}

bp_status bp_optimizer_check(const char *fn, const bp_optimizer *opt)
{
    BP_REQUIRE_PTR(fn, opt);
    if (bp_optimizer_name(opt->kind) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: opt->kind is %d, which is not a "
                       "bp_optimizer_kind", fn, (int)opt->kind);
    BP_TRY(bp_nonneg_check(fn, "opt->lr", opt->lr, 1));
    BP_TRY(bp_nonneg_check(fn, "opt->weight_decay", opt->weight_decay, 0));
    BP_TRY(bp_nonneg_check(fn, "opt->clip_norm", opt->clip_norm, 0));
    BP_TRY(bp_nonneg_check(fn, "opt->clip_value", opt->clip_value, 0));

    switch (opt->kind) {
    case BP_OPTIMIZER_SGD:
        BP_TRY(bp_range_check(fn, "opt->momentum", opt->momentum, 0, 1, 1));
        if (opt->nesterov && opt->momentum == 0.0f)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: opt->nesterov is set but opt->momentum is "
                           "0; Nesterov momentum needs momentum > 0", fn);
        break;
    case BP_OPTIMIZER_ADAM:
    case BP_OPTIMIZER_ADAMW:
        BP_TRY(bp_range_check(fn, "opt->beta1", opt->beta1, 0, 1, 1));
        BP_TRY(bp_range_check(fn, "opt->beta2", opt->beta2, 0, 1, 1));
        BP_TRY(bp_nonneg_check(fn, "opt->eps", opt->eps, 1));
        break;
    case BP_OPTIMIZER_RMSPROP:
        BP_TRY(bp_range_check(fn, "opt->rho", opt->rho, 0, 1, 1));
        BP_TRY(bp_range_check(fn, "opt->momentum", opt->momentum, 0, 1, 1));
        BP_TRY(bp_nonneg_check(fn, "opt->eps", opt->eps, 1));
        break;
    case BP_OPTIMIZER_ADAGRAD:
        BP_TRY(bp_nonneg_check(fn, "opt->eps", opt->eps, 1));
        BP_TRY(bp_nonneg_check(fn, "opt->initial_accumulator",
                               opt->initial_accumulator, 0));
        break;
    }
    return BP_STATUS_OK;
}

int bp_optimizer_uses_first(const bp_optimizer *opt)
{
    switch (opt->kind) {
    case BP_OPTIMIZER_ADAM:
    case BP_OPTIMIZER_ADAMW:
        return 1;
    case BP_OPTIMIZER_SGD:
    case BP_OPTIMIZER_RMSPROP:
        return opt->momentum > 0.0f;
    default:
        return 0;
    }
}

int bp_optimizer_uses_second(const bp_optimizer *opt)
{
    return opt->kind != BP_OPTIMIZER_SGD;
}

/* ------------------------------------------------------------------ */
/* Updates                                                             */
/* ------------------------------------------------------------------ */

/* One update's buffers and per-step constants, shared by its threads. */
typedef struct bp_optim_args {
    float *w, *m, *s;
    const float *grad;
    float lr, scale, clip, decay;
    float mu;          /* momentum, or beta1 */
    float nu;          /* beta2, or rho */
    float one_mu;      /* 1 - beta1 */
    float one_nu;      /* 1 - beta2, or 1 - rho */
    float eps, init;   /* eps, Adagrad's initial accumulator */
    int clipped;       /* nonzero when scale or clip changes a gradient */
    float step_size;   /* Adam: lr / (1 - beta1^t) */
    float root_bc2;    /* Adam: 1 / sqrt(1 - beta2^t) */
    float shrink;      /* AdamW: 1 - lr wd; otherwise 1 */
} bp_optim_args;

/*
 * The gradient as the update sees it: scaled and clamped to [-c, c] when
 * `clipped`, then L2 added. NOTE: each comparison keeps g when it is NaN,
 * and the pair maps to one min and one max instruction.
 */
static inline float bp_grad(float grad, float w, float scale, float c,
                            float decay, int clipped)
{
    float g = grad;

    if (clipped) {
        g *= scale;
        g = c < g ? c : g;
        g = -c > g ? -c : g;
    }
    return g + decay * w;
}

/*
 * Each kind has an inline loop taking `clipped` as a constant and a
 * range function that calls it twice, so that the unclipped update is
 * compiled without the clipping; unclipped SGD with momentum, the
 * common case, runs the kernel table's loop instead. The loops copy
 * every scalar out of the shared arguments first, and read each weight
 * once: a store through a float pointer could otherwise alias them and
 * force reloads, which stall (the slabs are 4 KiB apart modulo the page,
 * so a store to m[i] delays a later load of w[i]) or stop vectorisation.
 */
static inline void bp_sgd_plain_loop(const bp_optim_args *a, int64_t begin,
                                     int64_t end, int clipped)
{
    float *w = a->w;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];

        w[i] = wi - lr * bp_grad(grad[i], wi, scale, c, wd, clipped);
    }
}

static void bp_sgd_plain_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_sgd_plain_loop(a, begin, end, 1);
    else
        bp_sgd_plain_loop(a, begin, end, 0);
}

static inline void bp_sgd_momentum_loop(const bp_optim_args *a, int64_t begin,
                                        int64_t end, int clipped)
{
    float *w = a->w, *m = a->m;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;
    const float mu = a->mu;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float v = mu * m[i] + g;

        m[i] = v;
        w[i] = wi - lr * v;
    }
}

/*
 * Momentum without clipping, the common case, runs the kernel table's
 * loop: the same operations, vectorised for the CPU's widest level.
 */
static void bp_sgd_momentum_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_sgd_momentum_loop(a, begin, end, 1);
    else
        bp_kernels_get()->sgd_momentum(a->w + begin, a->m + begin,
                                       a->grad + begin, a->lr, a->mu,
                                       a->decay, 0, end - begin);
}

static inline void bp_sgd_nesterov_loop(const bp_optim_args *a, int64_t begin,
                                        int64_t end, int clipped)
{
    float *w = a->w, *m = a->m;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;
    const float mu = a->mu;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float v = mu * m[i] + g;

        m[i] = v;
        w[i] = wi - lr * (g + mu * v);
    }
}

static void bp_sgd_nesterov_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_sgd_nesterov_loop(a, begin, end, 1);
    else
        bp_kernels_get()->sgd_momentum(a->w + begin, a->m + begin,
                                       a->grad + begin, a->lr, a->mu,
                                       a->decay, 1, end - begin);
}

static inline void bp_adam_loop(const bp_optim_args *a, int64_t begin,
                                int64_t end, int clipped)
{
    float *w = a->w, *m = a->m, *s = a->s;
    const float *grad = a->grad;
    const float scale = a->scale, c = a->clip, wd = a->decay;
    const float b1 = a->mu, b2 = a->nu, one_b1 = a->one_mu;
    const float one_b2 = a->one_nu, eps = a->eps, step = a->step_size;
    const float root = a->root_bc2, shrink = a->shrink;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float mi = b1 * m[i] + one_b1 * g;
        float si = b2 * s[i] + one_b2 * (g * g);

        m[i] = mi;
        s[i] = si;
        w[i] = wi * shrink - step * mi / (sqrtf(si) * root + eps);
    }
}

static void bp_adam_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_adam_loop(a, begin, end, 1);
    else
        bp_adam_loop(a, begin, end, 0);
}

static inline void bp_rmsprop_loop(const bp_optim_args *a, int64_t begin,
                                   int64_t end, int clipped)
{
    float *w = a->w, *s = a->s;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;
    const float rho = a->nu, one_rho = a->one_nu, eps = a->eps;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float si = rho * s[i] + one_rho * (g * g);

        s[i] = si;
        w[i] = wi - lr * (g / (sqrtf(si) + eps));
    }
}

static void bp_rmsprop_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_rmsprop_loop(a, begin, end, 1);
    else
        bp_rmsprop_loop(a, begin, end, 0);
}

static inline void bp_rmsprop_momentum_loop(const bp_optim_args *a,
                                            int64_t begin, int64_t end,
                                            int clipped)
{
    float *w = a->w, *m = a->m, *s = a->s;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;
    const float rho = a->nu, one_rho = a->one_nu, eps = a->eps;
    const float mu = a->mu;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float si = rho * s[i] + one_rho * (g * g);
        float v = mu * m[i] + g / (sqrtf(si) + eps);

        s[i] = si;
        m[i] = v;
        w[i] = wi - lr * v;
    }
}

static void bp_rmsprop_momentum_range(void *ctx, int64_t begin,
                                      int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_rmsprop_momentum_loop(a, begin, end, 1);
    else
        bp_rmsprop_momentum_loop(a, begin, end, 0);
}

static inline void bp_adagrad_loop(const bp_optim_args *a, int64_t begin,
                                   int64_t end, int clipped)
{
    float *w = a->w, *s = a->s;
    const float *grad = a->grad;
    const float lr = a->lr, scale = a->scale, c = a->clip, wd = a->decay;
    const float eps = a->eps, init = a->init;

    for (int64_t i = begin; i < end; i++) {
        float wi = w[i];
        float g = bp_grad(grad[i], wi, scale, c, wd, clipped);
        float si = s[i] + g * g;

        s[i] = si;
        w[i] = wi - lr * (g / (sqrtf(si + init) + eps));
    }
}

static void bp_adagrad_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_optim_args *a = ctx;

    if (a->clipped)
        bp_adagrad_loop(a, begin, end, 1);
    else
        bp_adagrad_loop(a, begin, end, 0);
}

/* Picks the loop for `opt` and fills the constants it reads. */
static bp_range_fn bp_optim_prepare(bp_optim_args *a, const bp_optimizer *opt,
                                    const bp_update_scalars *u)
{
    double t = (double)u->step;

    a->lr = u->lr;
    a->scale = u->grad_scale;
    a->clip = opt->clip_value > 0.0f ? opt->clip_value : INFINITY;
    a->decay = u->weight_decay;
    a->clipped = a->scale != 1.0f || opt->clip_value > 0.0f;
    a->eps = opt->eps;
    a->shrink = 1.0f;

    switch (opt->kind) {
    case BP_OPTIMIZER_SGD:
        a->mu = opt->momentum;
        if (opt->momentum == 0.0f)
            return bp_sgd_plain_range;
        return opt->nesterov ? bp_sgd_nesterov_range : bp_sgd_momentum_range;
    case BP_OPTIMIZER_ADAM:
    case BP_OPTIMIZER_ADAMW:
        if (opt->kind == BP_OPTIMIZER_ADAMW) {
            a->shrink = (float)(1.0 - (double)u->lr * u->weight_decay);
            a->decay = 0.0f;
        }
        a->mu = opt->beta1;
        a->nu = opt->beta2;
        a->one_mu = 1.0f - opt->beta1;
        a->one_nu = 1.0f - opt->beta2;
        a->step_size = (float)((double)u->lr /
                               (1.0 - pow((double)opt->beta1, t)));
        a->root_bc2 = (float)(1.0 / sqrt(1.0 - pow((double)opt->beta2, t)));
        return bp_adam_range;
    case BP_OPTIMIZER_RMSPROP:
        a->mu = opt->momentum;
        a->nu = opt->rho;
        a->one_nu = 1.0f - opt->rho;
        return opt->momentum > 0.0f ? bp_rmsprop_momentum_range
                                    : bp_rmsprop_range;
    case BP_OPTIMIZER_ADAGRAD:
        a->init = opt->initial_accumulator;
        return bp_adagrad_range;
    }
    return NULL;
}

void bp_optimizer_step(float *w, float *m, float *s, const float *grad,
                       const bp_optimizer *opt, const bp_update_scalars *u,
                       int64_t n)
{
    bp_optim_args args = {.w = w, .m = m, .s = s, .grad = grad};
    bp_range_fn fn = bp_optim_prepare(&args, opt, u);

    /* w, grad and one state slab (SGD), or two (the others), stream once. */
    double streams = opt->kind == BP_OPTIMIZER_SGD ? 3.0 : 4.0;
    int threads = bp_threads_for((double)n * streams * BP_STREAM_COST);

    if (fn != NULL)
        bp_parallel_for(threads, n, fn, &args);
}

bp_status bp_optimizer_update(float *w, float *m, float *s,
                              const float *grad, const bp_optimizer *opt,
                              float lr, float weight_decay, uint64_t step,
                              int64_t n)
{
    static const char fn[] = "bp_optimizer_update";

    BP_TRY(bp_optimizer_check(fn, opt));
    BP_TRY(bp_nonneg_check(fn, "argument 'lr'", lr, 0));
    BP_TRY(bp_nonneg_check(fn, "argument 'weight_decay'", weight_decay, 0));
    if (step < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'step' is 0; updates count from 1",
                       fn);
    BP_REQUIRE_SIZE(fn, n);
    BP_REQUIRE_DATA(fn, w, n);
    BP_REQUIRE_DATA(fn, grad, n);
    if (bp_optimizer_uses_first(opt))
        BP_REQUIRE_DATA(fn, m, n);
    if (bp_optimizer_uses_second(opt))
        BP_REQUIRE_DATA(fn, s, n);

    bp_update_scalars u = {.lr = lr, .grad_scale = 1.0f,
                           .weight_decay = weight_decay, .step = step};
    bp_optimizer_step(w, m, s, grad, opt, &u, n);
    return BP_STATUS_OK;
}

/* ------------------------------------------------------------------ */
/* The global norm                                                     */
/* ------------------------------------------------------------------ */

/* A run of blocks of bp_sum_squares and their partial sums. */
typedef struct bp_norm_args {
    const float *x;
    int64_t n;
    int64_t first;     /* index of the run's first block */
    double *partial;   /* one per block of the run */
} bp_norm_args;

static void bp_norm_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_norm_args *a = ctx;

    for (int64_t b = begin; b < end; b++) {
        int64_t lo = (a->first + b) * BP_NORM_BLOCK;
        int64_t hi = lo + BP_NORM_BLOCK < a->n ? lo + BP_NORM_BLOCK : a->n;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        int64_t i = lo;

        /* Four independent sums keep the adds pipelined. */
        for (; i + 4 <= hi; i += 4)
            for (int k = 0; k < 4; k++)
                acc[k] += (double)a->x[i + k] * (double)a->x[i + k];
        for (; i < hi; i++)
            acc[0] += (double)a->x[i] * (double)a->x[i];
        a->partial[b] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

double bp_sum_squares(const float *x, int64_t n)
{
    int64_t blocks = (n + BP_NORM_BLOCK - 1) / BP_NORM_BLOCK;
    double partial[BP_NORM_BLOCKS];
    double total = 0.0;

    for (int64_t first = 0; first < blocks; first += BP_NORM_BLOCKS) {
        int64_t run = blocks - first < BP_NORM_BLOCKS ? blocks - first
                                                      : BP_NORM_BLOCKS;
        bp_norm_args args = {x, n, first, partial};
        int threads = bp_threads_for((double)run * BP_NORM_BLOCK *
                                     BP_STREAM_COST);

        bp_parallel_for(threads, run, bp_norm_range, &args);
        for (int64_t b = 0; b < run; b++)
            total += partial[b];
    }
    return total;
}

/* ------------------------------------------------------------------ */
/* Schedules                                                           */
/* ------------------------------------------------------------------ */

/* Fails unless an int64 field is >= lo. */
static bp_status bp_count_check(const char *fn, const char *field,
                                int64_t value, int64_t lo)
{
    if (value >= lo)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: %s is %lld; it must be >= %lld", fn, field,
                   (long long)value, (long long)lo);
}

/* PLATEAU's settings and state. */
static bp_status bp_plateau_check(const char *fn, const bp_schedule *s)
{
    if (!(s->gamma > 0.0f && s->gamma < 1.0f))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: sched->gamma is %g; a plateau schedule needs "
                       "a factor in (0, 1)", fn, (double)s->gamma);
    BP_TRY(bp_nonneg_check(fn, "sched->threshold", s->threshold, 0));
    BP_TRY(bp_nonneg_check(fn, "sched->min_lr", s->min_lr, 0));
    BP_TRY(bp_count_check(fn, "sched->patience", s->patience, 0));
    BP_TRY(bp_count_check(fn, "sched->cooldown", s->cooldown, 0));
    BP_TRY(bp_count_check(fn, "sched->reductions", s->reductions, 0));
    BP_TRY(bp_count_check(fn, "sched->wait", s->wait, 0));
    BP_TRY(bp_count_check(fn, "sched->cooldown_left", s->cooldown_left, 0));
    if (s->has_best && !isfinite(s->best))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: sched->best is %g; it must be finite", fn,
                       s->best);
    return BP_STATUS_OK;
}

bp_status bp_schedule_check(const char *fn, const bp_schedule *s)
{
    if (s == NULL)
        return BP_STATUS_OK;
    if (bp_schedule_name(s->kind) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: sched->kind is %d, which is not a "
                       "bp_schedule_kind", fn, (int)s->kind);
    BP_TRY(bp_count_check(fn, "sched->interval", s->interval, 0));

    switch (s->kind) {
    case BP_SCHEDULE_CONSTANT:
        break;
    case BP_SCHEDULE_STEP:
    case BP_SCHEDULE_EXPONENTIAL:
        if (s->kind == BP_SCHEDULE_STEP)
            BP_TRY(bp_count_check(fn, "sched->step_size", s->step_size, 1));
        if (!(s->gamma > 0.0f && s->gamma <= 1.0f))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: sched->gamma is %g; it must be in (0, 1]",
                           fn, (double)s->gamma);
        break;
    case BP_SCHEDULE_INVERSE:
        BP_TRY(bp_nonneg_check(fn, "sched->gamma", s->gamma, 0));
        BP_TRY(bp_nonneg_check(fn, "sched->power", s->power, 0));
        break;
    case BP_SCHEDULE_COSINE:
        BP_TRY(bp_count_check(fn, "sched->warmup", s->warmup, 0));
        if (s->period <= s->warmup)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: sched->period is %lld; it must be larger "
                           "than sched->warmup (%lld)", fn,
                           (long long)s->period, (long long)s->warmup);
        BP_TRY(bp_nonneg_check(fn, "sched->min_lr", s->min_lr, 0));
        break;
    case BP_SCHEDULE_PLATEAU:
        BP_TRY(bp_plateau_check(fn, s));
        break;
    }
    return BP_STATUS_OK;
}

/* COSINE at tick k, in double. */
static double bp_cosine_rate(const bp_schedule *s, double lr, uint64_t k)
{
    uint64_t warmup = (uint64_t)s->warmup, period = (uint64_t)s->period;
    double floor_lr = s->min_lr;

    if (k < warmup)
        return lr * (double)(k + 1) / (double)warmup;
    if (k >= period)
        return floor_lr;

    double p = (double)(k - warmup) / (double)(period - warmup);
    return floor_lr + (lr - floor_lr) * 0.5 * (1.0 + cos(bp_pi * p));
}

double bp_schedule_rate_f64(const bp_schedule *s, double lr, uint64_t step)
{
    if (s == NULL)
        return lr;

    uint64_t k = step / (s->interval > 1 ? (uint64_t)s->interval : 1);
    double base = lr, rate = base;

    switch (s->kind) {
    case BP_SCHEDULE_CONSTANT:
        break;
    case BP_SCHEDULE_STEP:
        rate = base * pow(s->gamma, (double)(k / (uint64_t)s->step_size));
        break;
    case BP_SCHEDULE_EXPONENTIAL:
        rate = base * pow(s->gamma, (double)k);
        break;
    case BP_SCHEDULE_INVERSE:
        rate = base / pow(1.0 + (double)s->gamma * (double)k, s->power);
        break;
    case BP_SCHEDULE_COSINE:
        rate = bp_cosine_rate(s, base, k);
        break;
    case BP_SCHEDULE_PLATEAU:
        rate = base * pow(s->gamma, (double)s->reductions);
        rate = fmin(base, fmax(rate, (double)s->min_lr));
        break;
    }
    return rate;
}

float bp_schedule_rate(const bp_schedule *s, float lr, uint64_t step)
{
    return (float)bp_schedule_rate_f64(s, lr, step);
}

bp_status bp_schedule_lr(const bp_schedule *sched, float lr, uint64_t step,
                         float *out)
{
    static const char fn[] = "bp_schedule_lr";

    BP_REQUIRE_PTR(fn, out);
    BP_TRY(bp_nonneg_check(fn, "argument 'lr'", lr, 1));
    BP_TRY(bp_schedule_check(fn, sched));
    *out = bp_schedule_rate(sched, lr, step);
    return BP_STATUS_OK;
}

bp_status bp_schedule_observe(bp_schedule *s, double metric)
{
    static const char fn[] = "bp_schedule_observe";

    BP_REQUIRE_PTR(fn, s);
    BP_TRY(bp_schedule_check(fn, s));
    if (!isfinite(metric))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'metric' is %g; it must be finite",
                       fn, metric);
    if (s->kind != BP_SCHEDULE_PLATEAU)
        return BP_STATUS_OK;

    if (!s->has_best ||
        metric < s->best - (double)s->threshold * fabs(s->best)) {
        s->best = metric;
        s->has_best = 1;
        s->wait = 0;
    } else {
        s->wait++;
    }
    if (s->cooldown_left > 0) {
        s->cooldown_left--;
        s->wait = 0;
    }
    if (s->wait > s->patience) {
        s->reductions++;
        s->cooldown_left = s->cooldown;
        s->wait = 0;
    }
    return BP_STATUS_OK;
}
