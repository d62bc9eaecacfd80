/*
 * Activations and their derivatives.
 *
 * Design decisions:
 * - Sigmoid uses the sign-split form, 1 / (1 + e^-x) for x >= 0 and
 *   e^x / (1 + e^x) otherwise, so exp only ever sees -|x| and never
 *   overflows.
 * - Softmax subtracts the row maximum before exp, which makes it
 *   shift-invariant and finite for any finite row; the row sum is kept
 *   in double.
 * - Derivatives are written in terms of the forward output y, which the
 *   training loop keeps anyway.
 * - Threads split rows only; every element is computed the same way by
 *   one thread, so results do not depend on the thread count.
 */
#include "kernels/activation.h"

#include "core/check.h"
#include "core/threads.h"
#include "kernels/exp.h"

#include <math.h>
#include <string.h>

/* Rough cost of one element in flops, for choosing a thread count. */
#define BP_ACTIVATION_COST 16.0

static float bp_sigmoid(float x)
{
    float e = bp_exp_neg(-fabsf(x));
    float s = 1.0f / (1.0f + e);

    return x >= 0.0f ? s : e * s;
}

/* NOTE: `x < 0` rather than `x > 0` so that NaN passes through relu. */
static float bp_relu(float x)
{
    return x < 0.0f ? 0.0f : x;
}

void bp_activation_apply(float *x, int64_t n, bp_activation act)
{
    switch (act) {
    case BP_ACTIVATION_RELU:
        for (int64_t i = 0; i < n; i++)
            x[i] = bp_relu(x[i]);
        break;
    case BP_ACTIVATION_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            x[i] = bp_sigmoid(x[i]);
        break;
    case BP_ACTIVATION_TANH:
        for (int64_t i = 0; i < n; i++)
            x[i] = tanhf(x[i]);
        break;
    case BP_ACTIVATION_IDENTITY:
    case BP_ACTIVATION_SOFTMAX:
        break;
    }
}

/*
 * Softmax of one row, shifted by its maximum.
 *   y  O  (OUT; may alias x)      x  O  (IN)
 */
static void bp_softmax_row(float *y, const float *x, int64_t cols)
{
    float max = x[0];
    for (int64_t j = 1; j < cols; j++)
        max = x[j] > max ? x[j] : max;

    double sum = 0.0;
    for (int64_t j = 0; j < cols; j++) {
        y[j] = bp_exp_neg(x[j] - max);
        sum += y[j];
    }

    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < cols; j++)
        y[j] *= inv;
}

/*
 * Backward of softmax for one row: dx = y * (dy - sum(dy * y)).
 *   dx  O  (OUT; may alias dy)    dy, y  O  (IN)
 */
static void bp_softmax_backward_row(float *dx, const float *dy,
                                    const float *y, int64_t cols)
{
    double dot = 0.0;
    for (int64_t j = 0; j < cols; j++)
        dot += (double)dy[j] * y[j];

    float s = (float)dot;
    for (int64_t j = 0; j < cols; j++)
        dx[j] = y[j] * (dy[j] - s);
}

/*
 * dx = dy * act'(y) on n contiguous values, for element-wise
 * activations.
 *   dx  n  (OUT; may alias dy)    dy, y  n  (IN)
 */
static void bp_activation_backward_span(float *dx, const float *dy,
                                        const float *y, int64_t n,
                                        bp_activation act)
{
    switch (act) {
    case BP_ACTIVATION_RELU:
        /* Both loads unconditional, so the select vectorises. */
        for (int64_t i = 0; i < n; i++) {
            float g = dy[i];

            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
        break;
    case BP_ACTIVATION_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        break;
    case BP_ACTIVATION_TANH:
        for (int64_t i = 0; i < n; i++)
            dx[i] = dy[i] * (1.0f - y[i] * y[i]);
        break;
    case BP_ACTIVATION_IDENTITY:
    case BP_ACTIVATION_SOFTMAX:
        if (dx != dy)
            memcpy(dx, dy, (size_t)n * sizeof(float));
        break;
    }
}

const char *bp_activation_name(bp_activation act)
{
    switch (act) {
    case BP_ACTIVATION_IDENTITY:
        return "identity";
    case BP_ACTIVATION_RELU:
        return "relu";
    case BP_ACTIVATION_SIGMOID:
        return "sigmoid";
    case BP_ACTIVATION_TANH:
        return "tanh";
    case BP_ACTIVATION_SOFTMAX:
        return "softmax";
    }
    return NULL;
}

/* Validates the arguments shared by the forward and backward kernels. */
static bp_status bp_activation_check(const char *fn, bp_activation act,
                                     int64_t rows, int64_t cols)
{
    if (bp_activation_name(act) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'act' is %d, which is not a "
                       "bp_activation", fn, (int)act);
    return bp_check_shape(fn, "rows", rows, "cols", cols);
}

/* The buffers of one activation call, shared by its threads. */
typedef struct bp_activation_args {
    float *out;       /* y forward, dx backward: rows x cols */
    const float *in;  /* x forward, dy backward: rows x cols */
    const float *y;   /* backward only: the forward output */
    bp_activation act;
    int64_t cols;
} bp_activation_args;

static void bp_forward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_activation_args *a = ctx;
    int64_t cols = a->cols;

    for (int64_t i = begin; i < end; i++) {
        float *yi = a->out + i * cols;
        const float *xi = a->in + i * cols;

        if (a->act == BP_ACTIVATION_SOFTMAX) {
            if (cols > 0)
                bp_softmax_row(yi, xi, cols);
            continue;
        }
        if (yi != xi)
            memcpy(yi, xi, (size_t)cols * sizeof(float));
        bp_activation_apply(yi, cols, a->act);
    }
}

static void bp_backward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_activation_args *a = ctx;
    int64_t cols = a->cols;

    for (int64_t i = begin; i < end; i++) {
        int64_t at = i * cols;

        if (a->act == BP_ACTIVATION_SOFTMAX)
            bp_softmax_backward_row(a->out + at, a->in + at, a->y + at,
                                    cols);
        else
            bp_activation_backward_span(a->out + at, a->in + at, a->y + at,
                                        cols, a->act);
    }
}

bp_status bp_activation_forward(float *y, const float *x, bp_activation act,
                                int64_t rows, int64_t cols)
{
    static const char fn[] = "bp_activation_forward";

    BP_TRY(bp_activation_check(fn, act, rows, cols));
    BP_REQUIRE_DATA(fn, y, rows * cols);
    BP_REQUIRE_DATA(fn, x, rows * cols);

    bp_activation_args args = {.out = y, .in = x, .act = act, .cols = cols};
    int threads = bp_threads_for((double)rows * cols * BP_ACTIVATION_COST);

    bp_parallel_for(threads, rows, bp_forward_rows, &args);
    return BP_STATUS_OK;
}

bp_status bp_activation_backward(float *dx, const float *dy, const float *y,
                                 bp_activation act, int64_t rows,
                                 int64_t cols)
{
    static const char fn[] = "bp_activation_backward";

    BP_TRY(bp_activation_check(fn, act, rows, cols));
    BP_REQUIRE_DATA(fn, dx, rows * cols);
    BP_REQUIRE_DATA(fn, dy, rows * cols);
    BP_REQUIRE_DATA(fn, y, rows * cols);

    bp_activation_args args = {.out = dx, .in = dy, .y = y, .act = act,
                               .cols = cols};
    int threads = bp_threads_for((double)rows * cols * 4.0);

    bp_parallel_for(threads, rows, bp_backward_rows, &args);
    return BP_STATUS_OK;
}
