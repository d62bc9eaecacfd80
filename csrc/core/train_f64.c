/*
 * The forward and backward pass of a float64 network on one batch: the
 * double twin of train.c's, over the same buffer layout (layer outputs
 * kept one after another, gradients ping-ponging between two buffers,
 * pre-activations kept only for layers whose derivative needs them and
 * dropout masks, batch norm statistics at twice the layer's offset).
 * The epoch loop, the checks and the update scheduling are train.c's.
 */
#include "core/net.h"

#include "core/error.h"
#include "kernels/f64/kernels_f64.h"

#include <math.h>

/*
 * Layer l's block of kept pre-activations, or NULL when its activation's
 * derivative does not need them; a dropout layer's mask.
 */
static double *bp_pre_block(const bp_net *net, int l, int64_t at)
{
    if (!bp_activation_needs_input(bp_net_layer_act(net, l)) &&
        net->layers[l].kind != BP_LAYER_KIND_DROPOUT)
        return NULL;
    return net->train.pre_d + at;
}

/* Layer l's biases in a double slab, or NULL without biases. */
static double *bp_bias(const bp_net *net, double *slab, int l)
{
    return net->layers[l].no_bias ? NULL : slab + net->b_offset[l];
}

/*
 * The forward pass of a layer that is not dense, in training mode, as
 * train.c's: y its output, pre its mask or kept pre-activations (or
 * NULL), x its input, `at` the offset of its blocks.
 */
static void bp_layer_forward(bp_net *net, int l, double *y, double *pre,
                             const double *x, int64_t at, int64_t batch)
{
    const bp_layer_spec *spec = &net->layers[l];
    int64_t n = spec->units;
    const double *gamma = net->params_d + net->w_offset[l];
    const double *beta = bp_bias(net, net->params_d, l);
    bp_activation act = bp_net_layer_act(net, l);
    double *z = pre != NULL ? pre : y;

    switch (spec->kind) {
    case BP_LAYER_KIND_DROPOUT:
        bp_dropout_forward_f64(y, pre, x, spec->rate, net->seed,
                               net->step * (uint64_t)net->n_layers +
                                   (uint64_t)l,
                               batch * n);
        return;
    case BP_LAYER_KIND_BATCH_NORM:
        bp_batch_norm_train_f64(z, net->train.norm_d + 2 * (at / batch),
                                net->running_d + net->s_offset[l], x, gamma,
                                beta, spec->eps, spec->momentum, batch, n);
        break;
    default:
        bp_layer_norm_forward_f64(z, x, gamma, beta, spec->eps, batch, n);
        break;
    }
    bp_activation_forward_f64(y, z, act, spec->activation_param, batch, n);
}

/*
 * The backward pass of a layer that is not dense, from the gradient dy
 * of its output (overwritten) to dx (NULL for the first layer) and the
 * gradients of its parameters.
 */
static void bp_layer_backward(bp_net *net, int l, double *dx, double *dy,
                              const double *x, const double *y,
                              const double *pre, int64_t at, int64_t batch)
{
    const bp_layer_spec *spec = &net->layers[l];
    int64_t n = spec->units;
    const double *gamma = net->params_d + net->w_offset[l];
    double *dgamma = net->grads_d + net->w_offset[l];
    double *dbeta = bp_bias(net, net->grads_d, l);

    if (spec->kind == BP_LAYER_KIND_DROPOUT) {
        for (int64_t i = 0; dx != NULL && i < batch * n; i++)
            dx[i] = dy[i] * pre[i];
        return;
    }
    bp_activation_backward_f64(dy, dy, y, pre, bp_net_layer_act(net, l),
                               spec->activation_param, batch, n);
    if (spec->kind == BP_LAYER_KIND_BATCH_NORM)
        bp_batch_norm_backward_f64(dx, dgamma, dbeta, dy, x,
                                   net->train.norm_d + 2 * (at / batch),
                                   gamma, batch, n);
    else
        bp_layer_norm_backward_f64(dx, dgamma, dbeta, dy, x, gamma,
                                   spec->eps, batch, n);
}

bp_status bp_net_backprop_f64(bp_net *net, const double *x, const double *y,
                              const int32_t *labels, const double *weights,
                              int64_t batch, double *loss)
{
    bp_train_buffers *t = &net->train;
    int last = net->n_layers - 1;
    const double *in = x;
    int64_t at = 0;

    for (int l = 0; l <= last; l++) {
        int64_t n_out = net->layers[l].units;

        if (net->layers[l].kind != BP_LAYER_KIND_DENSE)
            bp_layer_forward(net, l, t->acts_d + at, bp_pre_block(net, l, at),
                             in, at, batch);
        else
            bp_dense_forward_f64(t->acts_d + at, bp_pre_block(net, l, at),
                                 in, net->params_d + net->w_offset[l],
                                 bp_bias(net, net->params_d, l),
                                 bp_net_layer_act(net, l),
                                 bp_net_layer_param(net, l), batch,
                                 bp_net_layer_inputs(net, l), n_out);
        in = t->acts_d + at;
        at += batch * n_out;
    }

    /* `in` now holds the last layer's output: logits with a fused loss. */
    double *dy = t->delta_d[0];
    bp_loss_run_f64(loss, dy, in, y,
                    net->loss == BP_LOSS_CROSS_ENTROPY ? labels : NULL,
                    weights, &net->loss_cfg, batch, bp_net_n_outputs(net));
    if (!isfinite(*loss))
        return BP_STATUS_NOT_FINITE;

    for (int l = last; l >= 0; l--) {
        int64_t n_in = bp_net_layer_inputs(net, l);
        int64_t n_out = net->layers[l].units;
        double *y_l = t->acts_d + (at -= batch * n_out);
        const double *x_l = l > 0 ? y_l - batch * n_in : x;
        double *dx = l > 0 ? t->delta_d[(last - l + 1) % 2] : NULL;

        if (net->layers[l].kind != BP_LAYER_KIND_DENSE) {
            bp_layer_backward(net, l, dx, dy, x_l, y_l,
                              bp_pre_block(net, l, at), at, batch);
            dy = dx;
            continue;
        }
        /* dz overwrites dy: the activation backward may run in place. */
        BP_TRY(bp_dense_backward_f64(
            dx, net->grads_d + net->w_offset[l],
            bp_bias(net, net->grads_d, l), dy, dy, x_l,
            net->params_d + net->w_offset[l], y_l, bp_pre_block(net, l, at),
            bp_net_layer_act(net, l), bp_net_layer_param(net, l), batch, n_in,
            n_out));
        dy = dx;
    }
    return BP_STATUS_OK;
}

int bp_first_bad_layer_f64(const bp_net *net, int64_t batch)
{
    const double *out = net->train.acts_d;

    for (int l = 0; l < net->n_layers; l++) {
        int64_t count = batch * net->layers[l].units;

        for (int64_t i = 0; i < count; i++)
            if (!isfinite(out[i]))
                return l;
        out += count;
    }
    return -1;
}
