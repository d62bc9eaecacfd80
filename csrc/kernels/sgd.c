/*
 * Stochastic gradient descent with optional (Nesterov) momentum and an
 * L2 penalty, in PyTorch's convention: the velocity accumulates raw
 * gradients and the learning rate multiplies the whole step.
 */
#include "kernels/sgd.h"

#include "core/check.h"
#include "core/threads.h"

#include <math.h>

bp_status bp_sgd_check(const char *fn, const bp_sgd_config *cfg)
{
    BP_REQUIRE_PTR(fn, cfg);
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: cfg->lr is %g; it must be finite and > 0", fn,
                       (double)cfg->lr);
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: cfg->momentum is %g; it must be in [0, 1)", fn,
                       (double)cfg->momentum);
    if (cfg->nesterov && cfg->momentum == 0.0f)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: cfg->nesterov is set but cfg->momentum is 0; "
                       "Nesterov momentum needs momentum > 0", fn);
    if (!(cfg->l2 >= 0.0f) || !isfinite(cfg->l2))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: cfg->l2 is %g; it must be finite and >= 0", fn,
                       (double)cfg->l2);
    return BP_STATUS_OK;
}

/* One SGD step, shared by its threads. */
typedef struct bp_sgd_args {
    float *w, *velocity;
    const float *grad;
    float lr, mu, l2;
    int nesterov;
} bp_sgd_args;

static void bp_sgd_range(void *ctx, int64_t begin, int64_t end)
{
    const bp_sgd_args *a = ctx;
    float *w = a->w, *velocity = a->velocity;
    const float *grad = a->grad;
    float lr = a->lr, mu = a->mu, l2 = a->l2;

    if (mu == 0.0f) {
        for (int64_t i = begin; i < end; i++)
            w[i] -= lr * (grad[i] + l2 * w[i]);
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        float g = grad[i] + l2 * w[i];
        float v = mu * velocity[i] + g;

        velocity[i] = v;
        w[i] -= lr * (a->nesterov ? g + mu * v : v);
    }
}

void bp_sgd_step(float *w, float *velocity, const float *grad,
                 const bp_sgd_config *cfg, float l2, int64_t n)
{
    bp_sgd_args args = {.w = w, .velocity = velocity, .grad = grad,
                        .lr = cfg->lr, .mu = cfg->momentum, .l2 = l2,
                        .nesterov = cfg->nesterov};

    /* w, velocity and grad are each streamed once. */
    int threads = bp_threads_for((double)n * 3.0 * BP_STREAM_COST);

    bp_parallel_for(threads, n, bp_sgd_range, &args);
}

bp_status bp_sgd_update(float *w, float *velocity, const float *grad,
                        const bp_sgd_config *cfg, float l2, int64_t n)
{
    static const char fn[] = "bp_sgd_update";

    BP_TRY(bp_sgd_check(fn, cfg));
    if (!(l2 >= 0.0f) || !isfinite(l2))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'l2' is %g; it must be finite and "
                       ">= 0", fn, (double)l2);
    BP_REQUIRE_SIZE(fn, n);
    BP_REQUIRE_DATA(fn, w, n);
    BP_REQUIRE_DATA(fn, grad, n);
    if (cfg->momentum > 0.0f)
        BP_REQUIRE_DATA(fn, velocity, n);

    bp_sgd_step(w, velocity, grad, cfg, l2, n);
    return BP_STATUS_OK;
}
