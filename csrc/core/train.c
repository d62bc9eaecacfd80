/*
 * Training: the forward and backward pass of a whole network on a batch,
 * the SGD step, and whole epochs.
 *
 * Design decisions:
 * - The scratch lives in the network (bp_train_buffers) and only grows,
 *   so a step on a batch size seen before allocates nothing.
 * - Layer l's output is kept (B x O_l at B * (O_0 + ... + O_{l-1})) for
 *   the backward pass; gradients between layers ping-pong between two
 *   B x W buffers.
 * - An epoch gathers each batch's rows in a shuffled order into a
 *   contiguous buffer; without shuffling it reads the caller's rows in
 *   place. The order depends only on (seed, epoch).
 * - Biases are exempt from the L2 penalty.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "core/rng.h"
#include "kernels/sgd.h"

#include <math.h>
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
    int ok = bp_grow((void **)&t->acts, old * net->sum_units,
                     batch * net->sum_units, sizeof(float)) &&
             bp_grow((void **)&t->delta[0], old * net->max_units,
                     batch * net->max_units, sizeof(float)) &&
             bp_grow((void **)&t->delta[1], old * net->max_units,
                     batch * net->max_units, sizeof(float)) &&
             bp_grow((void **)&t->x, old * net->n_inputs,
                     batch * net->n_inputs, sizeof(float)) &&
             bp_grow((void **)&t->y, old * n_out, batch * n_out,
                     sizeof(float)) &&
             bp_grow((void **)&t->labels, old, batch, sizeof(int32_t));
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
 * Forward and backward pass with trusted arguments; gradients land in
 * net->grads.
 *   x  B x I (IN)    y  B x O or labels  B (IN)    loss  (OUT)
 */
static bp_status bp_net_backprop(bp_net *net, const float *x, const float *y,
                                 const int32_t *labels, int64_t batch,
                                 double *loss)
{
    bp_train_buffers *t = &net->train;
    int last = net->n_layers - 1;
    const float *in = x;
    float *out = t->acts;

    for (int l = 0; l <= last; l++) {
        int64_t n_in = bp_net_layer_inputs(net, l);
        int64_t n_out = net->layers[l].units;

        BP_TRY(bp_dense_forward(out, in, net->params + net->w_offset[l],
                                net->params + net->b_offset[l],
                                bp_net_layer_act(net, l), batch, n_in,
                                n_out));
        in = out;
        out += batch * n_out;
    }

    /* `in` now holds the last layer's output: logits with a fused loss. */
    float *dy = t->delta[0];
    BP_TRY(bp_net_loss_of(net, loss, dy, in, y, labels, batch));
    if (!isfinite(*loss))
        return BP_STATUS_NOT_FINITE;

    for (int l = last; l >= 0; l--) {
        int64_t n_in = bp_net_layer_inputs(net, l);
        int64_t n_out = net->layers[l].units;
        float *y_l = out - batch * n_out;
        const float *x_l = l > 0 ? y_l - batch * n_in : x;
        float *dx = l > 0 ? t->delta[(last - l + 1) % 2] : NULL;

        /* dz overwrites dy: the activation backward may run in place. */
        BP_TRY(bp_dense_backward(dx, net->grads + net->w_offset[l],
                                 net->grads + net->b_offset[l], dy, dy, x_l,
                                 net->params + net->w_offset[l], y_l,
                                 bp_net_layer_act(net, l), batch, n_in,
                                 n_out));
        out = y_l;
        dy = dx;
    }
    return BP_STATUS_OK;
}

/* One SGD step on every layer, biases without the L2 penalty. */
static void bp_net_step(bp_net *net, const bp_sgd_config *sgd)
{
    for (int l = 0; l < net->n_layers; l++) {
        int64_t w = net->w_offset[l], b = net->b_offset[l];
        int64_t n_out = net->layers[l].units;

        bp_sgd_step(net->params + w, net->velocity + w, net->grads + w, sgd,
                    sgd->l2, b - w);
        bp_sgd_step(net->params + b, net->velocity + b, net->grads + b, sgd,
                    0.0f, n_out);
    }
}

/* Checks what bp_net_gradient and bp_net_train_batch share. */
static bp_status bp_batch_check(const char *fn, bp_net *net, const float *x,
                                const float *y, const int32_t *labels,
                                int64_t batch)
{
    BP_REQUIRE_PTR(fn, net);
    if (batch < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'batch' is %lld; it must be >= 1", fn,
                       (long long)batch);
    BP_TRY(bp_check_shape(fn, "batch", batch, "inputs", net->n_inputs));
    BP_REQUIRE_PTR(fn, x);
    BP_TRY(bp_net_check_targets(fn, net, y, labels, batch));
    return bp_train_reserve(fn, net, batch);
}

/* Names a non-finite loss for the caller. */
static bp_status bp_not_finite(const char *fn, double loss, int64_t row)
{
    return bp_fail(BP_STATUS_NOT_FINITE,
                   "%s: the loss of the batch starting at row %lld is %g; "
                   "training diverged (lower the learning rate or scale "
                   "the inputs)", fn, (long long)row, loss);
}

bp_status bp_net_gradient(bp_net *net, const float *x, const float *y,
                          const int32_t *labels, int64_t batch, double *loss)
{
    static const char fn[] = "bp_net_gradient";
    double value = 0.0;

    BP_TRY(bp_batch_check(fn, net, x, y, labels, batch));
    bp_status st = bp_net_backprop(net, x, y, labels, batch, &value);
    if (st == BP_STATUS_NOT_FINITE)
        st = bp_not_finite(fn, value, 0);
    if (loss != NULL)
        *loss = value;
    return st;
}

bp_status bp_net_train_batch(bp_net *net, const bp_sgd_config *sgd,
                             const float *x, const float *y,
                             const int32_t *labels, int64_t batch,
                             double *loss)
{
    static const char fn[] = "bp_net_train_batch";
    double value = 0.0;

    BP_TRY(bp_sgd_check(fn, sgd));
    BP_TRY(bp_batch_check(fn, net, x, y, labels, batch));
    bp_status st = bp_net_backprop(net, x, y, labels, batch, &value);
    if (loss != NULL)
        *loss = value;
    if (st == BP_STATUS_NOT_FINITE)
        return bp_not_finite(fn, value, 0);
    BP_TRY(st);
    bp_net_step(net, sgd);
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

/* Copies the rows order[0..rows) of x and the targets into the buffers. */
static void bp_gather(bp_net *net, const int64_t *order, int64_t rows,
                      const float *x, const float *y, const int32_t *labels)
{
    bp_train_buffers *t = &net->train;
    int64_t n_in = net->n_inputs, n_out = bp_net_n_outputs(net);
    size_t in_bytes = (size_t)n_in * sizeof(float);
    size_t out_bytes = (size_t)n_out * sizeof(float);

    for (int64_t r = 0; r < rows; r++) {
        int64_t i = order[r];

        memcpy(t->x + r * n_in, x + i * n_in, in_bytes);
        if (labels != NULL)
            t->labels[r] = labels[i];
        else
            memcpy(t->y + r * n_out, y + i * n_out, out_bytes);
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

bp_status bp_net_train_epoch(bp_net *net, const bp_sgd_config *sgd,
                             const float *x, const float *y,
                             const int32_t *labels, int64_t n,
                             int64_t batch_size, int shuffle, uint64_t seed,
                             uint64_t epoch, double *mean_loss)
{
    static const char fn[] = "bp_net_train_epoch";

    BP_REQUIRE_PTR(fn, net);
    BP_TRY(bp_sgd_check(fn, sgd));
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
    if (net->loss == BP_LOSS_CROSS_ENTROPY)
        y = NULL;
    else
        labels = NULL;
    BP_TRY(bp_net_check_targets(fn, net, y, labels, n));
    if (batch_size > n)
        batch_size = n;
    BP_TRY(bp_train_reserve(fn, net, batch_size));
    if (shuffle)
        BP_TRY(bp_order_reserve(fn, net, n));

    int64_t *order = net->train.order;
    int64_t n_out = bp_net_n_outputs(net);
    double total = 0.0;

    if (shuffle) {
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        bp_rng_shuffle(order, n, seed, epoch);
    }
    for (int64_t start = 0; start < n; start += batch_size) {
        int64_t rows = n - start < batch_size ? n - start : batch_size;
        const float *bx = x + start * net->n_inputs;
        const float *by = y != NULL ? y + start * n_out : NULL;
        const int32_t *bl = labels != NULL ? labels + start : NULL;
        double loss = 0.0;

        if (shuffle) {
            bp_gather(net, order + start, rows, x, y, labels);
            bx = net->train.x;
            by = y != NULL ? net->train.y : NULL;
            bl = labels != NULL ? net->train.labels : NULL;
        }
        bp_status st = bp_net_backprop(net, bx, by, bl, rows, &loss);
        if (st == BP_STATUS_NOT_FINITE) {
            if (mean_loss != NULL)
                *mean_loss = loss;
            return bp_not_finite(fn, loss, start);
        }
        BP_TRY(st);
        bp_net_step(net, sgd);
        total += loss * (double)rows;
    }
    if (mean_loss != NULL)
        *mean_loss = total / (double)n;
    return BP_STATUS_OK;
}
