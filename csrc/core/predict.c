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
 * - Checks and chunking serve both dtypes; the forward pass of a float64
 *   network runs the double kernels on the workspace's double buffers.
 * - Predictions are what the network's output means to its loss:
 *   softmax (or log_softmax, when the last layer declares it) and
 *   sigmoid of logits, the rate e^z of poisson's log-rate z, and the
 *   output itself otherwise.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/memory.h"
#include "kernels/f64/kernels_f64.h"
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
    size_t bytes = (size_t)(max_batch * net->max_units) *
                   bp_net_elem_size(net);
    int f64 = net->dtype == BP_DTYPE_F64;
    int ok = 0;

    if (ws != NULL && f64) {
        ws->buf_d[0] = bp_malloc(bytes);
        ws->buf_d[1] = bp_malloc(bytes);
        ok = ws->buf_d[0] != NULL && ws->buf_d[1] != NULL;
    } else if (ws != NULL) {
        ws->buf[0] = bp_malloc(bytes);
        ws->buf[1] = bp_malloc(bytes);
        ok = ws->buf[0] != NULL && ws->buf[1] != NULL;
    }
    if (!ok) {
        bp_workspace_free(ws);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate a workspace of %lld rows", fn,
                       (long long)max_batch);
    }
    ws->max_batch = max_batch;
    ws->width = net->max_units;
    ws->dtype = net->dtype;
    *out = ws;
    return BP_STATUS_OK;
}

void bp_workspace_free(bp_workspace *ws)
{
    if (ws == NULL)
        return;
    bp_free(ws->buf[0]);
    bp_free(ws->buf[1]);
    bp_free(ws->buf_d[0]);
    bp_free(ws->buf_d[1]);
    free(ws);
}

/*
 * Checks what bp_net_predict and bp_net_evaluate share, for data of
 * dtype `dtype`; `twin` names the call that takes the other dtype.
 */
static bp_status bp_infer_check(const char *fn, const bp_net *net,
                                const bp_workspace *ws, const void *x,
                                int64_t n, bp_dtype dtype, const char *twin)
{
    BP_REQUIRE_PTR(fn, net);
    BP_REQUIRE_PTR(fn, ws);
    BP_TRY(bp_net_check_dtype(fn, net, dtype, twin));
    if (ws->dtype != dtype)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the workspace was created for a %s network; "
                       "create one for this network", fn,
                       bp_dtype_name(ws->dtype));
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

/*
 * What turns the last layer's output into a prediction: softmax (or
 * log_softmax) and sigmoid of fused logits, identity otherwise (poisson
 * takes e^z apart).
 */
static bp_activation bp_link(const bp_net *net)
{
    if (net->loss == BP_LOSS_CROSS_ENTROPY)
        return net->layers[net->n_layers - 1].activation ==
                       BP_ACTIVATION_LOG_SOFTMAX
                   ? BP_ACTIVATION_LOG_SOFTMAX
                   : BP_ACTIVATION_SOFTMAX;
    if (net->loss == BP_LOSS_BINARY_CROSS_ENTROPY)
        return BP_ACTIVATION_SIGMOID;
    return BP_ACTIVATION_IDENTITY;
}

/*
 * The predictions of `rows` rows of a float32 network into `out`, from
 * the inputs x; `first` is the rows' first index.
 */
static bp_status bp_predict_chunk(const char *fn, const bp_net *net,
                                  bp_workspace *ws, float *out,
                                  const float *x, int64_t rows,
                                  int64_t first)
{
    int64_t n_out = bp_net_n_outputs(net);
    bp_activation link = bp_link(net);

    bp_forward(net, ws, out, x, rows);
    BP_TRY(bp_outputs_check(fn, out, rows, n_out, first));
    if (link != BP_ACTIVATION_IDENTITY)
        BP_TRY(bp_activation_forward(out, out, link, rows, n_out));
    if (net->loss == BP_LOSS_POISSON) {
        /* The output is the log of the rate; a rate past float's range
           is as unusable as an infinite output. */
        for (int64_t i = 0; i < rows * n_out; i++)
            out[i] = expf(out[i]);
        BP_TRY(bp_outputs_check(fn, out, rows, n_out, first));
    }
    return BP_STATUS_OK;
}

static bp_status bp_predict_chunk_f64(const char *fn, const bp_net *net,
                                      bp_workspace *ws, double *out,
                                      const double *x, int64_t rows,
                                      int64_t first);

/*
 * bp_net_predict and its float64 twin, reporting errors as `fn`; x and
 * out hold values of `dtype`, and `twin` names the other dtype's call.
 */
static bp_status bp_predict(const char *fn, bp_dtype dtype, const char *twin,
                            const bp_net *net, bp_workspace *ws, void *out,
                            const void *x, int64_t n)
{
    BP_TRY(bp_infer_check(fn, net, ws, x, n, dtype, twin));
    BP_REQUIRE_DATA(fn, out, n);

    size_t size = bp_net_elem_size(net);
    size_t in_bytes = (size_t)net->n_inputs * size;
    size_t out_bytes = (size_t)bp_net_n_outputs(net) * size;

    for (int64_t start = 0; start < n; start += ws->max_batch) {
        int64_t rows = n - start < ws->max_batch ? n - start : ws->max_batch;
        char *o = (char *)out + start * out_bytes;
        const char *cx = (const char *)x + start * in_bytes;

        if (dtype == BP_DTYPE_F64)
            BP_TRY(bp_predict_chunk_f64(fn, net, ws, (double *)o,
                                        (const double *)cx, rows, start));
        else
            BP_TRY(bp_predict_chunk(fn, net, ws, (float *)o,
                                    (const float *)cx, rows, start));
    }
    return BP_STATUS_OK;
}

bp_status bp_net_predict(const bp_net *net, bp_workspace *ws, float *out,
                         const float *x, int64_t n)
{
    return bp_predict("bp_net_predict", BP_DTYPE_F32, "bp_net_predict_f64",
                      net, ws, out, x, n);
}

/*
 * The summed loss of `rows` rows of a float32 network into *part (the
 * mean times rows), from their inputs x, targets y or labels and
 * weights (NULL for none); `first` is the rows' first index.
 */
static bp_status bp_chunk_loss(const char *fn, const bp_net *net,
                               bp_workspace *ws, const float *x,
                               const float *y, const int32_t *labels,
                               const float *weights, int64_t rows,
                               int64_t first, double *part)
{
    const float *z = bp_forward(net, ws, NULL, x, rows);

    BP_TRY(bp_outputs_check(fn, z, rows, bp_net_n_outputs(net), first));
    BP_TRY(bp_net_loss_weighted(net, part, NULL, z, y, labels, weights,
                                rows));
    *part *= (double)rows;
    return BP_STATUS_OK;
}

static bp_status bp_chunk_loss_f64(const char *fn, const bp_net *net,
                                   bp_workspace *ws, const double *x,
                                   const double *y, const int32_t *labels,
                                   const double *weights, int64_t rows,
                                   int64_t first, double *part);

/*
 * bp_net_evaluate_weighted and its float64 twin, reporting errors as
 * `fn`; x, y and weights hold values of `dtype`, and `twin` names the
 * call for the other dtype.
 */
static bp_status bp_evaluate(const char *fn, bp_dtype dtype,
                             const char *twin, const bp_net *net,
                             bp_workspace *ws, const void *x, const void *y,
                             const int32_t *labels, const void *weights,
                             int64_t n, double *loss)
{
    BP_TRY(bp_infer_check(fn, net, ws, x, n, dtype, twin));
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
    BP_TRY(bp_net_check_weights(fn, dtype, weights, n));

    size_t size = bp_net_elem_size(net);
    size_t in_bytes = (size_t)net->n_inputs * size;
    size_t out_bytes = (size_t)bp_net_n_outputs(net) * size;
    double total = 0.0;

    for (int64_t start = 0; start < n; start += ws->max_batch) {
        int64_t rows = n - start < ws->max_batch ? n - start : ws->max_batch;
        const char *cx = (const char *)x + start * in_bytes;
        const char *cy = y != NULL ? (const char *)y + start * out_bytes
                                   : NULL;
        const char *cw = weights != NULL
                             ? (const char *)weights + start * size
                             : NULL;
        const int32_t *cl = labels != NULL ? labels + start : NULL;
        double part = 0.0;

        if (dtype == BP_DTYPE_F64)
            BP_TRY(bp_chunk_loss_f64(fn, net, ws, (const double *)cx,
                                     (const double *)cy, cl,
                                     (const double *)cw, rows, start,
                                     &part));
        else
            BP_TRY(bp_chunk_loss(fn, net, ws, (const float *)cx,
                                 (const float *)cy, cl, (const float *)cw,
                                 rows, start, &part));
        total += part;
    }
    *loss = total / (double)n;
    return BP_STATUS_OK;
}

bp_status bp_net_evaluate(const bp_net *net, bp_workspace *ws,
                          const float *x, const float *y,
                          const int32_t *labels, int64_t n, double *loss)
{
    return bp_evaluate("bp_net_evaluate", BP_DTYPE_F32, "bp_net_evaluate_f64",
                       net, ws, x, y, labels, NULL, n, loss);
}

bp_status bp_net_evaluate_weighted(const bp_net *net, bp_workspace *ws,
                                   const float *x, const float *y,
                                   const int32_t *labels,
                                   const float *weights, int64_t n,
                                   double *loss)
{
    return bp_evaluate("bp_net_evaluate_weighted", BP_DTYPE_F32,
                       "bp_net_evaluate_f64", net, ws, x, y, labels, weights,
                       n, loss);
}

/*
 * Fails as bp_outputs_check does when a double output is not finite.
 *   z  rows x O  (IN)
 */
static bp_status bp_outputs_check_f64(const char *fn, const double *z,
                                      int64_t rows, int64_t cols,
                                      int64_t first)
{
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(z[i]))
            return bp_fail(BP_STATUS_NOT_FINITE,
                           "%s: the output of row %lld is %g, not finite: "
                           "the inputs are NaN or infinite, or the weights "
                           "are too large for these inputs", fn,
                           (long long)(first + i / cols), z[i]);
    return BP_STATUS_OK;
}

/*
 * The forward pass of a float64 network on `rows` <= max_batch rows, as
 * bp_forward: the last layer's output lands in `out` when it is not
 * NULL, else in the workspace, and is returned.
 */
static const double *bp_forward_f64(const bp_net *net, bp_workspace *ws,
                                    double *out, const double *x,
                                    int64_t rows)
{
    const double *in = x;
    int last = net->n_layers - 1, next = 0;

    for (int l = 0; l <= last; l++) {
        const bp_layer_spec *spec = &net->layers[l];
        double *y = l == last && out != NULL ? out : ws->buf_d[next];
        const double *gamma = net->params_d + net->w_offset[l];
        const double *beta = spec->no_bias ? NULL
                                           : net->params_d + net->b_offset[l];
        bp_activation act = bp_net_layer_act(net, l);
        int64_t n = spec->units;

        switch (spec->kind) {
        case BP_LAYER_KIND_DENSE:
            bp_dense_forward_f64(y, NULL, in, gamma, beta, act,
                                 spec->activation_param, rows,
                                 bp_net_layer_inputs(net, l), n);
            act = BP_ACTIVATION_IDENTITY;
            break;
        case BP_LAYER_KIND_DROPOUT:
            /* Inference keeps every unit, as bp_forward does. */
            if (y == out) {
                memcpy(out, in, (size_t)(rows * n) * sizeof *out);
                in = out;
            }
            continue;
        case BP_LAYER_KIND_BATCH_NORM:
            bp_batch_norm_infer_f64(y, in, net->running_d + net->s_offset[l],
                                    gamma, beta, spec->eps, rows, n);
            break;
        case BP_LAYER_KIND_LAYER_NORM:
            bp_layer_norm_forward_f64(y, in, gamma, beta, spec->eps, rows, n);
            break;
        }
        bp_activation_forward_f64(y, y, act, spec->activation_param, rows, n);
        in = y;
        next ^= 1;
    }
    return in;
}

static bp_status bp_predict_chunk_f64(const char *fn, const bp_net *net,
                                      bp_workspace *ws, double *out,
                                      const double *x, int64_t rows,
                                      int64_t first)
{
    int64_t n_out = bp_net_n_outputs(net);

    bp_forward_f64(net, ws, out, x, rows);
    BP_TRY(bp_outputs_check_f64(fn, out, rows, n_out, first));
    bp_activation_forward_f64(out, out, bp_link(net), 0.0, rows, n_out);
    if (net->loss == BP_LOSS_POISSON) {
        for (int64_t i = 0; i < rows * n_out; i++)
            out[i] = exp(out[i]);
        BP_TRY(bp_outputs_check_f64(fn, out, rows, n_out, first));
    }
    return BP_STATUS_OK;
}

bp_status bp_net_predict_f64(const bp_net *net, bp_workspace *ws,
                             double *out, const double *x, int64_t n)
{
    return bp_predict("bp_net_predict_f64", BP_DTYPE_F64, "bp_net_predict",
                      net, ws, out, x, n);
}

static bp_status bp_chunk_loss_f64(const char *fn, const bp_net *net,
                                   bp_workspace *ws, const double *x,
                                   const double *y, const int32_t *labels,
                                   const double *weights, int64_t rows,
                                   int64_t first, double *part)
{
    int64_t n_out = bp_net_n_outputs(net);
    const double *z = bp_forward_f64(net, ws, NULL, x, rows);

    BP_TRY(bp_outputs_check_f64(fn, z, rows, n_out, first));
    bp_loss_run_f64(part, NULL, z, y, labels, weights, &net->loss_cfg, rows,
                    n_out);
    *part *= (double)rows;
    return BP_STATUS_OK;
}

bp_status bp_net_evaluate_f64(const bp_net *net, bp_workspace *ws,
                              const double *x, const double *y,
                              const int32_t *labels, const double *weights,
                              int64_t n, double *loss)
{
    return bp_evaluate("bp_net_evaluate_f64", BP_DTYPE_F64,
                       "bp_net_evaluate_weighted", net, ws, x, y, labels,
                       weights, n, loss);
}
