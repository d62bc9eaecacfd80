/*
 * Networks: construction, parameter slabs, initialisation and accessors.
 *
 * Design decisions:
 * - Parameters, gradients and velocities each live in one 64-byte
 *   aligned slab with the same layout (per layer: weights I x O, then
 *   biases O, without padding), so an optimizer step is one loop per
 *   layer and a gradient all-reduce is one call.
 * - Initialisation draws layer i's weights from its own random stream
 *   (seed, init, i), so each weight depends only on the seed and its
 *   position.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "core/rng.h"
#include "kernels/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Checks one layer spec; `last` says whether it is the output layer. */
static bp_status bp_layer_check(const char *fn, const bp_layer_spec *spec,
                                int i, int last)
{
    if (spec->units < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d].units is %lld; it must be >= 1", fn,
                       i, (long long)spec->units);
    if (bp_activation_name(spec->activation) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d].activation is %d, which is not a "
                       "bp_activation", fn, i, (int)spec->activation);
    if (spec->activation == BP_ACTIVATION_SOFTMAX && !last)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d] uses softmax, which is only allowed "
                       "on the last layer", fn, i);
    return BP_STATUS_OK;
}

/* Checks that the loss is known and fits the output activation. */
static bp_status bp_loss_fits(const char *fn, bp_loss loss,
                              bp_activation out_act)
{
    const char *act = bp_activation_name(out_act);

    switch (loss) {
    case BP_LOSS_MSE:
        if (out_act == BP_ACTIVATION_SOFTMAX)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: loss mse cannot follow a softmax output; "
                           "use cross-entropy for class probabilities", fn);
        return BP_STATUS_OK;
    case BP_LOSS_CROSS_ENTROPY:
        if (out_act != BP_ACTIVATION_IDENTITY &&
            out_act != BP_ACTIVATION_SOFTMAX)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: loss cross_entropy needs a last layer with "
                           "identity or softmax activation, not %s", fn, act);
        return BP_STATUS_OK;
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        if (out_act != BP_ACTIVATION_IDENTITY &&
            out_act != BP_ACTIVATION_SIGMOID)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: loss binary_cross_entropy needs a last layer "
                           "with identity or sigmoid activation, not %s", fn,
                           act);
        return BP_STATUS_OK;
    }
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: argument 'loss' is %d, which is not a bp_loss", fn,
                   (int)loss);
}

/* Validates bp_net_create's arguments. */
static bp_status bp_net_check_spec(const char *fn, int64_t n_inputs,
                                   const bp_layer_spec *layers, int n_layers,
                                   bp_loss loss)
{
    if (n_inputs < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n_inputs' is %lld; it must be >= 1",
                       fn, (long long)n_inputs);
    if (n_layers < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n_layers' is %d; it must be >= 1", fn,
                       n_layers);
    BP_REQUIRE_PTR(fn, layers);
    for (int i = 0; i < n_layers; i++)
        BP_TRY(bp_layer_check(fn, &layers[i], i, i == n_layers - 1));
    return bp_loss_fits(fn, loss, layers[n_layers - 1].activation);
}

/*
 * Fills the offsets and totals from the layer specs; fails if the
 * parameters would not fit in one buffer.
 */
static bp_status bp_net_layout(const char *fn, bp_net *net)
{
    int64_t at = 0;

    for (int i = 0; i < net->n_layers; i++) {
        int64_t in = bp_net_layer_inputs(net, i);
        int64_t out = net->layers[i].units;

        /* The width first: it bounds `out + 1` below INT64_MAX. */
        if (out > BP_MAX_FLOATS - net->sum_units ||
            in > (BP_MAX_FLOATS - at) / (out + 1))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: the network is too large (layer %d is "
                           "%lld x %lld)", fn, i, (long long)in,
                           (long long)out);
        net->w_offset[i] = at;
        net->b_offset[i] = at + in * out;
        at += in * out + out;
        net->sum_units += out;
        if (out > net->max_units)
            net->max_units = out;
    }
    net->n_params = at;
    return BP_STATUS_OK;
}

/* Allocates everything but the training buffers; NULL on failure. */
static bp_net *bp_net_alloc(int n_layers, int64_t n_params)
{
    bp_net *net = calloc(1, sizeof *net);
    size_t bytes = (size_t)n_params * sizeof(float);

    if (net == NULL)
        return NULL;
    net->layers = calloc((size_t)n_layers, sizeof *net->layers);
    net->w_offset = calloc((size_t)n_layers, sizeof *net->w_offset);
    net->b_offset = calloc((size_t)n_layers, sizeof *net->b_offset);
    if (n_params > 0) {
        net->params = bp_calloc(bytes);
        net->grads = bp_calloc(bytes);
        net->velocity = bp_calloc(bytes);
    }
    if (net->layers == NULL || net->w_offset == NULL ||
        net->b_offset == NULL ||
        (n_params > 0 && (net->params == NULL || net->grads == NULL ||
                          net->velocity == NULL))) {
        bp_net_free(net);
        return NULL;
    }
    return net;
}

bp_status bp_net_create(bp_net **out, int64_t n_inputs,
                        const bp_layer_spec *layers, int n_layers,
                        bp_loss loss)
{
    static const char fn[] = "bp_net_create";

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    BP_TRY(bp_net_check_spec(fn, n_inputs, layers, n_layers, loss));

    /* Lay the slabs out in a stack copy first, to size them. */
    bp_net shape = {.n_inputs = n_inputs, .n_layers = n_layers,
                    .layers = (bp_layer_spec *)layers, .loss = loss};
    int64_t *offsets = calloc(2 * (size_t)n_layers, sizeof *offsets);
    if (offsets == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %d layer offsets", fn, n_layers);
    shape.w_offset = offsets;
    shape.b_offset = offsets + n_layers;
    bp_status status = bp_net_layout(fn, &shape);
    free(offsets);
    BP_TRY(status);

    bp_net *net = bp_net_alloc(n_layers, shape.n_params);
    if (net == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate a network of %lld parameters",
                       fn, (long long)shape.n_params);
    net->n_inputs = n_inputs;
    net->n_layers = n_layers;
    net->loss = loss;
    memcpy(net->layers, layers, (size_t)n_layers * sizeof *layers);
    BP_TRY(bp_net_layout(fn, net));

    *out = net;
    return BP_STATUS_OK;
}

void bp_train_buffers_free(bp_train_buffers *t)
{
    bp_free(t->acts);
    bp_free(t->delta[0]);
    bp_free(t->delta[1]);
    bp_free(t->x);
    bp_free(t->y);
    bp_free(t->labels);
    bp_free(t->order);
    memset(t, 0, sizeof *t);
}

void bp_net_free(bp_net *net)
{
    if (net == NULL)
        return;
    bp_train_buffers_free(&net->train);
    bp_free(net->params);
    bp_free(net->grads);
    bp_free(net->velocity);
    free(net->layers);
    free(net->w_offset);
    free(net->b_offset);
    free(net);
}

bp_status bp_net_clone(bp_net **out, const bp_net *net)
{
    static const char fn[] = "bp_net_clone";

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    BP_REQUIRE_PTR(fn, net);

    bp_net *copy;
    BP_TRY(bp_net_create(&copy, net->n_inputs, net->layers, net->n_layers,
                         net->loss));

    size_t bytes = (size_t)net->n_params * sizeof(float);
    memcpy(copy->params, net->params, bytes);
    memcpy(copy->grads, net->grads, bytes);
    memcpy(copy->velocity, net->velocity, bytes);
    *out = copy;
    return BP_STATUS_OK;
}

/* The uniform limit of layer i's weights under `init`. */
static float bp_init_limit(const bp_net *net, bp_init init, int i)
{
    double fan_in = (double)bp_net_layer_inputs(net, i);
    double fan_out = (double)net->layers[i].units;

    if (init == BP_INIT_AUTO)
        init = net->layers[i].activation == BP_ACTIVATION_RELU
                   ? BP_INIT_HE
                   : BP_INIT_GLOROT;
    if (init == BP_INIT_HE)
        return (float)sqrt(6.0 / fan_in);
    return (float)sqrt(6.0 / (fan_in + fan_out));
}

bp_status bp_net_init(bp_net *net, bp_init init, uint64_t seed)
{
    static const char fn[] = "bp_net_init";

    BP_REQUIRE_PTR(fn, net);
    if (init != BP_INIT_AUTO && init != BP_INIT_HE && init != BP_INIT_GLOROT)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'init' is %d, which is not a bp_init",
                       fn, (int)init);

    size_t bytes = (size_t)net->n_params * sizeof(float);
    memset(net->params, 0, bytes);
    memset(net->grads, 0, bytes);
    memset(net->velocity, 0, bytes);

    for (int i = 0; i < net->n_layers; i++) {
        float limit = bp_init_limit(net, init, i);
        float *w = net->params + net->w_offset[i];
        int64_t count = net->b_offset[i] - net->w_offset[i];
        bp_rng rng;

        bp_rng_init(&rng, seed, BP_RNG_INIT, (uint64_t)i);
        for (int64_t k = 0; k < count; k++)
            w[k] = bp_rng_symmetric(&rng, limit);
    }
    return BP_STATUS_OK;
}

/* Accessors: a NULL network reads as empty rather than crashing. */
int64_t bp_net_n_inputs(const bp_net *net)
{
    return net != NULL ? net->n_inputs : 0;
}

int64_t bp_net_n_outputs(const bp_net *net)
{
    return net != NULL ? net->layers[net->n_layers - 1].units : 0;
}

int bp_net_n_layers(const bp_net *net)
{
    return net != NULL ? net->n_layers : 0;
}

bp_loss bp_net_loss(const bp_net *net)
{
    return net != NULL ? net->loss : BP_LOSS_MSE;
}

int64_t bp_net_n_params(const bp_net *net)
{
    return net != NULL ? net->n_params : 0;
}

float *bp_net_params(bp_net *net)
{
    return net != NULL ? net->params : NULL;
}

const float *bp_net_params_const(const bp_net *net)
{
    return net != NULL ? net->params : NULL;
}

const float *bp_net_grads(const bp_net *net)
{
    return net != NULL ? net->grads : NULL;
}

float *bp_net_grads_mut(bp_net *net)
{
    return net != NULL ? net->grads : NULL;
}

float *bp_net_velocity(bp_net *net)
{
    return net != NULL ? net->velocity : NULL;
}

/* Checks a layer index for the layer accessors. */
static bp_status bp_layer_index_check(const char *fn, const bp_net *net,
                                      int i)
{
    BP_REQUIRE_PTR(fn, net);
    if (i < 0 || i >= net->n_layers)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'i' is %d; the network has layers "
                       "0 to %d", fn, i, net->n_layers - 1);
    return BP_STATUS_OK;
}

bp_status bp_net_layer(const bp_net *net, int i, bp_layer_spec *spec)
{
    BP_TRY(bp_layer_index_check("bp_net_layer", net, i));
    BP_REQUIRE_PTR("bp_net_layer", spec);
    *spec = net->layers[i];
    return BP_STATUS_OK;
}

bp_status bp_net_layer_offsets(const bp_net *net, int i, int64_t *w_offset,
                               int64_t *b_offset)
{
    BP_TRY(bp_layer_index_check("bp_net_layer_offsets", net, i));
    if (w_offset != NULL)
        *w_offset = net->w_offset[i];
    if (b_offset != NULL)
        *b_offset = net->b_offset[i];
    return BP_STATUS_OK;
}

bp_status bp_net_check_targets(const char *fn, const bp_net *net,
                               const float *y, const int32_t *labels,
                               int64_t n)
{
    int64_t n_out = bp_net_n_outputs(net);

    if (net->loss == BP_LOSS_CROSS_ENTROPY) {
        if (labels == NULL)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: argument 'labels' is NULL; the "
                           "cross_entropy loss needs class labels", fn);
        return bp_labels_check(fn, labels, n, n_out);
    }
    if (y == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'y' is NULL; the %s loss needs float "
                       "targets", fn, bp_loss_name(net->loss));
    return bp_check_shape(fn, "n", n, "outputs", n_out);
}

bp_status bp_net_loss_of(const bp_net *net, double *loss, float *grad,
                         const float *out, const float *y,
                         const int32_t *labels, int64_t batch)
{
    int64_t n_out = bp_net_n_outputs(net);

    switch (net->loss) {
    case BP_LOSS_MSE:
        return bp_loss_mse(loss, grad, out, y, batch, n_out);
    case BP_LOSS_CROSS_ENTROPY:
        return bp_loss_cross_entropy(loss, grad, out, labels, batch, n_out);
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        return bp_loss_binary_cross_entropy(loss, grad, out, y, batch,
                                            n_out);
    }
    return bp_fail(BP_STATUS_INTERNAL, "bp_net: unknown loss %d",
                   (int)net->loss);
}
