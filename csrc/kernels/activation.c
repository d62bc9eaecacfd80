/*
 * Activations and their derivatives.
 *
 * Design decisions:
 * - No exponential ever sees a positive argument: sigmoid uses the
 *   sign-split form, 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x)
 *   otherwise, and so do silu and gelu_tanh (through sigmoid); softplus
 *   is max(x, 0) + log1p(e^-|x|); elu takes e^x - 1 for x <= 0 only.
 *   Every finite input therefore gives a finite output and derivative.
 * - Softmax and log_softmax subtract the row maximum before exp, which
 *   makes them shift-invariant and finite for any finite row; the row
 *   sum is kept in double.
 * - Derivatives are written in terms of the forward output y, which the
 *   training loop keeps anyway, except where y does not determine them
 *   (elu, gelu, gelu_tanh, silu, softplus): those take the input x, and
 *   the training loop keeps it for such layers only.
 * - gelu is the exact x Phi(x), written 0.5 x erfc(-x / sqrt 2) so that
 *   it does not cancel to 0 for negative x as 1 + erf would.
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

#define BP_LEAKY_RELU_SLOPE 0.01f
#define BP_ELU_ALPHA 1.0f

/* 1 / sqrt(2), 1 / sqrt(2 pi), and sqrt(2 / pi) of GELU's tanh form. */
#define BP_SQRT1_2 0.70710678118654752f
#define BP_INV_SQRT_2PI 0.39894228040143268f
#define BP_GELU_C 0.79788456080286536f
#define BP_GELU_K 0.044715f

/*
 * NOTE: gelu_tanh's sigmoid argument is taken at x clamped to this
 * bound. Beyond it the sigmoid is 0 or 1 in float either way, and the
 * clamp keeps x^3 (and the derivative's x^2) from overflowing.
 */
#define BP_GELU_TANH_CLAMP 10.0f

static float bp_sigmoid(float x)
{
    float e = bp_exp_neg(-fabsf(x));
    float s = 1.0f / (1.0f + e);

    return x >= 0.0f ? s : e * s;
}

/* sigmoid(x) and 1 - sigmoid(x) = sigmoid(-x), each without cancelling. */
static void bp_sigmoid_pair(float x, float *s, float *sm)
{
    float e = bp_exp_neg(-fabsf(x));
    float big = 1.0f / (1.0f + e), small = e * big;

    *s = x >= 0.0f ? big : small;
    *sm = x >= 0.0f ? small : big;
}

/* NOTE: `x < 0` rather than `x > 0` so that NaN passes through relu. */
static float bp_relu(float x)
{
    return x < 0.0f ? 0.0f : x;
}

static float bp_elu(float x, float alpha)
{
    float neg = x > 0.0f ? 0.0f : x;  /* keeps NaN */

    return x > 0.0f ? x : alpha * bp_expm1_neg(neg);
}

static float bp_gelu(float x)
{
    return 0.5f * x * erfcf(-x * BP_SQRT1_2);
}

/* The argument 2 u of gelu_tanh's sigmoid: x Phi(x) ~ x sigmoid(2 u). */
static float bp_gelu_tanh_arg(float x)
{
    float c = fminf(fmaxf(x, -BP_GELU_TANH_CLAMP), BP_GELU_TANH_CLAMP);

    return 2.0f * BP_GELU_C * (c + BP_GELU_K * c * c * c);
}

static float bp_softplus(float x)
{
    return fmaxf(x, 0.0f) + log1pf(bp_exp_neg(-fabsf(x)));
}

float bp_activation_param(bp_activation act, float param)
{
    if (act != BP_ACTIVATION_LEAKY_RELU && act != BP_ACTIVATION_ELU)
        return 0.0f;
    if (!isfinite(param) || param < 0.0f)
        return NAN;
    if (param == 0.0f)
        return act == BP_ACTIVATION_ELU ? BP_ELU_ALPHA : BP_LEAKY_RELU_SLOPE;
    return param;
}

int bp_activation_needs_input(bp_activation act)
{
    switch (act) {
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

int bp_activation_per_row(bp_activation act)
{
    return act == BP_ACTIVATION_SOFTMAX || act == BP_ACTIVATION_LOG_SOFTMAX;
}

void bp_activation_apply(float *x, int64_t n, bp_activation act, float param)
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
    case BP_ACTIVATION_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++)
            x[i] = x[i] < 0.0f ? param * x[i] : x[i];
        break;
    case BP_ACTIVATION_ELU:
        for (int64_t i = 0; i < n; i++)
            x[i] = bp_elu(x[i], param);
        break;
    case BP_ACTIVATION_GELU:
        for (int64_t i = 0; i < n; i++)
            x[i] = bp_gelu(x[i]);
        break;
    case BP_ACTIVATION_GELU_TANH:
        for (int64_t i = 0; i < n; i++)
            x[i] *= bp_sigmoid(bp_gelu_tanh_arg(x[i]));
        break;
    case BP_ACTIVATION_SILU:
        for (int64_t i = 0; i < n; i++)
            x[i] *= bp_sigmoid(x[i]);
        break;
    case BP_ACTIVATION_SOFTPLUS:
        for (int64_t i = 0; i < n; i++)
            x[i] = bp_softplus(x[i]);
        break;
    case BP_ACTIVATION_IDENTITY:
    case BP_ACTIVATION_SOFTMAX:
    case BP_ACTIVATION_LOG_SOFTMAX:
        break;
    }
}

/*
 * Softmax or log-softmax of one row, shifted by its maximum.
 *   y  O  (OUT; may alias x)      x  O  (IN)
 */
static void bp_softmax_row(float *y, const float *x, int64_t cols,
                           int is_log)
{
    float max = x[0];
    for (int64_t j = 1; j < cols; j++)
        max = x[j] > max ? x[j] : max;

    double sum = 0.0;
    if (is_log) {
        for (int64_t j = 0; j < cols; j++)
            sum += bp_exp_neg(x[j] - max);

        float lse = (float)log(sum);
        for (int64_t j = 0; j < cols; j++)
            y[j] = (x[j] - max) - lse;
        return;
    }
    for (int64_t j = 0; j < cols; j++) {
        y[j] = bp_exp_neg(x[j] - max);
        sum += y[j];
    }

    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < cols; j++)
        y[j] *= inv;
}

/*
 * Backward of softmax for one row: dx = y * (dy - sum(dy * y)); of
 * log-softmax: dx = dy - exp(y) * sum(dy).
 *   dx  O  (OUT; may alias dy)    dy, y  O  (IN)
 */
static void bp_softmax_backward_row(float *dx, const float *dy,
                                    const float *y, int64_t cols,
                                    int is_log)
{
    double dot = 0.0;
    if (is_log) {
        for (int64_t j = 0; j < cols; j++)
            dot += dy[j];

        float s = (float)dot;
        for (int64_t j = 0; j < cols; j++)
            dx[j] = dy[j] - bp_exp_neg(y[j]) * s;
        return;
    }
    for (int64_t j = 0; j < cols; j++)
        dot += (double)dy[j] * y[j];

    float s = (float)dot;
    for (int64_t j = 0; j < cols; j++)
        dx[j] = y[j] * (dy[j] - s);
}

/*
 * dx = dy * act'(y) on n contiguous values, for element-wise
 * activations whose derivative follows from the output y.
 *   dx  n  (OUT; may alias dy)    dy, y  n  (IN)
 */
static void bp_backward_from_output(float *dx, const float *dy,
                                    const float *y, int64_t n,
                                    bp_activation act, float param)
{
    switch (act) {
    case BP_ACTIVATION_RELU:
        /* Both loads unconditional, so the select vectorises. */
        for (int64_t i = 0; i < n; i++) {
            float g = dy[i];

            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
        break;
    case BP_ACTIVATION_LEAKY_RELU:
        /* The slope is >= 0, so y > 0 exactly where x > 0. */
        for (int64_t i = 0; i < n; i++) {
            float g = dy[i];

            dx[i] = y[i] > 0.0f ? g : param * g;
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
    default:
        if (dx != dy)
            memcpy(dx, dy, (size_t)n * sizeof(float));
        break;
    }
}

/*
 * dx = dy * act'(x) on n contiguous values, for the activations that
 * need their input x.
 *   dx  n  (OUT; may alias dy)    dy, x  n  (IN)
 */
static void bp_backward_from_input(float *dx, const float *dy,
                                   const float *x, int64_t n,
                                   bp_activation act, float param)
{
    float s, sm;

    switch (act) {
    case BP_ACTIVATION_ELU:
        for (int64_t i = 0; i < n; i++) {
            float neg = x[i] > 0.0f ? 0.0f : x[i];

            dx[i] = dy[i] * (x[i] > 0.0f ? 1.0f : param * bp_exp_neg(neg));
        }
        break;
    case BP_ACTIVATION_GELU:
        /* Phi(x) + x phi(x). */
        for (int64_t i = 0; i < n; i++) {
            float xi = x[i];
            float pdf = BP_INV_SQRT_2PI * bp_exp_neg(-0.5f * xi * xi);

            dx[i] = dy[i] * (0.5f * erfcf(-xi * BP_SQRT1_2) + xi * pdf);
        }
        break;
    case BP_ACTIVATION_GELU_TANH:
        /* s + x s (1 - s) d(2u)/dx with s = sigmoid(2u). */
        for (int64_t i = 0; i < n; i++) {
            float xi = x[i];
            float c = fminf(fmaxf(xi, -BP_GELU_TANH_CLAMP),
                            BP_GELU_TANH_CLAMP);
            float du = 2.0f * BP_GELU_C * (1.0f + 3.0f * BP_GELU_K * c * c);

            bp_sigmoid_pair(bp_gelu_tanh_arg(xi), &s, &sm);
            dx[i] = dy[i] * (s + xi * s * sm * du);
        }
        break;
    case BP_ACTIVATION_SILU:
        /* s + x s (1 - s) with s = sigmoid(x). */
        for (int64_t i = 0; i < n; i++) {
            bp_sigmoid_pair(x[i], &s, &sm);
            dx[i] = dy[i] * (s + x[i] * s * sm);
        }
        break;
    case BP_ACTIVATION_SOFTPLUS:
        for (int64_t i = 0; i < n; i++)
            dx[i] = dy[i] * bp_sigmoid(x[i]);
        break;
    default:
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
    case BP_ACTIVATION_LEAKY_RELU:
        return "leaky_relu";
    case BP_ACTIVATION_ELU:
        return "elu";
    case BP_ACTIVATION_GELU:
        return "gelu";
    case BP_ACTIVATION_GELU_TANH:
        return "gelu_tanh";
    case BP_ACTIVATION_SILU:
        return "silu";
    case BP_ACTIVATION_SOFTPLUS:
        return "softplus";
    case BP_ACTIVATION_LOG_SOFTMAX:
        return "log_softmax";
    }
    return NULL;
}

bp_status bp_activation_check(const char *fn, bp_activation act, float param,
                              float *resolved)
{
    if (bp_activation_name(act) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'act' is %d, which is not a "
                       "bp_activation", fn, (int)act);

    float value = bp_activation_param(act, param);
    if (isnan(value))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the %s of %s is %g; it must be finite and "
                       ">= 0 (0 selects the default)", fn,
                       act == BP_ACTIVATION_ELU ? "alpha" : "slope",
                       bp_activation_name(act), (double)param);
    *resolved = value;
    return BP_STATUS_OK;
}

/* The buffers of one activation call, shared by its threads. */
typedef struct bp_activation_args {
    float *out;       /* y forward, dx backward: rows x cols */
    const float *in;  /* x forward, dy backward: rows x cols */
    const float *y;   /* backward only: the forward output */
    const float *x;   /* backward only: the forward input, or NULL */
    bp_activation act;
    float param;
    int64_t cols;
} bp_activation_args;

static void bp_forward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_activation_args *a = ctx;
    int64_t cols = a->cols;

    for (int64_t i = begin; i < end; i++) {
        float *yi = a->out + i * cols;
        const float *xi = a->in + i * cols;

        if (bp_activation_per_row(a->act)) {
            if (cols > 0)
                bp_softmax_row(yi, xi, cols,
                               a->act == BP_ACTIVATION_LOG_SOFTMAX);
            continue;
        }
        if (yi != xi)
            memcpy(yi, xi, (size_t)cols * sizeof(float));
        bp_activation_apply(yi, cols, a->act, a->param);
    }
}

static void bp_backward_rows(void *ctx, int64_t begin, int64_t end)
{
    const bp_activation_args *a = ctx;
    int64_t cols = a->cols;

    if (bp_activation_per_row(a->act)) {
        for (int64_t i = begin; i < end; i++) {
            int64_t at = i * cols;

            bp_softmax_backward_row(a->out + at, a->in + at, a->y + at, cols,
                                    a->act == BP_ACTIVATION_LOG_SOFTMAX);
        }
        return;
    }

    /* Element-wise: the rows are one contiguous run, taken in one loop. */
    int64_t at = begin * cols, n = (end - begin) * cols;

    if (bp_activation_needs_input(a->act))
        bp_backward_from_input(a->out + at, a->in + at, a->x + at, n, a->act,
                               a->param);
    else
        bp_backward_from_output(a->out + at, a->in + at, a->y + at, n,
                                a->act, a->param);
}

/* The forward kernel; `fn` names the public entry point in messages. */
static bp_status bp_forward(const char *fn, float *y, const float *x,
                            bp_activation act, float param, int64_t rows,
                            int64_t cols)
{
    float value = 0.0f;

    BP_TRY(bp_activation_check(fn, act, param, &value));
    BP_TRY(bp_check_shape(fn, "rows", rows, "cols", cols));
    BP_REQUIRE_DATA(fn, y, rows * cols);
    BP_REQUIRE_DATA(fn, x, rows * cols);

    bp_activation_args args = {.out = y, .in = x, .act = act,
                               .param = value, .cols = cols};
    int threads = bp_threads_for((double)rows * cols * BP_ACTIVATION_COST);

    bp_parallel_for(threads, rows, bp_forward_rows, &args);
    return BP_STATUS_OK;
}

bp_status bp_activation_forward_ex(float *y, const float *x,
                                   bp_activation act, float param,
                                   int64_t rows, int64_t cols)
{
    return bp_forward("bp_activation_forward_ex", y, x, act, param, rows,
                      cols);
}

bp_status bp_activation_forward(float *y, const float *x, bp_activation act,
                                int64_t rows, int64_t cols)
{
    return bp_forward("bp_activation_forward", y, x, act, 0.0f, rows, cols);
}

/* The backward kernel; `fn` names the public entry point in messages. */
static bp_status bp_backward(const char *fn, float *dx, const float *dy,
                             const float *y, const float *x,
                             bp_activation act, float param, int64_t rows,
                             int64_t cols)
{
    float value = 0.0f;

    BP_TRY(bp_activation_check(fn, act, param, &value));
    BP_TRY(bp_check_shape(fn, "rows", rows, "cols", cols));
    BP_REQUIRE_DATA(fn, dx, rows * cols);
    BP_REQUIRE_DATA(fn, dy, rows * cols);
    BP_REQUIRE_DATA(fn, y, rows * cols);
    if (bp_activation_needs_input(act) && rows * cols > 0 && x == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'x' is NULL; the derivative of %s "
                       "needs the activation's input", fn,
                       bp_activation_name(act));

    bp_activation_args args = {.out = dx, .in = dy, .y = y, .x = x,
                               .act = act, .param = value, .cols = cols};
    double cost = bp_activation_needs_input(act) ? BP_ACTIVATION_COST : 4.0;
    int threads = bp_threads_for((double)rows * cols * cost);

    bp_parallel_for(threads, rows, bp_backward_rows, &args);
    return BP_STATUS_OK;
}

bp_status bp_activation_backward_ex(float *dx, const float *dy,
                                    const float *y, const float *x,
                                    bp_activation act, float param,
                                    int64_t rows, int64_t cols)
{
    return bp_backward("bp_activation_backward_ex", dx, dy, y, x, act, param,
                       rows, cols);
}

bp_status bp_activation_backward(float *dx, const float *dy, const float *y,
                                 bp_activation act, int64_t rows,
                                 int64_t cols)
{
    if (bp_activation_needs_input(act))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "bp_activation_backward: the derivative of %s needs "
                       "the activation's input; use "
                       "bp_activation_backward_ex", bp_activation_name(act));
    return bp_backward("bp_activation_backward", dx, dy, y, NULL, act, 0.0f,
                       rows, cols);
}
