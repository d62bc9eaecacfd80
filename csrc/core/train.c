/*
 * Training: the forward and backward pass of a whole network on a batch,
 * the SGD step, and whole epochs.
 *
 * Design decisions:
 * - The scratch lives in the network (bp_train_buffers) and only grows,
 *   so a step on a batch size seen before allocates nothing.
 * - Layer l's output is kept (B x O_l at B * (O_0 + ... + O_{l-1})) for
 *   the backward pass; gradients between layers ping-pong between two
 *   B x W buffers. Layers whose activation's derivative needs its input
 *   (elu, gelu, gelu_tanh, silu, softplus) also keep their
 *   pre-activation, at the same place in a second B x U buffer that
 *   exists only when some layer needs it.
 * - An epoch gathers each batch's rows in a shuffled order into a
 *   contiguous buffer, with their targets and sample weights; without
 *   shuffling it reads the caller's rows in place. The order depends
 *   only on (seed, epoch).
 * - Dropout and normalisation layers keep their output in acts like
 *   dense ones. Dropout keeps its mask in the pre-activation buffer
 *   (dx = dy * mask); batch norm keeps each column's batch mean and
 *   1 / sqrt(var + eps) in a 2U buffer; layer norm recomputes its row
 *   statistics from the kept input in the backward pass.
 * - Biases are exempt from the L2 penalty.
 * - The checks, the epoch loop and the gathering of batches serve float32
 *   and float64 networks alike, moving rows as bytes of the network's
 *   element size; only the forward and backward pass (train_f64.c for
 *   float64) and the update (update.c) differ by dtype.
 * - An optional hook runs after each batch, so a caller can watch an
 *   epoch or end it early (batch callbacks, Ctrl-C) while the epoch
 *   stays one call. The check for a non-finite loss costs nothing per
 *   batch; only after one are the kept layer outputs scanned to name the
 *   first layer that went bad.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "core/rng.h"
#include "kernels/f64/kernels_f64.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/sgd.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Grows one buffer to `count` elements of `size` bytes; keeps it if big. */
static int bp_grow(void **buf, int64_t old_count, int64_t count, size_t size)
{
    if (count <= old_count && *buf != NULL)
        return 1;
    void *fresh = bp_malloc((size_t)count * size);
    if (fresh == NULL)
        return 0;
    bp_free(*buf);
    *buf = fresh;
    return 1;
}

/*
 * Makes the batch buffers hold `batch` rows. On failure the old buffers
 * stay valid but `train.batch` records only what all of them hold.
 */
static bp_status bp_train_reserve(const char *fn, bp_net *net, int64_t batch)
{
    bp_train_buffers *t = &net->train;

    if (batch <= t->batch)
        return BP_STATUS_OK;
    BP_TRY(bp_check_shape(fn, "batch", batch, "units", net->sum_units));
    BP_TRY(bp_check_shape(fn, "batch", batch, "inputs", net->n_inputs));

    int64_t old = t->batch;
    int64_t n_out = bp_net_n_outputs(net);
    int f64 = net->dtype == BP_DTYPE_F64;
    size_t size = bp_net_elem_size(net);
    void **acts = f64 ? (void **)&t->acts_d : (void **)&t->acts;
    void **delta0 = f64 ? (void **)&t->delta_d[0] : (void **)&t->delta[0];
    void **delta1 = f64 ? (void **)&t->delta_d[1] : (void **)&t->delta[1];
    void **x = f64 ? (void **)&t->x_d : (void **)&t->x;
    void **y = f64 ? (void **)&t->y_d : (void **)&t->y;
    void **weights = f64 ? (void **)&t->weights_d : (void **)&t->weights;
    void **pre = f64 ? (void **)&t->pre_d : (void **)&t->pre;
    int ok = bp_grow(acts, old * net->sum_units, batch * net->sum_units,
                     size) &&
             bp_grow(delta0, old * net->max_units, batch * net->max_units,
                     size) &&
             bp_grow(delta1, old * net->max_units, batch * net->max_units,
                     size) &&
             bp_grow(x, old * net->n_inputs, batch * net->n_inputs, size) &&
             bp_grow(y, old * n_out, batch * n_out, size) &&
             bp_grow((void **)&t->labels, old, batch, sizeof(int32_t)) &&
             bp_grow(weights, old, batch, size);
    if (ok && bp_net_keeps_pre(net))
        ok = bp_grow(pre, old * net->sum_units, batch * net->sum_units,
                     size);
    if (ok && net->n_running > 0)
        ok = bp_grow(f64 ? (void **)&t->norm_d : (void **)&t->norm,
                     old > 0 ? 2 * net->sum_units : 0, 2 * net->sum_units,
                     size);
    if (!ok) {
        /* Some buffers grew and some did not; forget the size they share. */
        bp_train_buffers_free(t);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate training buffers for a batch "
                       "of %lld rows", fn, (long long)batch);
    }
    t->batch = batch;
    return BP_STATUS_OK;
}

/*
 * Layer l's block of the kept pre-activations, or NULL when its
 * activation's derivative does not need them; a dropout layer's mask.
 */
static float *bp_pre_block(const bp_net *net, int l, int64_t at)
{
    if (!bp_activation_needs_input(bp_net_layer_act(net, l)) &&
        net->layers[l].kind != BP_LAYER_KIND_DROPOUT)
        return NULL;
    return net->train.pre + at;
}

/*
 * The forward pass of a layer that is not dense, in training mode.
 *   y  B x O  its output (OUT)    x  B x O  its input (IN)
 *   pre  its block of kept pre-activations or mask, or NULL  (OUT)
 *   at  the offset of its blocks in acts and pre
 */
static void bp_layer_train_forward(bp_net *net, int l, float *y, float *pre,
                                   const float *x, int64_t at, int64_t batch)
{
    const bp_layer_spec *spec = &net->layers[l];
    int64_t n = spec->units;
    const float *gamma = net->params + net->w_offset[l];
    const float *beta = bp_net_layer_bias(net, net->params, l);
    bp_activation act = bp_net_layer_act(net, l);
    float *z = pre != NULL ? pre : y;

    switch (spec->kind) {
    case BP_LAYER_KIND_DROPOUT:
        /* The stream is unique to (step, layer) for this network. */
        bp_dropout_forward(y, pre, x, spec->rate, net->seed,
                           net->step * (uint64_t)net->n_layers + (uint64_t)l,
                           batch * n);
        return;
    case BP_LAYER_KIND_BATCH_NORM:
        bp_batch_norm_train(z, net->train.norm + 2 * (at / batch),
                            net->running + net->s_offset[l], x, gamma, beta,
                            spec->eps, spec->momentum, batch, n);
        break;
    default:
        bp_layer_norm_forward(z, x, gamma, beta, spec->eps, batch, n);
        break;
    }
    if (act != BP_ACTIVATION_IDENTITY)
        (void)bp_activation_forward_ex(y, z, act, spec->activation_param,
                                       batch, n);
}

/*
 * The backward pass of a layer that is not dense: from the gradient dy
 * of its output (overwritten) to dx (NULL for the first layer) and the
 * gradients of its parameters.
 */
static void bp_layer_train_backward(bp_net *net, int l, float *dx, float *dy,
                                    const float *x, const float *y,
                                    const float *pre, int64_t at,
                                    int64_t batch)
{
    const bp_layer_spec *spec = &net->layers[l];
    int64_t n = spec->units;
    const float *gamma = net->params + net->w_offset[l];
    float *dgamma = net->grads + net->w_offset[l];
    float *dbeta = bp_net_layer_bias(net, net->grads, l);
    bp_activation act = bp_net_layer_act(net, l);

    if (spec->kind == BP_LAYER_KIND_DROPOUT) {
        if (dx != NULL)
            for (int64_t i = 0; i < batch * n; i++)
                dx[i] = dy[i] * pre[i];
        return;
    }
    if (act != BP_ACTIVATION_IDENTITY)
        (void)bp_activation_backward_ex(dy, dy, y, pre, act,
                                        spec->activation_param, batch, n);
    if (spec->kind == BP_LAYER_KIND_BATCH_NORM)
        bp_batch_norm_backward(dx, dgamma, dbeta, dy, x,
                               net->train.norm + 2 * (at / batch), gamma,
                               batch, n);
    else
        bp_layer_norm_backward(dx, dgamma, dbeta, dy, x, gamma, spec->eps,
                               batch, n);
}

/*
 * Forward and backward pass with trusted arguments; gradients land in
 * net->grads.
 *   x  B x I (IN)    y  B x O or labels  B (IN)    loss  (OUT)
 *   weights  B  sample weights (IN; NULL for all 1)
 */
static bp_status bp_net_backprop_weighted(bp_net *net, const float *x,
                                          const float *y,
                                          const int32_t *labels,
                                          const float *weights,
                                          int64_t batch, double *loss)
{
    bp_train_buffers *t = &net->train;
    int last = net->n_layers - 1;
    const float *in = x;
    int64_t at = 0;

    for (int l = 0; l <= last; l++) {
        int64_t n_in = bp_net_layer_inputs(net, l);
        int64_t n_out = net->layers[l].units;

        if (net->layers[l].kind != BP_LAYER_KIND_DENSE)
            bp_layer_train_forward(net, l, t->acts + at,
                                   bp_pre_block(net, l, at), in, at, batch);
        else
            BP_TRY(bp_dense_forward_ex(
                t->acts + at, bp_pre_block(net, l, at), in,
                net->params + net->w_offset[l],
                bp_net_layer_bias(net, net->params, l),
                bp_net_layer_act(net, l), bp_net_layer_param(net, l), batch,
                n_in, n_out));
        in = t->acts + at;
        at += batch * n_out;
    }

    /* `in` now holds the last layer's output: logits with a fused loss. */
    float *dy = t->delta[0];
    BP_TRY(bp_net_loss_weighted(net, loss, dy, in, y, labels, weights,
                                batch));
    if (!isfinite(*loss))
        return BP_STATUS_NOT_FINITE;

    for (int l = last; l >= 0; l--) {
        int64_t n_in = bp_net_layer_inputs(net, l);
        int64_t n_out = net->layers[l].units;
        float *y_l = t->acts + (at -= batch * n_out);
        const float *x_l = l > 0 ? y_l - batch * n_in : x;
        float *dx = l > 0 ? t->delta[(last - l + 1) % 2] : NULL;

        if (net->layers[l].kind != BP_LAYER_KIND_DENSE) {
            bp_layer_train_backward(net, l, dx, dy, x_l, y_l,
                                    bp_pre_block(net, l, at), at, batch);
            dy = dx;
            continue;
        }
        /* dz overwrites dy: the activation backward may run in place. */
        BP_TRY(bp_dense_backward_ex(dx, net->grads + net->w_offset[l],
                                    bp_net_layer_bias(net, net->grads, l), dy,
                                    dy, x_l, net->params + net->w_offset[l],
                                    y_l, bp_pre_block(net, l, at),
                                    bp_net_layer_act(net, l),
                                    bp_net_layer_param(net, l), batch, n_in,
                                    n_out));
        dy = dx;
    }
    return BP_STATUS_OK;
}

static bp_status bp_net_backprop(bp_net *net, const float *x, const float *y,
                                 const int32_t *labels, int64_t batch,
                                 double *loss)
{
    return bp_net_backprop_weighted(net, x, y, labels, NULL, batch, loss);
}

/* One SGD step on every layer, biases without the L2 penalty. */
static void bp_net_step(bp_net *net, const bp_sgd_config *sgd)
{
    bp_optimizer opt = bp_sgd_optimizer(sgd);

    /* SGD keeps no second slab, so nothing needs preparing. */
    bp_net_update(net, &opt, NULL);
}

/*
 * Batch norm learns nothing from a batch of one row (each value is its
 * own mean); a training call whose batches have one row fails.
 */
static bp_status bp_batch_norm_rows(const char *fn, const bp_net *net,
                                    int64_t batch)
{
    if (batch >= 2 || net->n_running == 0)
        return BP_STATUS_OK;
    return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                   "%s: the network has a batch norm layer, which needs "
                   "batches of at least 2 rows in training; the batch has "
                   "%lld", fn, (long long)batch);
}

/*
 * Checks what bp_net_gradient and bp_net_train_batch share, and their
 * float64 twin, whose name is `twin` in the float calls and NULL in
 * itself.
 */
static bp_status bp_batch_check(const char *fn, const char *twin,
                                bp_net *net, const void *x, const void *y,
                                const int32_t *labels, int64_t batch)
{
    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_net_check_dtype(fn, net,
                              twin != NULL ? BP_DTYPE_F32 : BP_DTYPE_F64,
                              twin != NULL ? twin : "bp_net_gradient"));
    if (batch < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'batch' is %lld; it must be >= 1", fn,
                       (long long)batch);
    BP_TRY(bp_check_shape(fn, "batch", batch, "inputs", net->n_inputs));
    BP_REQUIRE_PTR(fn, x);
    BP_TRY(bp_net_check_targets(fn, net, y, labels, batch));
    BP_TRY(bp_batch_norm_rows(fn, net, batch));
    return bp_train_reserve(fn, net, batch);
}

/* The float64 calls to name when a float call gets a float64 network. */
#define BP_F64_GRADIENT "bp_net_gradient_f64"
#define BP_F64_EPOCH "bp_net_train_epoch_f64"

/* Nonzero when all n values are finite. */
static int bp_all_finite(const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* Nonzero when the n parameters from `at` are finite, in either dtype. */
static int bp_params_finite(const bp_net *net, int64_t at, int64_t n)
{
    if (net->dtype == BP_DTYPE_F32)
        return bp_all_finite(net->params + at, n);
    for (int64_t i = at; i < at + n; i++)
        if (!isfinite(net->params_d[i]))
            return 0;
    return 1;
}

/*
 * The first layer whose output, as the forward pass of a batch of
 * `batch` rows left it in the training buffers, holds NaN or infinity;
 * -1 when none does.
 */
static int bp_first_bad_layer(const bp_net *net, int64_t batch)
{
    const float *out = net->train.acts;

    if (net->dtype == BP_DTYPE_F64)
        return bp_first_bad_layer_f64(net, batch);

    for (int l = 0; l < net->n_layers; l++) {
        int64_t count = batch * net->layers[l].units;

        if (!bp_all_finite(out, count))
            return l;
        out += count;
    }
    return -1;
}

/*
 * Names a non-finite loss for the caller: `what` says which batch, and
 * the message adds the first layer whose output went bad (-1: none).
 */
static bp_status bp_not_finite(const char *fn, const bp_net *net,
                               const char *what, double loss, int layer)
{
    char where[160] = "";

    if (layer >= 0) {
        int64_t n_b = net->layers[layer].kind == BP_LAYER_KIND_DROPOUT
                          ? 0
                          : net->layers[layer].units;
        int64_t n_w = bp_net_layer_n_weights(net, layer);
        int bad = !bp_params_finite(net, net->w_offset[layer], n_w) ||
                  !bp_params_finite(net, net->b_offset[layer], n_b);

        snprintf(where, sizeof where,
                 "; layer %d of %d is the first whose output is NaN or "
                 "infinite%s", layer + 1, net->n_layers,
                 bad ? " (its parameters are too)" : "");
    }
    return bp_fail(BP_STATUS_NOT_FINITE,
                   "%s: the loss of %s is %g%s; training diverged (lower "
                   "the learning rate or scale the inputs)", fn, what, loss,
                   where);
}

/*
 * bp_net_gradient_weighted and its float64 twin, reporting errors as
 * `fn`; x, y and weights hold values of `dtype`.
 */
static bp_status bp_gradient(const char *fn, bp_dtype dtype, bp_net *net,
                             const void *x, const void *y,
                             const int32_t *labels, const void *weights,
                             int64_t batch, double *loss)
{
    double value = 0.0;
    bp_status st;

    BP_TRY(bp_batch_check(fn, dtype == BP_DTYPE_F32 ? BP_F64_GRADIENT : NULL,
                          net, x, y, labels, batch));
    BP_TRY(bp_net_check_weights(fn, dtype, weights, batch));
    if (dtype == BP_DTYPE_F64)
        st = bp_net_backprop_f64(net, x, y, labels, weights, batch, &value);
    else
        st = bp_net_backprop_weighted(net, x, y, labels, weights, batch,
                                      &value);
    if (st == BP_STATUS_NOT_FINITE)
        st = bp_not_finite(fn, net, "the batch", value,
                           bp_first_bad_layer(net, batch));
    if (loss != NULL)
        *loss = value;
    return st;
}

bp_status bp_net_gradient(bp_net *net, const float *x, const float *y,
                          const int32_t *labels, int64_t batch, double *loss)
{
    return bp_gradient("bp_net_gradient", BP_DTYPE_F32, net, x, y, labels,
                       NULL, batch, loss);
}

/*
 * Where layer i's output for `rows` rows starts in the kept outputs of a
 * network of `dtype`; -1 when the network, i or rows do not fit.
 */
static int64_t bp_layer_output_at(const bp_net *net, bp_dtype dtype, int i,
                                  int64_t rows)
{
    int64_t at = 0;

    if (net == NULL || net->dtype != dtype || i < 0 || i >= net->n_layers ||
        rows < 1 || rows > net->train.batch)
        return -1;
    for (int l = 0; l < i; l++)
        at += rows * net->layers[l].units;
    return at;
}

const float *bp_net_layer_output(const bp_net *net, int i, int64_t rows)
{
    int64_t at = bp_layer_output_at(net, BP_DTYPE_F32, i, rows);

    return at < 0 ? NULL : net->train.acts + at;
}

const double *bp_net_layer_output_f64(const bp_net *net, int i, int64_t rows)
{
    int64_t at = bp_layer_output_at(net, BP_DTYPE_F64, i, rows);

    return at < 0 ? NULL : net->train.acts_d + at;
}

bp_status bp_net_train_batch(bp_net *net, const bp_sgd_config *sgd,
                             const float *x, const float *y,
                             const int32_t *labels, int64_t batch,
                             double *loss)
{
    static const char fn[] = "bp_net_train_batch";
    double value = 0.0;

    BP_TRY(bp_sgd_check(fn, sgd));
    BP_TRY(bp_batch_check(fn, BP_F64_GRADIENT, net, x, y, labels, batch));
    bp_status st = bp_net_backprop(net, x, y, labels, batch, &value);
    if (loss != NULL)
        *loss = value;
    if (st == BP_STATUS_NOT_FINITE)
        return bp_not_finite(fn, net, "the batch", value,
                             bp_first_bad_layer(net, batch));
    BP_TRY(st);
    bp_net_step(net, sgd);
    return BP_STATUS_OK;
}

bp_status bp_net_train_batch_opt(bp_net *net, const bp_optimizer *opt,
                                 const bp_schedule *sched, const float *x,
                                 const float *y, const int32_t *labels,
                                 int64_t batch, double *loss)
{
    static const char fn[] = "bp_net_train_batch_opt";
    double value = 0.0;

    BP_TRY(bp_batch_check(fn, BP_F64_GRADIENT, net, x, y, labels, batch));
    BP_TRY(bp_net_prepare_update(fn, net, opt, sched));
    bp_status st = bp_net_backprop(net, x, y, labels, batch, &value);
    if (loss != NULL)
        *loss = value;
    if (st == BP_STATUS_NOT_FINITE)
        return bp_not_finite(fn, net, "the batch", value,
                             bp_first_bad_layer(net, batch));
    BP_TRY(st);
    bp_net_update(net, opt, sched);
    return BP_STATUS_OK;
}

bp_status bp_net_apply_gradients(bp_net *net, const bp_sgd_config *sgd)
{
    static const char fn[] = "bp_net_apply_gradients";

    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_sgd_check(fn, sgd));
    bp_net_step(net, sgd);
    return BP_STATUS_OK;
}

/* Makes `order` hold n row indices. */
static bp_status bp_order_reserve(const char *fn, bp_net *net, int64_t n)
{
    bp_train_buffers *t = &net->train;

    if (n <= t->n)
        return BP_STATUS_OK;
    if (!bp_grow((void **)&t->order, t->n, n, sizeof(int64_t))) {
        t->n = 0;
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate the order of %lld rows", fn,
                       (long long)n);
    }
    t->n = n;
    return BP_STATUS_OK;
}

/*
 * Copies the rows order[0..rows) of x, the targets and the sample
 * weights (if any) into the buffers.
 */
static void bp_gather(bp_net *net, const int64_t *order, int64_t rows,
                      const void *x, const void *y, const int32_t *labels,
                      const void *weights)
{
    bp_train_buffers *t = &net->train;
    int f64 = net->dtype == BP_DTYPE_F64;
    size_t size = bp_net_elem_size(net);
    size_t in_bytes = (size_t)net->n_inputs * size;
    size_t out_bytes = (size_t)bp_net_n_outputs(net) * size;
    char *tx = f64 ? (char *)t->x_d : (char *)t->x;
    char *ty = f64 ? (char *)t->y_d : (char *)t->y;
    char *tw = f64 ? (char *)t->weights_d : (char *)t->weights;

    for (int64_t r = 0; r < rows; r++) {
        size_t i = (size_t)order[r];

        memcpy(tx + r * in_bytes, (const char *)x + i * in_bytes, in_bytes);
        if (labels != NULL)
            t->labels[r] = labels[i];
        else
            memcpy(ty + r * out_bytes, (const char *)y + i * out_bytes,
                   out_bytes);
        if (weights != NULL)
            memcpy(tw + r * size, (const char *)weights + i * size, size);
    }
}

bp_status bp_shuffle_order(int64_t *order, int64_t n, uint64_t seed,
                           uint64_t epoch)
{
    static const char fn[] = "bp_shuffle_order";

    if (n < 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n' is %lld; it must be >= 0", fn,
                       (long long)n);
    BP_REQUIRE_DATA(fn, order, n);
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    bp_rng_shuffle(order, n, seed, epoch);
    return BP_STATUS_OK;
}

/*
 * The epoch of bp_net_train_epoch_opt, reporting errors as `fn`. The
 * report is filled in as batches complete, so it is right however the
 * epoch ends. The SGD calls pass `sgd`, checked here as before, and
 * opt == NULL.
 */
static bp_status bp_train_epoch(const char *fn, bp_dtype dtype,
                                bp_net *net, const bp_sgd_config *sgd,
                                const bp_optimizer *opt,
                                const bp_schedule *sched, const void *x,
                                const void *y, const int32_t *labels,
                                const void *weights, int64_t n,
                                int64_t batch_size, int shuffle,
                                uint64_t seed, uint64_t epoch,
                                bp_batch_hook hook, void *user,
                                bp_epoch_report *report)
{
    bp_optimizer from_sgd;
    int f64 = dtype == BP_DTYPE_F64;

    *report = (bp_epoch_report){0.0, 0, 0, 0, -1};
    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_net_check_dtype(fn, net, dtype,
                              f64 ? "bp_net_train_epoch_weighted"
                                  : BP_F64_EPOCH));
    if (opt == NULL) {
        BP_TRY(bp_sgd_check(fn, sgd));
        from_sgd = bp_sgd_optimizer(sgd);
        opt = &from_sgd;
    }
    BP_TRY(bp_net_prepare_update(fn, net, opt, sched));
    if (n < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n' is %lld; it must be >= 1", fn,
                       (long long)n);
    if (batch_size < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'batch_size' is %lld; it must be >= 1",
                       fn, (long long)batch_size);
    BP_TRY(bp_check_shape(fn, "n", n, "inputs", net->n_inputs));
    BP_REQUIRE_PTR(fn, x);
    /* Cross-entropy takes labels, or probabilities in y without them. */
    if (net->loss != BP_LOSS_CROSS_ENTROPY)
        labels = NULL;
    else if (labels != NULL)
        y = NULL;
    BP_TRY(bp_net_check_targets(fn, net, y, labels, n));
    BP_TRY(bp_net_check_weights(fn, dtype, weights, n));
    if (batch_size > n)
        batch_size = n;
    /* A last batch of one row is kept: it leaves the running averages
       alone and passes no gradient through the normalisation. */
    BP_TRY(bp_batch_norm_rows(fn, net, batch_size));
    BP_TRY(bp_train_reserve(fn, net, batch_size));
    if (shuffle)
        BP_TRY(bp_order_reserve(fn, net, n));

    int64_t *order = net->train.order;
    int64_t n_out = bp_net_n_outputs(net);
    int64_t n_batches = (n + batch_size - 1) / batch_size;
    size_t size = bp_net_elem_size(net);
    double total = 0.0;

    if (shuffle) {
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        bp_rng_shuffle(order, n, seed, epoch);
    }
    for (int64_t b = 0; b < n_batches; b++) {
        int64_t start = b * batch_size;
        int64_t rows = n - start < batch_size ? n - start : batch_size;
        const char *bx = (const char *)x + start * net->n_inputs * size;
        const char *by = y != NULL ? (const char *)y + start * n_out * size
                                   : NULL;
        const int32_t *bl = labels != NULL ? labels + start : NULL;
        const char *bw = weights != NULL ? (const char *)weights + start * size
                                         : NULL;
        bp_train_buffers *t = &net->train;
        double loss = 0.0;
        bp_status st;

        if (shuffle) {
            bp_gather(net, order + start, rows, x, y, labels, weights);
            bx = f64 ? (const char *)t->x_d : (const char *)t->x;
            by = y == NULL ? NULL : f64 ? (const char *)t->y_d
                                        : (const char *)t->y;
            bl = labels != NULL ? t->labels : NULL;
            bw = weights == NULL ? NULL : f64 ? (const char *)t->weights_d
                                              : (const char *)t->weights;
        }
        if (f64)
            st = bp_net_backprop_f64(net, (const double *)bx,
                                     (const double *)by, bl,
                                     (const double *)bw, rows, &loss);
        else
            st = bp_net_backprop_weighted(net, (const float *)bx,
                                          (const float *)by, bl,
                                          (const float *)bw, rows, &loss);
        if (st == BP_STATUS_NOT_FINITE) {
            char what[128];

            report->mean_loss = loss;
            report->bad_layer = bp_first_bad_layer(net, rows);
            snprintf(what, sizeof what,
                     "batch %lld of %lld (rows %lld to %lld of the epoch's "
                     "order)", (long long)b + 1, (long long)n_batches,
                     (long long)start, (long long)(start + rows - 1));
            return bp_not_finite(fn, net, what, loss, report->bad_layer);
        }
        BP_TRY(st);
        bp_net_update(net, opt, sched);
        total += loss * (double)rows;
        report->batches = b + 1;
        report->rows = start + rows;
        report->mean_loss = total / (double)report->rows;

        /* The last layer's output is the last block of the activations. */
        if (hook != NULL) {
            int64_t last = rows * (net->sum_units - n_out);
            bp_batch_info info = {b, start, rows, loss, NULL, NULL, bl,
                                  NULL, NULL};

            if (f64) {
                info.outputs_f64 = t->acts_d + last;
                info.y_f64 = (const double *)by;
            } else {
                info.outputs = t->acts + last;
                info.y = (const float *)by;
            }
            if (hook(user, &info)) {
                report->stopped = b + 1 < n_batches;
                break;
            }
        }
    }
    return BP_STATUS_OK;
}

/*
 * The epoch of the calls that take a bp_optimizer, which must not be
 * NULL; `report` may be.
 */
static bp_status bp_train_epoch_opt(const char *fn, bp_dtype dtype,
                                    bp_net *net, const bp_optimizer *opt,
                                    const bp_schedule *sched, const void *x,
                                    const void *y, const int32_t *labels,
                                    const void *weights, int64_t n,
                                    int64_t batch_size, int shuffle,
                                    uint64_t seed, uint64_t epoch,
                                    bp_batch_hook hook, void *user,
                                    bp_epoch_report *report)
{
    bp_epoch_report ignored;

    if (report == NULL)
        report = &ignored;
    if (opt == NULL) {
        *report = (bp_epoch_report){0.0, 0, 0, 0, -1};
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'opt' is NULL", fn);
    }
    return bp_train_epoch(fn, dtype, net, NULL, opt, sched, x, y, labels,
                          weights, n, batch_size, shuffle, seed, epoch, hook,
                          user, report);
}

bp_status bp_net_train_epoch_ex(bp_net *net, const bp_sgd_config *sgd,
                                const float *x, const float *y,
                                const int32_t *labels, int64_t n,
                                int64_t batch_size, int shuffle,
                                uint64_t seed, uint64_t epoch,
                                bp_batch_hook hook, void *user,
                                bp_epoch_report *report)
{
    bp_epoch_report ignored;

    return bp_train_epoch("bp_net_train_epoch_ex", BP_DTYPE_F32, net, sgd,
                          NULL, NULL, x, y, labels, NULL, n, batch_size,
                          shuffle, seed, epoch, hook, user,
                          report != NULL ? report : &ignored);
}

bp_status bp_net_train_epoch_opt(bp_net *net, const bp_optimizer *opt,
                                 const bp_schedule *sched, const float *x,
                                 const float *y, const int32_t *labels,
                                 int64_t n, int64_t batch_size, int shuffle,
                                 uint64_t seed, uint64_t epoch,
                                 bp_batch_hook hook, void *user,
                                 bp_epoch_report *report)
{
    return bp_train_epoch_opt("bp_net_train_epoch_opt", BP_DTYPE_F32, net,
                              opt, sched, x, y, labels, NULL, n, batch_size,
                              shuffle, seed, epoch, hook, user, report);
}

bp_status bp_net_train_epoch(bp_net *net, const bp_sgd_config *sgd,
                             const float *x, const float *y,
                             const int32_t *labels, int64_t n,
                             int64_t batch_size, int shuffle, uint64_t seed,
                             uint64_t epoch, double *mean_loss)
{
    bp_epoch_report report;
    bp_status st = bp_train_epoch("bp_net_train_epoch", BP_DTYPE_F32, net,
                                  sgd, NULL, NULL, x, y, labels, NULL, n,
                                  batch_size, shuffle, seed, epoch, NULL,
                                  NULL, &report);

    if (mean_loss != NULL &&
        (st == BP_STATUS_OK || st == BP_STATUS_NOT_FINITE))
        *mean_loss = report.mean_loss;
    return st;
}

bp_status bp_net_train_epoch_weighted(bp_net *net, const bp_optimizer *opt,
                                      const bp_schedule *sched,
                                      const float *x, const float *y,
                                      const int32_t *labels,
                                      const float *weights, int64_t n,
                                      int64_t batch_size, int shuffle,
                                      uint64_t seed, uint64_t epoch,
                                      bp_batch_hook hook, void *user,
                                      bp_epoch_report *report)
{
    return bp_train_epoch_opt("bp_net_train_epoch_weighted", BP_DTYPE_F32,
                              net, opt, sched, x, y, labels, weights, n,
                              batch_size, shuffle, seed, epoch, hook, user,
                              report);
}

bp_status bp_net_gradient_weighted(bp_net *net, const float *x,
                                   const float *y, const int32_t *labels,
                                   const float *weights, int64_t batch,
                                   double *loss)
{
    return bp_gradient("bp_net_gradient_weighted", BP_DTYPE_F32, net, x, y,
                       labels, weights, batch, loss);
}

bp_status bp_net_train_epoch_f64(bp_net *net, const bp_optimizer *opt,
                                 const bp_schedule *sched, const double *x,
                                 const double *y, const int32_t *labels,
                                 const double *weights, int64_t n,
                                 int64_t batch_size, int shuffle,
                                 uint64_t seed, uint64_t epoch,
                                 bp_batch_hook hook, void *user,
                                 bp_epoch_report *report)
{
    return bp_train_epoch_opt("bp_net_train_epoch_f64", BP_DTYPE_F64, net,
                              opt, sched, x, y, labels, weights, n,
                              batch_size, shuffle, seed, epoch, hook, user,
                              report);
}

bp_status bp_net_gradient_f64(bp_net *net, const double *x, const double *y,
                              const int32_t *labels, const double *weights,
                              int64_t batch, double *loss)
{
    return bp_gradient("bp_net_gradient_f64", BP_DTYPE_F64, net, x, y,
                       labels, weights, batch, loss);
}
