/*
 * Inference: workspaces, predictions and evaluation.
 *
 * Design decisions:
 * - The network is only read, so threads may share it; all scratch is
 *   in the caller's workspace: two max_batch x W buffers the layers
 *   write in turn.
 * - Rows are processed in chunks of the workspace's batch size, so any
 *   n works with a small workspace.
 * - A NaN or infinite output of the last layer (a logit, with a fused
 *   loss) is an error, checked before softmax or sigmoid could hide it:
 *   sigmoid(inf) is 1, and softmax turns one overflowing row into NaN.
 * - Predictions are what the network's output means to its loss:
 *   softmax (or log_softmax, when the last layer declares it) and
 *   sigmoid of logits, the rate e^z of poisson's log-rate z, and the
 *   output itself otherwise.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "kernels/loss.h"
#include "kernels/norm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bp_status bp_workspace_create(bp_workspace **out, const bp_net *net,
                              int64_t max_batch)
{
    static const char fn[] = "bp_workspace_create";

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    BP_REQUIRE_PTR(fn, net);
    if (max_batch < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'max_batch' is %lld; it must be >= 1",
                       fn, (long long)max_batch);
    BP_TRY(bp_check_shape(fn, "max_batch", max_batch, "units",
                          net->max_units));

    bp_workspace *ws = calloc(1, sizeof *ws);
    size_t bytes = (size_t)(max_batch * net->max_units) * sizeof(float);

    if (ws != NULL) {
        ws->buf[0] = bp_malloc(bytes);
        ws->buf[1] = bp_malloc(bytes);
    }
    if (ws == NULL || ws->buf[0] == NULL || ws->buf[1] == NULL) {
        bp_workspace_free(ws);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate a workspace of %lld rows", fn,
                       (long long)max_batch);
    }
    ws->max_batch = max_batch;
    ws->width = net->max_units;
    *out = ws;
    return BP_STATUS_OK;
}

void bp_workspace_free(bp_workspace *ws)
{
    if (ws == NULL)
        return;
    bp_free(ws->buf[0]);
    bp_free(ws->buf[1]);
    free(ws);
}

/* Checks what bp_net_predict and bp_net_evaluate share. */
static bp_status bp_infer_check(const char *fn, const bp_net *net,
                                const bp_workspace *ws, const float *x,
                                int64_t n)
{
    BP_REQUIRE_PTR(fn, net);
    BP_REQUIRE_PTR(fn, ws);
    if (ws->width < net->max_units)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the workspace holds layers of %lld units but "
                       "the network has a layer of %lld; create the "
                       "workspace for this network", fn,
                       (long long)ws->width, (long long)net->max_units);
    BP_TRY(bp_check_shape(fn, "n", n, "inputs", net->n_inputs));
    BP_TRY(bp_check_shape(fn, "n", n, "outputs", bp_net_n_outputs(net)));
    BP_REQUIRE_DATA(fn, x, n);
    return BP_STATUS_OK;
}

/*
 * Fails with BP_STATUS_NOT_FINITE if an output of the last layer is NaN
 * or infinite, naming its row; `first` is the row z starts at.
 *   z  rows x O  (IN)
 */
static bp_status bp_outputs_check(const char *fn, const float *z,
                                  int64_t rows, int64_t cols, int64_t first)
{
    int64_t n = rows * cols;
    int bad = 0;

    /* A branch-free pass first: the common, finite case vectorises. */
    for (int64_t i = 0; i < n; i++)
        bad |= !isfinite(z[i]);
    if (!bad)
        return BP_STATUS_OK;

    int64_t i = 0;
    while (isfinite(z[i]))
        i++;
    return bp_fail(BP_STATUS_NOT_FINITE,
                   "%s: the output of row %lld is %g, not finite: the "
                   "inputs are NaN or infinite, or the weights are too "
                   "large for these inputs", fn,
                   (long long)(first + i / cols), (double)z[i]);
}

/*
 * The forward pass of `rows` <= max_batch rows. Returns the last layer's
 * output (logits with a fused loss), in the workspace or, when `out` is
 * not NULL, in `out`.
 */
static const float *bp_forward(const bp_net *net, bp_workspace *ws,
                               float *out, const float *x, int64_t rows)
{
    const float *in = x;
    int last = net->n_layers - 1, next = 0;

    /* `next` alternates between the two buffers as layers write them;
       dropout writes nothing, so it does not advance it. */
    for (int l = 0; l <= last; l++) {
        const bp_layer_spec *spec = &net->layers[l];
        float *y = l == last && out != NULL ? out : ws->buf[next];
        const float *gamma = net->params + net->w_offset[l];
        const float *beta = bp_net_layer_bias(net, net->params, l);
        bp_activation act = bp_net_layer_act(net, l);

        /* Arguments were checked by the caller; nothing here can fail. */
        switch (spec->kind) {
        case BP_LAYER_KIND_DENSE:
            (void)bp_dense_forward_ex(y, NULL, in, gamma, beta, act,
                                      spec->activation_param, rows,
                                      bp_net_layer_inputs(net, l),
                                      spec->units);
            in = y;
            next ^= 1;
            continue;
        case BP_LAYER_KIND_DROPOUT:
            /* Inference keeps every unit: inverted dropout scaled the
               kept ones in training instead. */
            if (y == out)
                memcpy(out, in, (size_t)(rows * spec->units) * sizeof *out);
            else
                y = (float *)in;
            in = y;
            continue;
        case BP_LAYER_KIND_BATCH_NORM:
            bp_batch_norm_infer(y, in, net->running + net->s_offset[l], gamma,
                                beta, spec->eps, rows, spec->units);
            break;
        case BP_LAYER_KIND_LAYER_NORM:
            bp_layer_norm_forward(y, in, gamma, beta, spec->eps, rows,
                                  spec->units);
            break;
        }
        if (act != BP_ACTIVATION_IDENTITY)
            (void)bp_activation_forward_ex(y, y, act, spec->activation_param,
                                           rows, spec->units);
        in = y;
        next ^= 1;
    }
    return in;
}

bp_status bp_net_predict(const bp_net *net, bp_workspace *ws, float *out,
                         const float *x, int64_t n)
{
    static const char fn[] = "bp_net_predict";

    BP_TRY(bp_infer_check(fn, net, ws, x, n));
    BP_REQUIRE_DATA(fn, out, n);

    int64_t n_in = net->n_inputs, n_out = bp_net_n_outputs(net);
    bp_activation link = BP_ACTIVATION_IDENTITY;

    if (net->loss == BP_LOSS_CROSS_ENTROPY)
        link = net->layers[net->n_layers - 1].activation ==
                       BP_ACTIVATION_LOG_SOFTMAX
                   ? BP_ACTIVATION_LOG_SOFTMAX
                   : BP_ACTIVATION_SOFTMAX;
    else if (net->loss == BP_LOSS_BINARY_CROSS_ENTROPY)
        link = BP_ACTIVATION_SIGMOID;

    for (int64_t start = 0; start < n; start += ws->max_batch) {
        int64_t rows = n - start < ws->max_batch ? n - start : ws->max_batch;
        float *o = out + start * n_out;

        bp_forward(net, ws, o, x + start * n_in, rows);
        BP_TRY(bp_outputs_check(fn, o, rows, n_out, start));
        if (link != BP_ACTIVATION_IDENTITY)
            BP_TRY(bp_activation_forward(o, o, link, rows, n_out));
        if (net->loss == BP_LOSS_POISSON) {
            /* The output is the log of the rate; a rate past float's
               range is as unusable as an infinite output. */
            for (int64_t i = 0; i < rows * n_out; i++)
                o[i] = expf(o[i]);
            BP_TRY(bp_outputs_check(fn, o, rows, n_out, start));
        }
    }
    return BP_STATUS_OK;
}

/* bp_net_evaluate_weighted reporting errors as `fn`. */
static bp_status bp_evaluate(const char *fn, const bp_net *net,
                             bp_workspace *ws, const float *x,
                             const float *y, const int32_t *labels,
                             const float *weights, int64_t n, double *loss)
{
    BP_TRY(bp_infer_check(fn, net, ws, x, n));
    BP_REQUIRE_PTR(fn, loss);
    if (n < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n' is %lld; it must be >= 1", fn,
                       (long long)n);
    /* Cross-entropy takes labels, or probabilities in y without them. */
    if (net->loss != BP_LOSS_CROSS_ENTROPY)
        labels = NULL;
    else if (labels != NULL)
        y = NULL;
    BP_TRY(bp_net_check_targets(fn, net, y, labels, n));
    BP_TRY(bp_weights_check(fn, weights, n));

    int64_t n_in = net->n_inputs, n_out = bp_net_n_outputs(net);
    double total = 0.0;

    for (int64_t start = 0; start < n; start += ws->max_batch) {
        int64_t rows = n - start < ws->max_batch ? n - start : ws->max_batch;
        const float *z = bp_forward(net, ws, NULL, x + start * n_in, rows);
        double part = 0.0;

        BP_TRY(bp_outputs_check(fn, z, rows, n_out, start));
        BP_TRY(bp_net_loss_weighted(
            net, &part, NULL, z, y != NULL ? y + start * n_out : NULL,
            labels != NULL ? labels + start : NULL,
            weights != NULL ? weights + start : NULL, rows));
        total += part * (double)rows;
    }
    *loss = total / (double)n;
    return BP_STATUS_OK;
}

bp_status bp_net_evaluate(const bp_net *net, bp_workspace *ws,
                          const float *x, const float *y,
                          const int32_t *labels, int64_t n, double *loss)
{
    return bp_evaluate("bp_net_evaluate", net, ws, x, y, labels, NULL, n,
                       loss);
}

bp_status bp_net_evaluate_weighted(const bp_net *net, bp_workspace *ws,
                                   const float *x, const float *y,
                                   const int32_t *labels,
                                   const float *weights, int64_t n,
                                   double *loss)
{
    return bp_evaluate("bp_net_evaluate_weighted", net, ws, x, y, labels,
                       weights, n, loss);
}
