/*
 * A network's optimizer update: clipping, the scheduled rate, weight
 * decay per slice, the state slabs and the step counter.
 *
 * Design decisions:
 * - The global norm is a fixed-order sum over the whole gradient slab
 *   (bp_sum_squares), so clipping gives the same bits for any thread
 *   count. Clipping scales the gradient inside the update loops rather
 *   than in a pass of its own; the gradient slab is left as it was.
 * - A non-finite norm does not clip: NaN or infinity then reaches the
 *   weights, where the caller's divergence checks see it, instead of
 *   being scaled to zero.
 * - The second state slab is allocated on the first update that needs
 *   it; the first (velocity) always exists.
 * - Dropout layers hold no parameters: their weight and bias counts are
 *   0 and their loops do nothing.
 */
#include "core/net.h"

#include "core/check.h"
#include "kernels/f64/kernels_f64.h"
#include "kernels/optim.h"

#include <math.h>

/* Added to the norm before dividing, as PyTorch's clip_grad_norm_ does. */
#define BP_CLIP_EPS 1e-6

bp_status bp_net_prepare_update(const char *fn, bp_net *net,
                                const bp_optimizer *opt,
                                const bp_schedule *sched)
{
    BP_TRY(bp_optimizer_check(fn, opt));
    BP_TRY(bp_schedule_check(fn, sched));
    if (bp_optimizer_uses_second(opt))
        BP_TRY(bp_net_reserve_squares(fn, net));
    return BP_STATUS_OK;
}

/* The factor that brings the gradient's global norm down to the limit. */
static float bp_clip_scale(const bp_net *net, float limit)
{
    double norm = sqrt(bp_sum_squares(net->grads, net->n_params));

    if (!isfinite(norm) || norm <= limit)
        return 1.0f;
    return (float)(limit / (norm + BP_CLIP_EPS));
}

/*
 * Slice j of the slabs, 0 <= j < 2 L: layer j / 2's weights for even j,
 * then whatever biases it has. Returns its length and writes its offset
 * and the weight decay it takes. A normalisation's gamma decays as
 * biases do: shrinking it towards 0 rather than towards its starting 1
 * would fight the layer.
 */
static int64_t bp_update_slice(const bp_net *net, const bp_optimizer *opt,
                               int j, int64_t *at, float *decay)
{
    int l = j / 2;
    int64_t w = net->w_offset[l];
    int64_t n_w = bp_net_layer_n_weights(net, l);
    int64_t end = l + 1 < net->n_layers ? net->w_offset[l + 1]
                                        : net->n_params;
    int weights = j % 2 == 0;

    *decay = opt->decay_biases ? opt->weight_decay : 0.0f;
    if (weights && net->layers[l].kind == BP_LAYER_KIND_DENSE)
        *decay = opt->weight_decay;
    *at = weights ? w : w + n_w;
    return weights ? n_w : end - (w + n_w);
}

void bp_net_update(bp_net *net, const bp_optimizer *opt,
                   const bp_schedule *sched)
{
    if (net->dtype == BP_DTYPE_F64) {
        bp_net_update_f64(net, opt, sched);
        return;
    }

    bp_update_scalars u = {
        .lr = bp_schedule_rate(sched, opt->lr, net->step),
        .grad_scale = 1.0f,
        .step = net->step + 1,
    };

    if (opt->clip_norm > 0.0f)
        u.grad_scale = bp_clip_scale(net, opt->clip_norm);
    for (int j = 0; j < 2 * net->n_layers; j++) {
        int64_t at, count = bp_update_slice(net, opt, j, &at,
                                            &u.weight_decay);
        float *s = net->squares != NULL ? net->squares + at : NULL;

        bp_optimizer_step(net->params + at, net->velocity + at, s,
                          net->grads + at, opt, &u, count);
    }
    net->step++;
}

void bp_net_update_f64(bp_net *net, const bp_optimizer *opt,
                       const bp_schedule *sched)
{
    bp_update_scalars_f64 u = {
        .lr = bp_schedule_rate_f64(sched, opt->lr, net->step),
        .grad_scale = 1.0,
        .step = net->step + 1,
    };

    if (opt->clip_norm > 0.0f) {
        double norm = sqrt(bp_sum_squares_f64(net->grads_d, net->n_params));

        if (isfinite(norm) && norm > opt->clip_norm)
            u.grad_scale = opt->clip_norm / (norm + BP_CLIP_EPS);
    }
    for (int j = 0; j < 2 * net->n_layers; j++) {
        int64_t at;
        float decay;
        int64_t count = bp_update_slice(net, opt, j, &at, &decay);
        double *s = net->squares_d != NULL ? net->squares_d + at : NULL;

        u.weight_decay = decay;
        bp_optimizer_step_f64(net->params_d + at, net->velocity_d + at, s,
                              net->grads_d + at, opt, &u, count);
    }
    net->step++;
}

bp_status bp_net_apply_update(bp_net *net, const bp_optimizer *opt,
                              const bp_schedule *sched)
{
    static const char fn[] = "bp_net_apply_update";

    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_net_prepare_update(fn, net, opt, sched));
    bp_net_update(net, opt, sched);
    return BP_STATUS_OK;
}
