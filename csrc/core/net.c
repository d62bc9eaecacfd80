/*
 * Networks: construction, parameter slabs, initialisation and accessors.
 *
 * Design decisions:
 * - Parameters, gradients and velocities each live in one 64-byte
 *   aligned slab with the same layout (per layer: weights I x O, then
 *   biases O, without padding), so an optimizer step is one loop per
 *   layer and a gradient all-reduce is one call.
 * - Initialisation draws layer i's weights from its own random stream
 *   (seed, BP_RNG_INIT, i), so each weight depends only on the seed, the
 *   initialiser and its position, and one layer can be re-drawn alone.
 * - The loss options and class weights are copied in, resolved, so the
 *   network never points at the caller's memory.
 * - A float64 network keeps the same layout in double slabs (params_d
 *   and the others) and leaves the float ones NULL, so a float getter
 *   on it gives NULL rather than memory of the wrong type. Its weights
 *   are drawn as float and widened: both dtypes start from one set of
 *   values.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/f64/kernels_f64.h"
#include "kernels/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bp_layer_kind_name(bp_layer_kind kind)
{
    switch (kind) {
    case BP_LAYER_KIND_DENSE:
        return "dense";
    case BP_LAYER_KIND_DROPOUT:
        return "dropout";
    case BP_LAYER_KIND_BATCH_NORM:
        return "batch_norm";
    case BP_LAYER_KIND_LAYER_NORM:
        return "layer_norm";
    }
    return NULL;
}

/* Fails naming field `what` of layers[i], which kind `kind` does not use. */
static bp_status bp_unused_field(const char *fn, int i, const char *what,
                                 float value, bp_layer_kind kind)
{
    if (value == 0.0f)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: layers[%d].%s is %g, but a %s layer has no %s "
                   "(leave it 0)", fn, i, what, (double)value,
                   bp_layer_kind_name(kind), what);
}

/* Checks the fields of layers[i] that only some kinds use. */
static bp_status bp_layer_kind_check(const char *fn,
                                     const bp_layer_spec *spec, int i)
{
    bp_layer_kind kind = spec->kind;

    switch (kind) {
    case BP_LAYER_KIND_DENSE:
        BP_TRY(bp_unused_field(fn, i, "rate", spec->rate, kind));
        BP_TRY(bp_unused_field(fn, i, "eps", spec->eps, kind));
        return bp_unused_field(fn, i, "momentum", spec->momentum, kind);
    case BP_LAYER_KIND_DROPOUT:
        if (!(spec->rate >= 0.0f && spec->rate < 1.0f))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: layers[%d].rate is %g; a dropout rate must "
                           "be in [0, 1)", fn, i, (double)spec->rate);
        if (spec->activation != BP_ACTIVATION_IDENTITY)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: layers[%d] is a dropout layer with "
                           "activation %s; dropout takes identity only", fn,
                           i, bp_activation_name(spec->activation));
        BP_TRY(bp_unused_field(fn, i, "eps", spec->eps, kind));
        return bp_unused_field(fn, i, "momentum", spec->momentum, kind);
    case BP_LAYER_KIND_BATCH_NORM:
    case BP_LAYER_KIND_LAYER_NORM:
        BP_TRY(bp_unused_field(fn, i, "rate", spec->rate, kind));
        if (!(spec->eps >= 0.0f && isfinite(spec->eps)))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: layers[%d].eps is %g; it must be finite and "
                           "> 0 (0 selects 1e-5)", fn, i, (double)spec->eps);
        if (kind == BP_LAYER_KIND_LAYER_NORM)
            return bp_unused_field(fn, i, "momentum", spec->momentum, kind);
        if (!(spec->momentum >= 0.0f && spec->momentum <= 1.0f))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: layers[%d].momentum is %g; it must be in "
                           "(0, 1] (0 selects 0.1)", fn, i,
                           (double)spec->momentum);
        return BP_STATUS_OK;
    }
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: layers[%d].kind is %d, which is not a "
                   "bp_layer_kind", fn, i, (int)kind);
}

/*
 * Checks one layer spec whose inputs are `n_in`; `last` says whether it
 * is the output layer.
 */
static bp_status bp_layer_check(const char *fn, const bp_layer_spec *spec,
                                int i, int last, int64_t n_in)
{
    BP_TRY(bp_layer_kind_check(fn, spec, i));
    if (spec->kind != BP_LAYER_KIND_DENSE && spec->units != 0 &&
        spec->units != n_in)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d] is a %s layer of %lld units after "
                       "%lld; it keeps its input's width (give 0 or %lld)",
                       fn, i, bp_layer_kind_name(spec->kind),
                       (long long)spec->units, (long long)n_in,
                       (long long)n_in);
    if (spec->kind == BP_LAYER_KIND_DENSE && spec->units < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d].units is %lld; it must be >= 1", fn,
                       i, (long long)spec->units);
    if (bp_activation_name(spec->activation) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d].activation is %d, which is not a "
                       "bp_activation", fn, i, (int)spec->activation);
    if (bp_activation_per_row(spec->activation) && !last)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d] uses %s, which is only allowed on "
                       "the last layer", fn, i,
                       bp_activation_name(spec->activation));
    if (isnan(bp_activation_param(spec->activation,
                                  spec->activation_param)))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: layers[%d].activation_param is %g; the %s of "
                       "%s must be finite and >= 0 (0 selects the "
                       "default)", fn, i, (double)spec->activation_param,
                       spec->activation == BP_ACTIVATION_ELU ? "alpha"
                                                             : "slope",
                       bp_activation_name(spec->activation));
    return BP_STATUS_OK;
}

/* Checks that the loss is known and fits the output activation. */
static bp_status bp_loss_fits(const char *fn, bp_loss loss,
                              bp_activation out_act)
{
    const char *act = bp_activation_name(out_act);

    switch (loss) {
    case BP_LOSS_MSE:
    case BP_LOSS_MAE:
    case BP_LOSS_HUBER:
    case BP_LOSS_POISSON:
        if (bp_activation_per_row(out_act))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: loss %s cannot follow a %s output; use "
                           "cross-entropy for class probabilities", fn,
                           bp_loss_name(loss), act);
        return BP_STATUS_OK;
    case BP_LOSS_CROSS_ENTROPY:
        if (out_act != BP_ACTIVATION_IDENTITY &&
            !bp_activation_per_row(out_act))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: loss cross_entropy needs a last layer with "
                           "identity, softmax or log_softmax activation, "
                           "not %s", fn, act);
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

/*
 * Validates bp_net_create's arguments and copies the layers into a new
 * array *resolved, with the defaults filled in: the width of the layers
 * that keep their input's, activation parameters, eps and momentum.
 */
static bp_status bp_net_check_spec(const char *fn, int64_t n_inputs,
                                   const bp_layer_spec *layers, int n_layers,
                                   bp_loss loss, bp_layer_spec **resolved)
{
    *resolved = NULL;
    if (n_inputs < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n_inputs' is %lld; it must be >= 1",
                       fn, (long long)n_inputs);
    if (n_layers < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n_layers' is %d; it must be >= 1", fn,
                       n_layers);
    BP_REQUIRE_PTR(fn, layers);

    int64_t n_in = n_inputs;
    for (int i = 0; i < n_layers; i++) {
        BP_TRY(bp_layer_check(fn, &layers[i], i, i == n_layers - 1, n_in));
        n_in = layers[i].kind == BP_LAYER_KIND_DENSE ? layers[i].units
                                                     : n_in;
    }
    BP_TRY(bp_loss_fits(fn, loss, layers[n_layers - 1].activation));

    bp_layer_spec *copy = malloc((size_t)n_layers * sizeof *copy);
    if (copy == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %d layer specs", fn, n_layers);
    n_in = n_inputs;
    for (int i = 0; i < n_layers; i++) {
        bp_layer_spec *spec = &copy[i];

        *spec = layers[i];
        if (spec->kind != BP_LAYER_KIND_DENSE)
            spec->units = n_in;
        spec->activation_param = bp_activation_param(spec->activation,
                                                     spec->activation_param);
        spec->no_bias = spec->no_bias != 0 ||
                        spec->kind == BP_LAYER_KIND_DROPOUT;
        if (spec->kind == BP_LAYER_KIND_BATCH_NORM ||
            spec->kind == BP_LAYER_KIND_LAYER_NORM)
            spec->eps = spec->eps > 0.0f ? spec->eps : 1e-5f;
        if (spec->kind == BP_LAYER_KIND_BATCH_NORM)
            spec->momentum = spec->momentum > 0.0f ? spec->momentum : 0.1f;
        n_in = spec->units;
    }
    *resolved = copy;
    return BP_STATUS_OK;
}

/*
 * Fills the offsets and totals from the layer specs; fails if the
 * parameters would not fit in one buffer.
 */
static bp_status bp_net_layout(const char *fn, bp_net *net)
{
    int64_t at = 0;

    net->n_running = 0;
    for (int i = 0; i < net->n_layers; i++) {
        int64_t in = bp_net_layer_inputs(net, i);
        int64_t out = net->layers[i].units;
        bp_layer_kind kind = net->layers[i].kind;

        /* The width first: it bounds `out + 1` below INT64_MAX. */
        if (out > BP_MAX_FLOATS - net->sum_units ||
            in > (BP_MAX_FLOATS - at) / (out + 1))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: the network is too large (layer %d is "
                           "%lld x %lld)", fn, i, (long long)in,
                           (long long)out);
        net->w_offset[i] = at;
        at += bp_net_layer_n_weights(net, i);
        net->b_offset[i] = at;
        at += kind == BP_LAYER_KIND_DROPOUT ? 0 : out;
        net->s_offset[i] = -1;
        if (kind == BP_LAYER_KIND_BATCH_NORM) {
            net->s_offset[i] = net->n_running;
            net->n_running += 2 * out;
        }
        net->sum_units += out;
        if (out > net->max_units)
            net->max_units = out;
    }
    net->n_params = at;
    return BP_STATUS_OK;
}

/* Allocates everything but the training buffers; NULL on failure. */
static bp_net *bp_net_alloc(int n_layers, int64_t n_params,
                            int64_t n_running, bp_dtype dtype)
{
    bp_net *net = calloc(1, sizeof *net);
    int f64 = dtype == BP_DTYPE_F64;
    size_t bytes = (size_t)n_params * (f64 ? sizeof(double) : sizeof(float));
    int slabs = 1;

    if (net == NULL)
        return NULL;
    net->dtype = dtype;
    net->layers = calloc((size_t)n_layers, sizeof *net->layers);
    net->w_offset = calloc((size_t)n_layers, sizeof *net->w_offset);
    net->b_offset = calloc((size_t)n_layers, sizeof *net->b_offset);
    net->s_offset = calloc((size_t)n_layers, sizeof *net->s_offset);
    if (n_params > 0 && f64) {
        net->params_d = bp_calloc(bytes);
        net->grads_d = bp_calloc(bytes);
        net->velocity_d = bp_calloc(bytes);
        slabs = net->params_d != NULL && net->grads_d != NULL &&
                net->velocity_d != NULL;
    } else if (n_params > 0) {
        net->params = bp_calloc(bytes);
        net->grads = bp_calloc(bytes);
        net->velocity = bp_calloc(bytes);
        slabs = net->params != NULL && net->grads != NULL &&
                net->velocity != NULL;
    }
    if (n_running > 0 && f64)
        net->running_d = bp_calloc((size_t)n_running * sizeof(double));
    else if (n_running > 0)
        net->running = bp_calloc((size_t)n_running * sizeof(float));
    if (net->layers == NULL || net->w_offset == NULL ||
        net->b_offset == NULL || net->s_offset == NULL || !slabs ||
        (n_running > 0 && net->running == NULL && net->running_d == NULL)) {
        bp_net_free(net);
        return NULL;
    }
    return net;
}

/* Copies the loss options into the network, class weights included. */
static bp_status bp_net_set_loss(const char *fn, bp_net *net,
                                 const bp_loss_config *cfg)
{
    int64_t n_out = bp_net_n_outputs(net);

    net->loss = cfg->kind;
    net->loss_cfg = *cfg;
    net->loss_cfg.class_weights = NULL;
    if (cfg->class_weights == NULL || cfg->kind != BP_LOSS_CROSS_ENTROPY)
        return BP_STATUS_OK;

    net->class_weights = malloc((size_t)n_out * sizeof(float));
    if (net->class_weights == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %lld class weights", fn,
                       (long long)n_out);
    memcpy(net->class_weights, cfg->class_weights,
           (size_t)n_out * sizeof(float));
    net->loss_cfg.class_weights = net->class_weights;
    return BP_STATUS_OK;
}

/* Running means 0 and variances 1, as before any training. */
static void bp_net_reset_running(bp_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        if (net->s_offset[i] < 0)
            continue;

        int64_t units = net->layers[i].units, at = net->s_offset[i];

        for (int64_t k = at; k < at + 2 * units && net->running_d; k++)
            net->running_d[k] = k < at + units ? 0.0 : 1.0;
        for (int64_t k = at; k < at + 2 * units && net->running; k++)
            net->running[k] = k < at + units ? 0.0f : 1.0f;
    }
}

const char *bp_dtype_name(bp_dtype dtype)
{
    switch (dtype) {
    case BP_DTYPE_F32:
        return "float32";
    case BP_DTYPE_F64:
        return "float64";
    }
    return NULL;
}

/* Checks a dtype. */
static bp_status bp_dtype_check(const char *fn, bp_dtype dtype)
{
    if (bp_dtype_name(dtype) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'dtype' is %d, which is not a "
                       "bp_dtype", fn, (int)dtype);
    return BP_STATUS_OK;
}

/* bp_net_create_dtype reporting errors as `fn`. */
static bp_status bp_net_create_named(const char *fn, bp_net **out,
                                     int64_t n_inputs,
                                     const bp_layer_spec *layers,
                                     int n_layers, const bp_loss_config *loss,
                                     bp_dtype dtype)
{
    bp_loss_config cfg;
    bp_layer_spec *specs;

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    BP_REQUIRE_PTR(fn, loss);
    BP_TRY(bp_net_check_spec(fn, n_inputs, layers, n_layers, loss->kind,
                             &specs));
    bp_status st = bp_dtype_check(fn, dtype);
    if (st != BP_STATUS_OK) {
        free(specs);
        return st;
    }
    st = bp_loss_config_resolve(fn, loss, specs[n_layers - 1].units, &cfg);

    /* Lay the slabs out in a stack copy first, to size them. */
    bp_net shape = {.n_inputs = n_inputs, .n_layers = n_layers,
                    .layers = specs, .loss = cfg.kind};
    int64_t *offsets = NULL;
    if (st == BP_STATUS_OK) {
        offsets = calloc(3 * (size_t)n_layers, sizeof *offsets);
        if (offsets == NULL)
            st = bp_fail(BP_STATUS_OUT_OF_MEMORY,
                         "%s: cannot allocate %d layer offsets", fn,
                         n_layers);
    }
    if (st == BP_STATUS_OK) {
        shape.w_offset = offsets;
        shape.b_offset = offsets + n_layers;
        shape.s_offset = offsets + 2 * (size_t)n_layers;
        st = bp_net_layout(fn, &shape);
    }
    free(offsets);

    bp_net *net = NULL;
    if (st == BP_STATUS_OK) {
        net = bp_net_alloc(n_layers, shape.n_params, shape.n_running,
                           dtype);
        if (net == NULL)
            st = bp_fail(BP_STATUS_OUT_OF_MEMORY,
                         "%s: cannot allocate a network of %lld "
                         "parameters", fn, (long long)shape.n_params);
    }
    if (st == BP_STATUS_OK) {
        net->n_inputs = n_inputs;
        net->n_layers = n_layers;
        memcpy(net->layers, specs, (size_t)n_layers * sizeof *specs);
        st = bp_net_layout(fn, net);
    }
    free(specs);
    if (st == BP_STATUS_OK)
        st = bp_net_set_loss(fn, net, &cfg);
    if (st != BP_STATUS_OK) {
        bp_net_free(net);
        return st;
    }
    bp_net_reset_running(net);
    *out = net;
    return BP_STATUS_OK;
}

bp_status bp_net_create(bp_net **out, int64_t n_inputs,
                        const bp_layer_spec *layers, int n_layers,
                        bp_loss loss)
{
    bp_loss_config cfg = {.kind = loss};

    return bp_net_create_named("bp_net_create", out, n_inputs, layers,
                               n_layers, &cfg, BP_DTYPE_F32);
}

bp_status bp_net_create_ex(bp_net **out, int64_t n_inputs,
                           const bp_layer_spec *layers, int n_layers,
                           const bp_loss_config *loss)
{
    return bp_net_create_named("bp_net_create_ex", out, n_inputs, layers,
                               n_layers, loss, BP_DTYPE_F32);
}

bp_status bp_net_create_dtype(bp_net **out, int64_t n_inputs,
                              const bp_layer_spec *layers, int n_layers,
                              const bp_loss_config *loss, bp_dtype dtype)
{
    return bp_net_create_named("bp_net_create_dtype", out, n_inputs, layers,
                               n_layers, loss, dtype);
}

bp_dtype bp_net_dtype(const bp_net *net)
{
    return net != NULL ? net->dtype : BP_DTYPE_F32;
}

bp_status bp_net_check_dtype(const char *fn, const bp_net *net,
                             bp_dtype want, const char *twin)
{
    if (net->dtype == want)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: the network is %s and this call takes %s data; use "
                   "%s", fn, bp_dtype_name(net->dtype), bp_dtype_name(want),
                   twin);
}

void bp_train_buffers_free(bp_train_buffers *t)
{
    bp_free(t->acts);
    bp_free(t->delta[0]);
    bp_free(t->delta[1]);
    bp_free(t->x);
    bp_free(t->y);
    bp_free(t->labels);
    bp_free(t->weights);
    bp_free(t->pre);
    bp_free(t->norm);
    bp_free(t->order);
    bp_free(t->acts_d);
    bp_free(t->delta_d[0]);
    bp_free(t->delta_d[1]);
    bp_free(t->x_d);
    bp_free(t->y_d);
    bp_free(t->weights_d);
    bp_free(t->pre_d);
    bp_free(t->norm_d);
    memset(t, 0, sizeof *t);
}

/* Slab k of either dtype: parameters, gradients, velocity, squares. */
static void *bp_slab(const bp_net *net, int k)
{
    int f64 = net->dtype == BP_DTYPE_F64;

    switch (k) {
    case 0:
        return f64 ? (void *)net->params_d : (void *)net->params;
    case 1:
        return f64 ? (void *)net->grads_d : (void *)net->grads;
    case 2:
        return f64 ? (void *)net->velocity_d : (void *)net->velocity;
    default:
        return f64 ? (void *)net->squares_d : (void *)net->squares;
    }
}

void bp_net_free(bp_net *net)
{
    if (net == NULL)
        return;
    bp_train_buffers_free(&net->train);
    bp_free(net->params);
    bp_free(net->grads);
    bp_free(net->velocity);
    bp_free(net->squares);
    bp_free(net->params_d);
    bp_free(net->grads_d);
    bp_free(net->velocity_d);
    bp_free(net->squares_d);
    bp_free(net->running);
    bp_free(net->running_d);
    free(net->layers);
    free(net->w_offset);
    free(net->b_offset);
    free(net->s_offset);
    free(net->class_weights);
    free(net);
}

bp_status bp_net_clone(bp_net **out, const bp_net *net)
{
    static const char fn[] = "bp_net_clone";

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    BP_REQUIRE_PTR(fn, net);

    bp_net *copy;
    BP_TRY(bp_net_create_dtype(&copy, net->n_inputs, net->layers,
                               net->n_layers, &net->loss_cfg, net->dtype));

    size_t bytes = (size_t)net->n_params * bp_net_elem_size(net);
    if (net->n_params > 0) {
        memcpy(bp_slab(copy, 0), bp_slab(net, 0), bytes);
        memcpy(bp_slab(copy, 1), bp_slab(net, 1), bytes);
        memcpy(bp_slab(copy, 2), bp_slab(net, 2), bytes);
    }
    if (bp_slab(net, 3) != NULL) {
        bp_status st = bp_net_reserve_squares(fn, copy);

        if (st != BP_STATUS_OK) {
            bp_net_free(copy);
            return st;
        }
        memcpy(bp_slab(copy, 3), bp_slab(net, 3), bytes);
    }
    if (net->n_running > 0 && net->running_d != NULL)
        memcpy(copy->running_d, net->running_d,
               (size_t)net->n_running * sizeof(double));
    else if (net->n_running > 0)
        memcpy(copy->running, net->running,
               (size_t)net->n_running * sizeof(float));
    copy->step = net->step;
    copy->seed = net->seed;
    *out = copy;
    return BP_STATUS_OK;
}

const char *bp_init_name(bp_init init)
{
    switch (init) {
    case BP_INIT_AUTO:
        return "auto";
    case BP_INIT_HE:
        return "he";
    case BP_INIT_GLOROT:
        return "glorot";
    case BP_INIT_HE_NORMAL:
        return "he_normal";
    case BP_INIT_GLOROT_NORMAL:
        return "glorot_normal";
    case BP_INIT_LECUN_UNIFORM:
        return "lecun_uniform";
    case BP_INIT_LECUN_NORMAL:
        return "lecun_normal";
    }
    return NULL;
}

/* The relu family, which BP_INIT_AUTO gives He initialisation. */
static int bp_relu_like(bp_activation act)
{
    switch (act) {
    case BP_ACTIVATION_RELU:
    case BP_ACTIVATION_LEAKY_RELU:
    case BP_ACTIVATION_ELU:
    case BP_ACTIVATION_GELU:
    case BP_ACTIVATION_GELU_TANH:
    case BP_ACTIVATION_SILU:
    case BP_ACTIVATION_SOFTPLUS:
        return 1;
    default:
        return 0;
    }
}

/*
 * Draws layer i's weights under `init` from its own stream (seed,
 * BP_RNG_INIT, i). The variance is gain / fan; a uniform initialiser's
 * limit is sqrt(3 gain / fan), which gives it the variance of its normal
 * twin.
 */
/*
 * Sets parameter `at` to the float `value`, widened for a float64
 * network, so that both dtypes start from the same values.
 */
static void bp_param_set(bp_net *net, int64_t at, float value)
{
    if (net->dtype == BP_DTYPE_F64)
        net->params_d[at] = value;
    else
        net->params[at] = value;
}

static void bp_init_weights(bp_net *net, bp_init init, int i, uint64_t seed)
{
    int64_t w = net->w_offset[i];

    if (net->layers[i].kind != BP_LAYER_KIND_DENSE) {
        /* A normalisation starts as the identity: gamma 1 (beta 0). */
        for (int64_t k = 0; k < bp_net_layer_n_weights(net, i); k++)
            bp_param_set(net, w + k, 1.0f);
        return;
    }

    double fan_in = (double)bp_net_layer_inputs(net, i);
    double fan_out = (double)net->layers[i].units;
    int64_t count = bp_net_layer_inputs(net, i) * net->layers[i].units;
    double gain = 2.0, fan = fan_in;
    int normal = 0;
    bp_rng rng;

    if (init == BP_INIT_AUTO)
        init = bp_relu_like(net->layers[i].activation) ? BP_INIT_HE
                                                       : BP_INIT_GLOROT;
    switch (init) {
    case BP_INIT_HE_NORMAL:
        normal = 1;
        break;
    case BP_INIT_LECUN_NORMAL:
        normal = 1;
        gain = 1.0;
        break;
    case BP_INIT_LECUN_UNIFORM:
        gain = 1.0;
        break;
    case BP_INIT_GLOROT_NORMAL:
        normal = 1;
        fan = fan_in + fan_out;
        break;
    case BP_INIT_GLOROT:
        fan = fan_in + fan_out;
        break;
    default:
        break;
    }

    bp_rng_init(&rng, seed, BP_RNG_INIT, (uint64_t)i);
    if (normal) {
        float std = (float)sqrt(gain / fan);

        for (int64_t k = 0; k < count; k++)
            bp_param_set(net, w + k, std * bp_rng_normal(&rng));
        return;
    }

    float limit = (float)sqrt(3.0 * gain / fan);
    for (int64_t k = 0; k < count; k++)
        bp_param_set(net, w + k, bp_rng_symmetric(&rng, limit));
}

/* Checks an initialiser argument. */
static bp_status bp_init_check(const char *fn, bp_init init)
{
    if (bp_init_name(init) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'init' is %d, which is not a bp_init",
                       fn, (int)init);
    return BP_STATUS_OK;
}

bp_status bp_net_init(bp_net *net, bp_init init, uint64_t seed)
{
    static const char fn[] = "bp_net_init";

    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_init_check(fn, init));

    size_t bytes = (size_t)net->n_params * bp_net_elem_size(net);
    for (int k = 0; k < 4 && bytes > 0; k++)
        if (bp_slab(net, k) != NULL)
            memset(bp_slab(net, k), 0, bytes);
    net->step = 0;
    net->seed = seed;
    bp_net_reset_running(net);

    for (int i = 0; i < net->n_layers; i++)
        bp_init_weights(net, init, i, seed);
    return BP_STATUS_OK;
}

bp_status bp_net_init_layer(bp_net *net, int i, bp_init init, float bias,
                            uint64_t seed)
{
    static const char fn[] = "bp_net_init_layer";

    BP_REQUIRE_PTR(fn, net);
    if (i < 0 || i >= net->n_layers)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'i' is %d; the network has layers "
                       "0 to %d", fn, i, net->n_layers - 1);
    BP_TRY(bp_init_check(fn, init));
    if (!isfinite(bias))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'bias' is %g; it must be finite", fn,
                       (double)bias);

    bp_init_weights(net, init, i, seed);

    if (!net->layers[i].no_bias)
        for (int64_t k = 0; k < net->layers[i].units; k++)
            bp_param_set(net, net->b_offset[i] + k, bias);
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

double *bp_net_params_f64(bp_net *net)
{
    return net != NULL ? net->params_d : NULL;
}

const double *bp_net_grads_f64(const bp_net *net)
{
    return net != NULL ? net->grads_d : NULL;
}

double *bp_net_grads_mut_f64(bp_net *net)
{
    return net != NULL ? net->grads_d : NULL;
}

double *bp_net_velocity_f64(bp_net *net)
{
    return net != NULL ? net->velocity_d : NULL;
}

bp_status bp_net_reserve_squares(const char *fn, bp_net *net)
{
    if (bp_slab(net, 3) != NULL || net->n_params == 0)
        return BP_STATUS_OK;
    if (net->dtype == BP_DTYPE_F64)
        net->squares_d = bp_calloc((size_t)net->n_params * sizeof(double));
    else
        net->squares = bp_calloc((size_t)net->n_params * sizeof(float));
    if (bp_slab(net, 3) == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate the optimizer state of %lld "
                       "parameters", fn, (long long)net->n_params);
    return BP_STATUS_OK;
}

/* Optimizer state slab i of either dtype, created if asked. */
static bp_status bp_state_slab(const char *fn, bp_net *net, int i,
                               int create, void **slab)
{
    if (i != 0 && i != 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'i' is %d; the slabs are 0 and 1", fn,
                       i);
    if (i == 1 && create)
        BP_TRY(bp_net_reserve_squares(fn, net));
    *slab = bp_slab(net, i == 0 ? 2 : 3);
    return BP_STATUS_OK;
}

bp_status bp_net_optimizer_state(bp_net *net, int i, int create,
                                 float **slab)
{
    static const char fn[] = "bp_net_optimizer_state";
    void *found = NULL;

    BP_REQUIRE_PTR(fn, net);
    BP_REQUIRE_PTR(fn, slab);
    BP_TRY(bp_net_check_dtype(fn, net, BP_DTYPE_F32,
                              "bp_net_optimizer_state_f64"));
    BP_TRY(bp_state_slab(fn, net, i, create, &found));
    *slab = found;
    return BP_STATUS_OK;
}

bp_status bp_net_optimizer_state_f64(bp_net *net, int i, int create,
                                     double **slab)
{
    static const char fn[] = "bp_net_optimizer_state_f64";
    void *found = NULL;

    BP_REQUIRE_PTR(fn, net);
    BP_REQUIRE_PTR(fn, slab);
    BP_TRY(bp_net_check_dtype(fn, net, BP_DTYPE_F64,
                              "bp_net_optimizer_state"));
    BP_TRY(bp_state_slab(fn, net, i, create, &found));
    *slab = found;
    return BP_STATUS_OK;
}

uint64_t bp_net_optimizer_step(const bp_net *net)
{
    return net != NULL ? net->step : 0;
}

bp_status bp_net_set_optimizer_step(bp_net *net, uint64_t step)
{
    BP_REQUIRE_PTR("bp_net_set_optimizer_step", net);
    net->step = step;
    return BP_STATUS_OK;
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
                               const void *y, const int32_t *labels,
                               int64_t n)
{
    int64_t n_out = bp_net_n_outputs(net);

    if (net->loss == BP_LOSS_CROSS_ENTROPY && labels != NULL)
        return bp_labels_check(fn, labels, n, n_out);
    if (net->loss == BP_LOSS_CROSS_ENTROPY && y == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: arguments 'labels' and 'y' are NULL; the "
                       "cross_entropy loss needs class labels (or "
                       "probabilities in y)", fn);
    if (y == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'y' is NULL; the %s loss needs float "
                       "targets", fn, bp_loss_name(net->loss));
    return bp_check_shape(fn, "n", n, "outputs", n_out);
}

bp_status bp_net_check_weights(const char *fn, bp_dtype dtype,
                               const void *weights, int64_t n)
{
    if (dtype == BP_DTYPE_F64)
        return bp_weights_check_f64(fn, weights, n);
    return bp_weights_check(fn, weights, n);
}

bp_status bp_net_loss_weighted(const bp_net *net, double *loss, float *grad,
                               const float *out, const float *y,
                               const int32_t *labels, const float *weights,
                               int64_t batch)
{
    if (net->loss != BP_LOSS_CROSS_ENTROPY)
        labels = NULL;
    return bp_loss_run(loss, grad, out, y, labels, weights, &net->loss_cfg,
                       batch, bp_net_n_outputs(net));
}

bp_status bp_net_loss_of(const bp_net *net, double *loss, float *grad,
                         const float *out, const float *y,
                         const int32_t *labels, int64_t batch)
{
    return bp_net_loss_weighted(net, loss, grad, out, y, labels, NULL,
                                batch);
}

bp_status bp_net_get_loss_config(const bp_net *net, bp_loss_config *cfg)
{
    BP_REQUIRE_PTR("bp_net_get_loss_config", net);
    BP_REQUIRE_PTR("bp_net_get_loss_config", cfg);
    *cfg = net->loss_cfg;
    return BP_STATUS_OK;
}

int bp_net_keeps_pre(const bp_net *net)
{
    for (int i = 0; i < net->n_layers; i++)
        if (bp_activation_needs_input(bp_net_layer_act(net, i)) ||
            net->layers[i].kind == BP_LAYER_KIND_DROPOUT)
            return 1;
    return 0;
}

float *bp_net_running_stats(bp_net *net, int i)
{
    if (net == NULL || net->running == NULL || i < 0 || i >= net->n_layers ||
        net->s_offset[i] < 0)
        return NULL;
    return net->running + net->s_offset[i];
}

double *bp_net_running_stats_f64(bp_net *net, int i)
{
    if (net == NULL || net->running_d == NULL || i < 0 ||
        i >= net->n_layers || net->s_offset[i] < 0)
        return NULL;
    return net->running_d + net->s_offset[i];
}

uint64_t bp_net_seed(const bp_net *net)
{
    return net != NULL ? net->seed : 0;
}

bp_status bp_net_set_seed(bp_net *net, uint64_t seed)
{
    BP_REQUIRE_PTR("bp_net_set_seed", net);
    net->seed = seed;
    return BP_STATUS_OK;
}
