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

void bp_net_update(bp_net *net, const bp_optimizer *opt,
                   const bp_schedule *sched)
{
    bp_update_scalars u = {
        .lr = bp_schedule_rate(sched, opt->lr, net->step),
        .grad_scale = 1.0f,
        .step = net->step + 1,
    };
    float bias_decay = opt->decay_biases ? opt->weight_decay : 0.0f;

    if (opt->clip_norm > 0.0f)
        u.grad_scale = bp_clip_scale(net, opt->clip_norm);

    /* Each layer's block is its weights, then whatever biases it has.
       A normalisation's gamma decays as biases do: shrinking it towards
       0 rather than towards its starting 1 would fight the layer. */
    for (int l = 0; l < net->n_layers; l++) {
        int64_t w = net->w_offset[l];
        int64_t n_w = bp_net_layer_n_weights(net, l);
        int dense = net->layers[l].kind == BP_LAYER_KIND_DENSE;
        int64_t end = l + 1 < net->n_layers ? net->w_offset[l + 1]
                                            : net->n_params;
        int64_t at[2] = {w, w + n_w};
        int64_t count[2] = {n_w, end - (w + n_w)};

        for (int k = 0; k < 2; k++) {
            float *s = net->squares != NULL ? net->squares + at[k] : NULL;

            u.weight_decay = k == 0 && dense ? opt->weight_decay
                                             : bias_decay;
            bp_optimizer_step(net->params + at[k], net->velocity + at[k], s,
                              net->grads + at[k], opt, &u, count[k]);
        }
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
