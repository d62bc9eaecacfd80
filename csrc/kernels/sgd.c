/*
 * Stochastic gradient descent with optional (Nesterov) momentum and an
 * L2 penalty, in PyTorch's convention: the velocity accumulates raw
 * gradients and the learning rate multiplies the whole step.
 */
#include "kernels/sgd.h"

#include "core/check.h"
#include "kernels/optim.h"

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

bp_optimizer bp_sgd_optimizer(const bp_sgd_config *cfg)
{
    bp_optimizer opt = {.kind = BP_OPTIMIZER_SGD, .lr = cfg->lr,
                        .momentum = cfg->momentum,
                        .nesterov = cfg->nesterov, .weight_decay = cfg->l2};

    return opt;
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

    /* The SGD loops live with the other optimizers' in optim.c. */
    bp_optimizer opt = bp_sgd_optimizer(cfg);
    bp_update_scalars u = {.lr = cfg->lr, .grad_scale = 1.0f,
                           .weight_decay = l2, .step = 1};

    bp_optimizer_step(w, velocity, NULL, grad, &opt, &u, n);
    return BP_STATUS_OK;
}
