/*
 * Activations and their derivatives in double.
 *
 * Design decisions:
 * - The forms are those of the float kernels (kernels/activation.c):
 *   sign-split sigmoid, softplus as max(x, 0) + log1p(e^-|x|), elu with
 *   expm1 of a non-positive argument, gelu through erfc, gelu_tanh's
 *   argument clamped, softmax shifted by the row maximum. libm's double
 *   functions take the place of the float approximations.
 * - Threads split rows; each element is computed by one thread alone.
 */
#include "core/threads.h"
#include "kernels/activation.h"
#include "kernels/f64/kernels_f64.h"

#include <math.h>
#include <string.h>

#define BP_ACTIVATION_COST 16.0

/* 1 / sqrt(2), 1 / sqrt(2 pi), and sqrt(2 / pi) of GELU's tanh form. */
#define BP_SQRT1_2 0.70710678118654752440
#define BP_INV_SQRT_2PI 0.39894228040143267794
#define BP_GELU_C 0.79788456080286535588
#define BP_GELU_K 0.044715

/* Beyond it gelu_tanh's sigmoid is 0 or 1 in double too. */
#define BP_GELU_TANH_CLAMP 20.0

/* sigmoid(x) and 1 - sigmoid(x), each without cancelling. */
static void bp_sigmoid_pair(double x, double *s, double *sm)
{
    double e = exp(-fabs(x));
    double big = 1.0 / (1.0 + e), small = e * big;

    *s = x >= 0.0 ? big : small;
    *sm = x >= 0.0 ? small : big;
}

static double bp_sigmoid(double x)
{
    double s, sm;

    bp_sigmoid_pair(x, &s, &sm);
    return s;
}

static double bp_gelu_tanh_arg(double x)
{
    double c = fmin(fmax(x, -BP_GELU_TANH_CLAMP), BP_GELU_TANH_CLAMP);

    return 2.0 * BP_GELU_C * (c + BP_GELU_K * c * c * c);
}

/* act(x) for an element-wise activation. NOTE: NaN passes through. */
static double bp_apply(double x, bp_activation act, double param)
{
    switch (act) {
    case BP_ACTIVATION_RELU:
        return x < 0.0 ? 0.0 : x;
    case BP_ACTIVATION_SIGMOID:
        return bp_sigmoid(x);
    case BP_ACTIVATION_TANH:
        return tanh(x);
    case BP_ACTIVATION_LEAKY_RELU:
        return x < 0.0 ? param * x : x;
    case BP_ACTIVATION_ELU:
        return x > 0.0 ? x : param * expm1(x);
    case BP_ACTIVATION_GELU:
        return 0.5 * x * erfc(-x * BP_SQRT1_2);
    case BP_ACTIVATION_GELU_TANH:
        return x * bp_sigmoid(bp_gelu_tanh_arg(x));
    case BP_ACTIVATION_SILU:
        return x * bp_sigmoid(x);
    case BP_ACTIVATION_SOFTPLUS:
        return fmax(x, 0.0) + log1p(exp(-fabs(x)));
    default:
        return x;
    }
}

/* act'(x) times dy, from the output y or the input x. */
static double bp_derive(double dy, double y, double x, bp_activation act,
                        double param)
{
    double s, sm;

    switch (act) {
    case BP_ACTIVATION_RELU:
        return y > 0.0 ? dy : 0.0;
    case BP_ACTIVATION_LEAKY_RELU:
        return y > 0.0 ? dy : param * dy;
    case BP_ACTIVATION_SIGMOID:
        return dy * y * (1.0 - y);
    case BP_ACTIVATION_TANH:
        return dy * (1.0 - y * y);
    case BP_ACTIVATION_ELU:
        return dy * (x > 0.0 ? 1.0 : param * exp(x > 0.0 ? 0.0 : x));
    case BP_ACTIVATION_GELU:
        return dy * (0.5 * erfc(-x * BP_SQRT1_2) +
                     x * BP_INV_SQRT_2PI * exp(-0.5 * x * x));
    case BP_ACTIVATION_GELU_TANH: {
        double c = fmin(fmax(x, -BP_GELU_TANH_CLAMP), BP_GELU_TANH_CLAMP);
        double du = 2.0 * BP_GELU_C * (1.0 + 3.0 * BP_GELU_K * c * c);

        bp_sigmoid_pair(bp_gelu_tanh_arg(x), &s, &sm);
        return dy * (s + x * s * sm * du);
    }
    case BP_ACTIVATION_SILU:
        bp_sigmoid_pair(x, &s, &sm);
        return dy * (s + x * s * sm);
    case BP_ACTIVATION_SOFTPLUS:
        return dy * bp_sigmoid(x);
    default:
        return dy;
    }
}

/* Softmax or log-softmax of one row, shifted by its maximum. */
static void bp_softmax_row(double *y, const double *x, int64_t cols,
                           int is_log)
{
    double max = x[0], sum = 0.0;

    for (int64_t j = 1; j < cols; j++)
        max = x[j] > max ? x[j] : max;
    for (int64_t j = 0; j < cols; j++)
        sum += exp(x[j] - max);
    if (is_log) {
        double lse = log(sum);

        for (int64_t j = 0; j < cols; j++)
            y[j] = (x[j] - max) - lse;
        return;
    }
    for (int64_t j = 0; j < cols; j++)
        y[j] = exp(x[j] - max) / sum;
}

/* The backward pass of one softmax or log-softmax row. */
static void bp_softmax_backward_row(double *dx, const double *dy,
                                    const double *y, int64_t cols,
                                    int is_log)
{
    double dot = 0.0;

    for (int64_t j = 0; j < cols; j++)
        dot += is_log ? dy[j] : dy[j] * y[j];
    for (int64_t j = 0; j < cols; j++)
        dx[j] = is_log ? dy[j] - exp(y[j]) * dot : y[j] * (dy[j] - dot);
}

/* The buffers of one activation call, shared by its threads. */
typedef struct bp_act_args {
    double *out;       /* y forward, dx backward */
    const double *in;  /* x forward, dy backward */
    const double *y, *x;
    bp_activation act;
    double param;
    int64_t cols;
} bp_act_args;

static void bp_forward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_act_args *a = ctx;
    int64_t cols = a->cols;

    for (int64_t i = begin; i < end; i++) {
        double *y = a->out + i * cols;
        const double *x = a->in + i * cols;

        if (bp_activation_per_row(a->act)) {
            if (cols > 0)
                bp_softmax_row(y, x, cols,
                               a->act == BP_ACTIVATION_LOG_SOFTMAX);
            continue;
        }
        for (int64_t j = 0; j < cols; j++)
            y[j] = bp_apply(x[j], a->act, a->param);
    }
}

static void bp_backward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_act_args *a = ctx;
    int64_t cols = a->cols;

    for (int64_t i = begin; i < end; i++) {
        int64_t at = i * cols;

        if (bp_activation_per_row(a->act)) {
            bp_softmax_backward_row(a->out + at, a->in + at, a->y + at, cols,
                                    a->act == BP_ACTIVATION_LOG_SOFTMAX);
            continue;
        }
        for (int64_t j = at; j < at + cols; j++)
            a->out[j] = bp_derive(a->in[j], a->y[j],
                                  a->x != NULL ? a->x[j] : 0.0, a->act,
                                  a->param);
    }
}

void bp_activation_forward_f64(double *y, const double *x, bp_activation act,
                               double param, int64_t rows, int64_t cols)
{
    bp_act_args args = {.out = y, .in = x, .act = act, .param = param,
                        .cols = cols};

    if (act == BP_ACTIVATION_IDENTITY) {
        if (y != x)
            memmove(y, x, (size_t)(rows * cols) * sizeof *y);
        return;
    }
    bp_parallel_for(bp_threads_for((double)rows * cols * BP_ACTIVATION_COST),
                    rows, bp_forward_rows, &args);
}

void bp_activation_backward_f64(double *dx, const double *dy,
                                const double *y, const double *x,
                                bp_activation act, double param,
                                int64_t rows, int64_t cols)
{
    bp_act_args args = {.out = dx, .in = dy, .y = y, .x = x, .act = act,
                        .param = param, .cols = cols};

    if (act == BP_ACTIVATION_IDENTITY) {
        if (dx != dy)
            memmove(dx, dy, (size_t)(rows * cols) * sizeof *dx);
        return;
    }
    bp_parallel_for(bp_threads_for((double)rows * cols * BP_ACTIVATION_COST),
                    rows, bp_backward_rows, &args);
}
