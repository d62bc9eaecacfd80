/*
 * The activation, loss, optimizer and dense-layer kernels against
 * double-precision references, at every SIMD level this CPU supports:
 * odd shapes, extreme inputs, backward passes against analytic
 * derivatives and central finite differences, overwrite and aliasing
 * rules, bitwise equality across thread counts, and the errors reported
 * for invalid arguments.
 *
 * Differences are measured relative to the scale of what the kernel
 * rounds (the sum of the magnitudes of the terms), as in test_gemm.c.
 *
 * Uses the public API only. Exits 0 when every check passes.
 */
#include "bprop.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Added to every scale, so that an exact zero compares as zero. */
#define TINY 1e-30

static int failures = 0;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void check(int ok, const char *what, ...)
{
    va_list args;

    if (ok)
        return;
    va_start(args, what);
    printf("FAIL: ");
    vprintf(what, args);
    printf("\n");
    va_end(args);
    failures++;
}

/* A fixed-seed generator, so every run tests the same values. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

/* n floats, plus one guard, drawn from [-scale, scale). */
static float *random_floats(int64_t n, float scale)
{
    float *x = malloc((size_t)(n + 1) * sizeof(float));

    for (int64_t i = 0; i <= n; i++)
        x[i] = scale * uniform();
    return x;
}

/* A class index drawn from [0, classes). */
static int32_t random_label(int64_t classes)
{
    uniform();
    return (int32_t)((rng_state >> 33) % (uint64_t)classes);
}

/* n NaNs, for outputs that must be written and never read. */
static float *nan_floats(int64_t n)
{
    float *x = malloc((size_t)(n + 1) * sizeof(float));

    for (int64_t i = 0; i <= n; i++)
        x[i] = NAN;
    return x;
}

static float *copy_floats(const float *x, int64_t n)
{
    float *y = malloc((size_t)(n + 1) * sizeof(float));

    memcpy(y, x, (size_t)(n + 1) * sizeof(float));
    return y;
}

static double *to_double(const float *x, int64_t n)
{
    double *y = malloc((size_t)(n + 1) * sizeof(double));

    for (int64_t i = 0; i < n; i++)
        y[i] = x[i];
    return y;
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static int all_finite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* |got - ref| / scale, with NaN counted as the largest difference. */
static double difference(double got, double ref, double scale)
{
    double d = fabs(got - ref) / scale;

    return isnan(d) ? INFINITY : d;
}

/* The largest difference seen by one group of checks. */
typedef struct tally {
    int cases;
    double worst;
} tally;

static void tally_add(tally *t, double err)
{
    if (!(err <= t->worst))
        t->worst = err;
}

/* Prints a group's largest difference and fails it above `tol`. */
static void report(bp_simd level, const char *what, const tally *t,
                   double tol)
{
    printf("%-8s %-44s %3d cases  largest difference %.3g\n",
           bp_simd_name(level), what, t->cases, t->worst);
    check(t->worst <= tol, "%s %s: largest difference %.3g exceeds %.3g",
          bp_simd_name(level), what, t->worst, tol);
}

/* One invalid call: the status, and a message naming fn and `name`. */
static void expect_invalid(bp_status st, const char *fn, const char *name)
{
    char quoted[48];

    snprintf(quoted, sizeof quoted, "'%s'", name);
    check(st == BP_STATUS_INVALID_ARGUMENT,
          "%s with invalid '%s' gives status %d, not invalid argument", fn,
          name, (int)st);
    check(strstr(bp_last_error(), fn) != NULL
              && strstr(bp_last_error(), quoted) != NULL,
          "%s: message does not name it and '%s': \"%s\"", fn,
          name, bp_last_error());
}

/* ---------------------------------------------------------------------
 * References in double
 * ------------------------------------------------------------------- */

static const bp_activation activations[] = {
    BP_ACTIVATION_IDENTITY, BP_ACTIVATION_RELU, BP_ACTIVATION_SIGMOID,
    BP_ACTIVATION_TANH, BP_ACTIVATION_SOFTMAX,
};
#define N_ACTIVATIONS (int)(sizeof activations / sizeof activations[0])

/*
 * y = act(x) for one row in double.
 *   y  O  (OUT; may alias x)      x  O  (IN)
 */
static void ref_forward_row(double *y, const double *x, bp_activation act,
                            int64_t cols)
{
    if (act == BP_ACTIVATION_SOFTMAX) {
        double max = x[0], sum = 0.0;

        for (int64_t j = 1; j < cols; j++)
            max = x[j] > max ? x[j] : max;
        for (int64_t j = 0; j < cols; j++) {
            y[j] = exp(x[j] - max);
            sum += y[j];
        }
        for (int64_t j = 0; j < cols; j++)
            y[j] /= sum;
        return;
    }

    for (int64_t j = 0; j < cols; j++) {
        double v = x[j];

        switch (act) {
        case BP_ACTIVATION_RELU:
            v = v > 0.0 ? v : 0.0;
            break;
        case BP_ACTIVATION_SIGMOID:
            v = v >= 0.0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v));
            break;
        case BP_ACTIVATION_TANH:
            v = tanh(v);
            break;
        default:
            break;
        }
        y[j] = v;
    }
}

/*
 * dz = dy * act'(y) for one row in double, from the float forward
 * output, and the scale of each value: the magnitudes of the terms the
 * kernel rounds.
 *   dz, scale  O  (OUT)      dy, y  O  (IN)
 */
static void ref_backward_row(double *dz, double *scale, const float *dy,
                             const float *y, bp_activation act,
                             int64_t cols)
{
    double dot = 0.0, dot_abs = 0.0;

    for (int64_t j = 0; j < cols; j++) {
        dot += (double)dy[j] * y[j];
        dot_abs += fabs((double)dy[j] * y[j]);
    }

    for (int64_t j = 0; j < cols; j++) {
        double g = dy[j], v = y[j];

        switch (act) {
        case BP_ACTIVATION_IDENTITY:
            dz[j] = g;
            scale[j] = fabs(g);
            break;
        case BP_ACTIVATION_RELU:
            dz[j] = v > 0.0 ? g : 0.0;
            scale[j] = fabs(dz[j]);
            break;
        case BP_ACTIVATION_SIGMOID:
            dz[j] = g * v * (1.0 - v);
            scale[j] = fabs(g) * v;
            break;
        case BP_ACTIVATION_TANH:
            dz[j] = g * (1.0 - v * v);
            scale[j] = fabs(g) * (1.0 + v * v);
            break;
        case BP_ACTIVATION_SOFTMAX:
            dz[j] = v * (g - dot);
            scale[j] = v * (fabs(g) + dot_abs);
            break;
        default:
            /* The others are tested in test_toolkit.c. */
            dz[j] = NAN;
            scale[j] = NAN;
            break;
        }
    }
}

/* ---------------------------------------------------------------------
 * Activations
 * ------------------------------------------------------------------- */

static const int64_t activation_shapes[][2] = {
    {1, 1}, {7, 13}, {33, 65}, {3, 1}, {2, 129},
};
#define N_ACTIVATION_SHAPES \
    (int)(sizeof activation_shapes / sizeof activation_shapes[0])

/* Inputs at which overflow or underflow would show. */
static const float activation_extremes[] = {
    100.0f, -100.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX,
};

/* n inputs in [-3, 3); with `extreme`, every other one is extreme. */
static float *activation_input(int64_t n, int extreme)
{
    float *x = random_floats(n, 3.0f);

    if (extreme)
        for (int64_t i = 0; i < n; i += 2)
            x[i] = activation_extremes[(i / 2) % 6];
    return x;
}

static void activation_forward_case(bp_simd level, bp_activation act,
                                    int64_t rows, int64_t cols,
                                    int extreme, tally *t)
{
    const char *name = bp_activation_name(act);
    int64_t n = rows * cols;
    float *x = activation_input(n, extreme);
    float *y = nan_floats(n);
    double *xd = to_double(x, n);
    double *ref = malloc((size_t)cols * sizeof(double));

    check(bp_activation_forward(y, x, act, rows, cols) == BP_STATUS_OK,
          "%s forward: %s", name, bp_last_error());
    check(all_finite(y, n), "%s %s forward %lldx%lld%s: not finite",
          bp_simd_name(level), name, (long long)rows, (long long)cols,
          extreme ? " extreme" : "");

    for (int64_t i = 0; i < rows; i++) {
        const float *yi = y + i * cols;
        double sum = 0.0;

        ref_forward_row(ref, xd + i * cols, act, cols);
        for (int64_t j = 0; j < cols; j++) {
            tally_add(t, difference(yi[j], ref[j], fabs(ref[j]) + TINY));
            sum += yi[j];
        }
        if (act == BP_ACTIVATION_SOFTMAX)
            check(fabs(sum - 1.0) <= 1e-5,
                  "%s softmax %lldx%lld%s: row %lld sums to %.9g",
                  bp_simd_name(level), (long long)rows, (long long)cols,
                  extreme ? " extreme" : "", (long long)i, sum);
    }

    /* Outputs stay in the activation's range even at the extremes. */
    for (int64_t i = 0; i < n; i++) {
        float lo = act == BP_ACTIVATION_TANH ? -1.0f : 0.0f;

        if (act == BP_ACTIVATION_SIGMOID || act == BP_ACTIVATION_TANH
            || act == BP_ACTIVATION_SOFTMAX)
            check(y[i] >= lo && y[i] <= 1.0f,
                  "%s %s: y[%lld] = %g for x = %g is out of range",
                  bp_simd_name(level), name, (long long)i, y[i], x[i]);
    }

    /* In place, y aliasing x, gives the same bits. */
    float *inplace = copy_floats(x, n);
    bp_activation_forward(inplace, inplace, act, rows, cols);
    check(same_bits(inplace, y, n), "%s %s forward in place differs",
          bp_simd_name(level), name);

    t->cases++;
    free(x);
    free(y);
    free(xd);
    free(ref);
    free(inplace);
}

/*
 * Backward against the derivative written in y (tally `exact`) and,
 * away from the extremes, against central differences of the double
 * forward in x (tally `fd`).
 */
static void activation_backward_case(bp_simd level, bp_activation act,
                                     int64_t rows, int64_t cols,
                                     int extreme, tally *exact, tally *fd)
{
    const char *name = bp_activation_name(act);
    int64_t n = rows * cols;
    float *x = activation_input(n, extreme);
    float *y = nan_floats(n);
    float *dy = random_floats(n, 1.0f);
    float *dx = nan_floats(n);
    double *ref = malloc((size_t)cols * sizeof(double));
    double *scale = malloc((size_t)cols * sizeof(double));
    double *row = malloc((size_t)cols * sizeof(double));
    double *out = malloc((size_t)cols * sizeof(double));

    bp_activation_forward(y, x, act, rows, cols);
    check(bp_activation_backward(dx, dy, y, act, rows, cols)
              == BP_STATUS_OK, "%s backward: %s", name, bp_last_error());
    check(all_finite(dx, n), "%s %s backward %lldx%lld%s: not finite",
          bp_simd_name(level), name, (long long)rows, (long long)cols,
          extreme ? " extreme" : "");

    for (int64_t i = 0; i < rows; i++) {
        const float *dxi = dx + i * cols;

        ref_backward_row(ref, scale, dy + i * cols, y + i * cols, act,
                         cols);
        for (int64_t j = 0; j < cols; j++)
            tally_add(exact, difference(dxi[j], ref[j], scale[j] + TINY));
        if (extreme)
            continue;

        /* d/dx_j of sum(dy * act(x)) over the row. */
        for (int64_t j = 0; j < cols; j++) {
            const double h = 1e-4;
            double lp = 0.0, lm = 0.0;

            if (act == BP_ACTIVATION_RELU && fabs(x[i * cols + j]) < 2 * h)
                continue;
            for (int64_t k = 0; k < cols; k++)
                row[k] = x[i * cols + k];
            row[j] += h;
            ref_forward_row(out, row, act, cols);
            for (int64_t k = 0; k < cols; k++)
                lp += dy[i * cols + k] * out[k];
            row[j] -= 2 * h;
            ref_forward_row(out, row, act, cols);
            for (int64_t k = 0; k < cols; k++)
                lm += dy[i * cols + k] * out[k];
            tally_add(fd, difference(dxi[j], (lp - lm) / (2 * h),
                                     scale[j] + TINY));
        }
    }

    /* In place, dx aliasing dy, gives the same bits. */
    float *inplace = copy_floats(dy, n);
    bp_activation_backward(inplace, inplace, y, act, rows, cols);
    check(same_bits(inplace, dx, n), "%s %s backward in place differs",
          bp_simd_name(level), name);

    exact->cases++;
    fd->cases += !extreme;
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(ref);
    free(scale);
    free(row);
    free(out);
    free(inplace);
}

static void test_activations(bp_simd level)
{
    for (int a = 0; a < N_ACTIVATIONS; a++) {
        bp_activation act = activations[a];
        tally fwd = {0, 0.0}, bwd = {0, 0.0}, fd = {0, 0.0};
        char what[64];

        for (int s = 0; s < N_ACTIVATION_SHAPES; s++) {
            for (int extreme = 0; extreme < 2; extreme++) {
                int64_t rows = activation_shapes[s][0];
                int64_t cols = activation_shapes[s][1];

                activation_forward_case(level, act, rows, cols, extreme,
                                        &fwd);
                activation_backward_case(level, act, rows, cols, extreme,
                                         &bwd, &fd);
            }
        }
        snprintf(what, sizeof what, "%s forward", bp_activation_name(act));
        report(level, what, &fwd, 2e-6);
        snprintf(what, sizeof what, "%s backward", bp_activation_name(act));
        report(level, what, &bwd, 2e-6);
        snprintf(what, sizeof what, "%s backward vs differences",
                 bp_activation_name(act));
        report(level, what, &fd, 1e-5);
    }
}

/* ---------------------------------------------------------------------
 * Losses
 * ------------------------------------------------------------------- */

/* Logits at which exp overflows or log(0) appears if done naively. */
static const float loss_extremes[] = {
    1e4f, -1e4f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX,
};

/*
 * One row's summed loss in double.
 *   z  O logits or predictions      t  O targets (mse, binary CE)
 *   label  the class (cross-entropy)
 */
static double ref_loss_row(bp_loss loss, const double *z, const float *t,
                           int32_t label, int64_t cols)
{
    double sum = 0.0, max = z[0];

    switch (loss) {
    case BP_LOSS_MSE:
        for (int64_t j = 0; j < cols; j++)
            sum += (z[j] - t[j]) * (z[j] - t[j]);
        return sum;
    case BP_LOSS_CROSS_ENTROPY:
        for (int64_t j = 1; j < cols; j++)
            max = z[j] > max ? z[j] : max;
        for (int64_t j = 0; j < cols; j++)
            sum += exp(z[j] - max);
        return (max - z[label]) + log(sum);
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        for (int64_t j = 0; j < cols; j++)
            sum += (z[j] > 0.0 ? z[j] : 0.0) - z[j] * t[j]
                   + log1p(exp(-fabs(z[j])));
        return sum;
    default:
        /* The others are tested in test_toolkit.c. */
        return NAN;
    }
}

/*
 * One row's gradient in double before dividing by the count, and the
 * scale of each value.
 *   g, scale  O  (OUT)
 */
static void ref_loss_grad_row(double *g, double *scale, bp_loss loss,
                              const double *z, const float *t,
                              int32_t label, int64_t cols)
{
    if (loss == BP_LOSS_CROSS_ENTROPY) {
        ref_forward_row(g, z, BP_ACTIVATION_SOFTMAX, cols);
        for (int64_t j = 0; j < cols; j++) {
            scale[j] = g[j] + (j == label);
            g[j] -= j == label;
        }
        return;
    }

    for (int64_t j = 0; j < cols; j++) {
        if (loss == BP_LOSS_MSE) {
            g[j] = 2.0 * (z[j] - t[j]);
            scale[j] = 2.0 * (fabs(z[j]) + fabs(t[j]));
        } else {
            double s;

            ref_forward_row(&s, &z[j], BP_ACTIVATION_SIGMOID, 1);
            g[j] = s - t[j];
            scale[j] = s + t[j];
        }
    }
}

static bp_status call_loss(bp_loss loss, double *value, float *grad,
                           const float *z, const float *t,
                           const int32_t *labels, int64_t rows,
                           int64_t cols)
{
    switch (loss) {
    case BP_LOSS_MSE:
        return bp_loss_mse(value, grad, z, t, rows, cols);
    case BP_LOSS_CROSS_ENTROPY:
        return bp_loss_cross_entropy(value, grad, z, labels, rows, cols);
    case BP_LOSS_BINARY_CROSS_ENTROPY:
        return bp_loss_binary_cross_entropy(value, grad, z, t, rows, cols);
    default:
        return BP_STATUS_INTERNAL;
    }
}

/* The tallies of one loss at one level. */
typedef struct loss_tallies {
    tally value, grad, fd;
} loss_tallies;

/*
 * One loss on rows x cols: the value, the gradient against the analytic
 * one and, away from the extremes, against central differences; then
 * each output alone, the other skipped with NULL.
 */
static void loss_case(bp_simd level, bp_loss loss, int64_t rows,
                      int64_t cols, int extreme, loss_tallies *t)
{
    const char *name = bp_loss_name(loss);
    int64_t n = rows * cols;
    float *z = random_floats(n, 3.0f);
    float *target = random_floats(n, 1.0f);
    float *grad = nan_floats(n);
    int32_t *labels = malloc((size_t)(rows + 1) * sizeof(int32_t));
    double *zd = to_double(z, n);
    double *g = malloc((size_t)cols * sizeof(double));
    double *scale = malloc((size_t)cols * sizeof(double));
    double *row = malloc((size_t)cols * sizeof(double));
    double count = loss == BP_LOSS_CROSS_ENTROPY ? rows : (double)n;
    double value = NAN, ref = 0.0;

    /* Binary targets in [0, 1], a quarter of them exactly 0 or 1. */
    for (int64_t i = 0; i < n; i++) {
        if (loss == BP_LOSS_BINARY_CROSS_ENTROPY)
            target[i] = i % 4 == 0 ? (float)(i % 8 == 0)
                                   : 0.5f + 0.5f * target[i];
        if (extreme && i % 2 == 0) {
            z[i] = loss_extremes[(i / 2) % 6];
            zd[i] = z[i];
        }
    }
    for (int64_t i = 0; i < rows; i++)
        labels[i] = random_label(cols);

    check(call_loss(loss, &value, grad, z, target, labels, rows, cols)
              == BP_STATUS_OK, "%s: %s", name, bp_last_error());
    check(isfinite(value) && all_finite(grad, n),
          "%s %s %lldx%lld%s: loss %g or gradient not finite",
          bp_simd_name(level), name, (long long)rows, (long long)cols,
          extreme ? " extreme" : "", value);

    for (int64_t i = 0; i < rows; i++) {
        const double *zi = zd + i * cols;
        const float *ti = target + i * cols;
        const float *gi = grad + i * cols;

        ref += ref_loss_row(loss, zi, ti, labels[i], cols);
        ref_loss_grad_row(g, scale, loss, zi, ti, labels[i], cols);
        for (int64_t j = 0; j < cols; j++)
            tally_add(&t->grad, difference(gi[j], g[j] / count,
                                           scale[j] / count + TINY));
        if (extreme)
            continue;

        /* Central differences of the row's loss; the rest is constant. */
        for (int64_t j = 0; j < cols; j++) {
            const double h = 1e-4;
            double lp, lm;

            memcpy(row, zi, (size_t)cols * sizeof(double));
            row[j] = zi[j] + h;
            lp = ref_loss_row(loss, row, ti, labels[i], cols);
            row[j] = zi[j] - h;
            lm = ref_loss_row(loss, row, ti, labels[i], cols);
            tally_add(&t->fd, difference(gi[j], (lp - lm) / (2 * h) / count,
                                         scale[j] / count + TINY));
        }
    }
    ref /= count;
    tally_add(&t->value, difference(value, ref, fabs(ref) + TINY));

    /* Either output may be skipped; the other keeps its bits. */
    float *grad_only = nan_floats(n);
    double value_only = NAN;
    check(call_loss(loss, NULL, grad_only, z, target, labels, rows, cols)
              == BP_STATUS_OK && same_bits(grad_only, grad, n),
          "%s with loss NULL: gradient differs", name);
    check(call_loss(loss, &value_only, NULL, z, target, labels, rows, cols)
              == BP_STATUS_OK && memcmp(&value_only, &value,
                                        sizeof value) == 0,
          "%s with grad NULL: loss differs", name);

    t->value.cases++;
    t->grad.cases++;
    t->fd.cases += !extreme;
    free(z);
    free(target);
    free(grad);
    free(grad_only);
    free(labels);
    free(zd);
    free(g);
    free(scale);
    free(row);
}

/* Out-of-range labels fail and the message names the bad row. */
static void test_bad_labels(void)
{
    static const char fn[] = "bp_loss_cross_entropy";
    float z[7 * 13], grad[7 * 13];
    int32_t labels[7] = {0, 1, 2, 3, 4, 5, 6};
    double value = 0.0;

    for (int i = 0; i < 7 * 13; i++)
        z[i] = uniform();

    labels[5] = 13;
    check(bp_loss_cross_entropy(&value, grad, z, labels, 7, 13)
              == BP_STATUS_INVALID_ARGUMENT, "label 13 of 13 is invalid");
    check(strstr(bp_last_error(), "labels[5]") != NULL
              && strstr(bp_last_error(), "13") != NULL,
          "message for label 13 in row 5 names both: \"%s\"",
          bp_last_error());

    labels[5] = 5;
    labels[2] = -1;
    check(bp_loss_cross_entropy(&value, NULL, z, labels, 7, 13)
              == BP_STATUS_INVALID_ARGUMENT, "label -1 is invalid");
    check(strstr(bp_last_error(), "labels[2]") != NULL
              && strstr(bp_last_error(), "-1") != NULL
              && strstr(bp_last_error(), fn) != NULL,
          "message for label -1 in row 2 names it: \"%s\"",
          bp_last_error());

    /* With no classes, no label is valid. */
    labels[2] = 0;
    check(bp_loss_cross_entropy(&value, NULL, NULL, labels, 7, 0)
              == BP_STATUS_INVALID_ARGUMENT, "a label with 0 classes");
}

static void test_losses(bp_simd level)
{
    static const int64_t shapes[][2] = {
        {1, 1}, {7, 13}, {33, 65}, {5, 2}, {2, 129},
    };
    static const bp_loss losses[] = {
        BP_LOSS_MSE, BP_LOSS_CROSS_ENTROPY, BP_LOSS_BINARY_CROSS_ENTROPY,
    };

    for (int l = 0; l < 3; l++) {
        loss_tallies t = {{0, 0.0}, {0, 0.0}, {0, 0.0}};
        const char *name = bp_loss_name(losses[l]);
        char what[64];

        /* Large predictions are mse's own overflow, not a defect. */
        for (int s = 0; s < 5; s++)
            for (int extreme = 0; extreme < 2; extreme++)
                if (!extreme || losses[l] != BP_LOSS_MSE)
                    loss_case(level, losses[l], shapes[s][0], shapes[s][1],
                              extreme, &t);

        /* Cross-entropy's exponentials are float (within 2 ulp); the
           sums and logarithms are double. */
        snprintf(what, sizeof what, "%s value", name);
        report(level, what, &t.value,
               losses[l] == BP_LOSS_CROSS_ENTROPY ? 1e-7 : 1e-10);
        snprintf(what, sizeof what, "%s gradient", name);
        report(level, what, &t.grad, 1e-6);
        snprintf(what, sizeof what, "%s gradient vs differences", name);
        report(level, what, &t.fd, 1e-6);
    }

    /* An empty batch has loss 0. */
    double value = NAN;
    check(bp_loss_cross_entropy(&value, NULL, NULL, NULL, 0, 5)
              == BP_STATUS_OK && value == 0.0, "empty batch: loss 0");
    value = NAN;
    check(bp_loss_mse(&value, NULL, NULL, NULL, 3, 0) == BP_STATUS_OK
              && value == 0.0, "mse with 0 columns: loss 0");
}

/* ---------------------------------------------------------------------
 * SGD
 * ------------------------------------------------------------------- */

/* One step of the formula in bprop.h, in double. */
static void ref_sgd(double *w, double *v, const float *grad,
                    const bp_sgd_config *cfg, double l2, int64_t n)
{
    double lr = cfg->lr, mu = cfg->momentum;

    for (int64_t i = 0; i < n; i++) {
        double g = grad[i] + l2 * w[i];

        if (mu == 0.0) {
            w[i] -= lr * g;
            continue;
        }
        v[i] = mu * v[i] + g;
        w[i] -= lr * (cfg->nesterov ? g + mu * v[i] : v[i]);
    }
}

static void test_sgd(bp_simd level)
{
    /* The last field is the l2 argument, which overrides cfg->l2. */
    static const struct {
        bp_sgd_config cfg;
        float l2;
    } cases[] = {
        {{0.1f, 0.0f, 0, 0.0f}, 0.0f},
        {{0.1f, 0.9f, 0, 0.0f}, 0.0f},
        {{0.05f, 0.9f, 1, 0.0f}, 0.0f},
        {{0.1f, 0.0f, 0, 0.3f}, 0.05f},
        {{0.2f, 0.5f, 0, 0.0f}, 0.1f},
        {{0.1f, 0.5f, 1, 0.5f}, 0.01f},
    };
    static const int64_t sizes[] = {1, 37, 1001};
    tally tw = {0, 0.0}, tv = {0, 0.0};

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bp_sgd_config *cfg = &cases[c].cfg;
        int momentum = cfg->momentum > 0.0f;

        for (int s = 0; s < 3; s++) {
            int64_t n = sizes[s];
            float *w = random_floats(n, 1.0f);
            float *v = random_floats(n, 0.5f);
            double *wd = to_double(w, n), *vd = to_double(v, n);

            /* A few steps, each with a new gradient. */
            for (int step = 0; step < 5; step++) {
                float *grad = random_floats(n, 1.0f);

                check(bp_sgd_update(w, momentum ? v : NULL, grad, cfg,
                                    cases[c].l2, n) == BP_STATUS_OK,
                      "sgd case %zu: %s", c, bp_last_error());
                ref_sgd(wd, vd, grad, cfg, cases[c].l2, n);
                free(grad);
            }
            for (int64_t i = 0; i < n; i++) {
                tally_add(&tw, difference(w[i], wd[i], 1.0 + fabs(wd[i])));
                if (momentum)
                    tally_add(&tv,
                              difference(v[i], vd[i], 1.0 + fabs(vd[i])));
            }
            tw.cases++;
            tv.cases += momentum;
            free(w);
            free(v);
            free(wd);
            free(vd);
        }
    }
    report(level, "sgd weights after 5 steps", &tw, 2e-6);
    report(level, "sgd velocity after 5 steps", &tv, 2e-6);
}

/* Invalid configurations fail, name the field and leave w alone. */
static void test_sgd_invalid(void)
{
    static const char fn[] = "bp_sgd_update";
    static const struct {
        bp_sgd_config cfg;
        float l2;
        const char *field;
    } cases[] = {
        {{0.0f, 0.0f, 0, 0.0f}, 0.0f, "lr"},
        {{-0.1f, 0.0f, 0, 0.0f}, 0.0f, "lr"},
        {{NAN, 0.0f, 0, 0.0f}, 0.0f, "lr"},
        {{INFINITY, 0.0f, 0, 0.0f}, 0.0f, "lr"},
        {{0.1f, 1.0f, 0, 0.0f}, 0.0f, "momentum"},
        {{0.1f, -0.1f, 0, 0.0f}, 0.0f, "momentum"},
        {{0.1f, NAN, 0, 0.0f}, 0.0f, "momentum"},
        {{0.1f, 0.0f, 1, 0.0f}, 0.0f, "nesterov"},
        {{0.1f, 0.0f, 0, -1.0f}, 0.0f, "l2"},
        {{0.1f, 0.0f, 0, NAN}, 0.0f, "l2"},
        {{0.1f, 0.9f, 0, 0.0f}, -0.5f, "l2"},
        {{0.1f, 0.9f, 0, 0.0f}, NAN, "l2"},
    };
    float w[5] = {1, 2, 3, 4, 5}, v[5] = {0}, grad[5] = {1, 1, 1, 1, 1};
    float w0[5];

    memcpy(w0, w, sizeof w);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bp_status st = bp_sgd_update(w, v, grad, &cases[c].cfg,
                                     cases[c].l2, 5);

        check(st == BP_STATUS_INVALID_ARGUMENT,
              "sgd invalid case %zu (%s) gives status %d", c,
              cases[c].field, (int)st);
        check(strstr(bp_last_error(), fn) != NULL
                  && strstr(bp_last_error(), cases[c].field) != NULL,
              "sgd invalid case %zu: message does not name '%s': \"%s\"",
              c, cases[c].field, bp_last_error());
        check(same_bits(w, w0, 5), "sgd invalid case %zu changed w", c);
    }
    expect_invalid(bp_sgd_update(w, v, grad, NULL, 0.0f, 5), fn, "cfg");
}

/* ---------------------------------------------------------------------
 * Dense layer
 * ------------------------------------------------------------------- */

/*
 * y = act(x @ w + b) in double, and the scale of each output: the
 * magnitudes summed into its pre-activation (for softmax, the largest
 * in its row, since every output depends on the whole row).
 *   y      B x O  (OUT)      scale  B x O  (OUT; NULL to skip)
 *   x B x I, w I x O, b O or NULL  (IN)
 */
static void ref_dense_forward(double *y, double *scale, const double *x,
                              const double *w, const double *b,
                              bp_activation act, int64_t batch,
                              int64_t n_in, int64_t n_out)
{
    for (int64_t i = 0; i < batch; i++) {
        double *yi = y + i * n_out;
        double row_max = 0.0;

        for (int64_t j = 0; j < n_out; j++) {
            double z = b != NULL ? b[j] : 0.0, s = fabs(z);

            for (int64_t p = 0; p < n_in; p++) {
                double term = x[i * n_in + p] * w[p * n_out + j];

                z += term;
                s += fabs(term);
            }
            yi[j] = z;
            row_max = s > row_max ? s : row_max;
            if (scale != NULL)
                scale[i * n_out + j] = s;
        }
        ref_forward_row(yi, yi, act, n_out);
        if (scale != NULL && act == BP_ACTIVATION_SOFTMAX)
            for (int64_t j = 0; j < n_out; j++)
                scale[i * n_out + j] = row_max;
    }
}

/* The tallies of one activation's dense layer at one level. */
typedef struct dense_tallies {
    tally y, dz, dw, db, dx;
} dense_tallies;

/* The buffers of one dense case, filled by dense_case_alloc. */
typedef struct dense_case {
    int64_t batch, n_in, n_out;
    bp_activation act;
    float *x, *w, *b, *y, *dy;
    float *dx, *dw, *db, *dz;
} dense_case;

static void dense_case_alloc(dense_case *d, bp_activation act,
                             int64_t batch, int64_t n_in, int64_t n_out,
                             int with_bias)
{
    d->batch = batch;
    d->n_in = n_in;
    d->n_out = n_out;
    d->act = act;
    d->x = random_floats(batch * n_in, 1.0f);
    d->w = random_floats(n_in * n_out, 1.0f / sqrtf((float)n_in + 1));
    d->b = with_bias ? random_floats(n_out, 0.5f) : NULL;
    d->y = nan_floats(batch * n_out);
    d->dy = random_floats(batch * n_out, 1.0f);
    d->dx = nan_floats(batch * n_in);
    d->dw = nan_floats(n_in * n_out);
    d->db = nan_floats(n_out);
    d->dz = nan_floats(batch * n_out);
}

static void dense_case_free(dense_case *d)
{
    free(d->x);
    free(d->w);
    free(d->b);
    free(d->y);
    free(d->dy);
    free(d->dx);
    free(d->dw);
    free(d->db);
    free(d->dz);
}

/* Forward then backward into the case's NaN-filled outputs. */
static int dense_run(dense_case *d)
{
    bp_status st = bp_dense_forward(d->y, d->x, d->w, d->b, d->act,
                                    d->batch, d->n_in, d->n_out);

    if (st == BP_STATUS_OK)
        st = bp_dense_backward(d->dx, d->dw, d->db, d->dz, d->dy, d->x,
                               d->w, d->y, d->act, d->batch, d->n_in,
                               d->n_out);
    check(st == BP_STATUS_OK, "dense %s %lldx%lldx%lld: %s",
          bp_activation_name(d->act), (long long)d->batch,
          (long long)d->n_in, (long long)d->n_out, bp_last_error());
    return st == BP_STATUS_OK;
}

/* Backward outputs against a double reference built from y and dy. */
static void dense_check_backward(const dense_case *d, dense_tallies *t)
{
    int64_t B = d->batch, I = d->n_in, O = d->n_out;
    double *dz = malloc((size_t)(B * O + 1) * sizeof(double));
    double *dzs = malloc((size_t)(B * O + 1) * sizeof(double));

    for (int64_t i = 0; i < B; i++)
        ref_backward_row(dz + i * O, dzs + i * O, d->dy + i * O,
                         d->y + i * O, d->act, O);
    for (int64_t k = 0; k < B * O; k++)
        tally_add(&t->dz, difference(d->dz[k], dz[k], dzs[k] + TINY));

    /* dw = x^T dz and db = column sums of dz. */
    for (int64_t j = 0; j < O; j++) {
        double db = 0.0, db_scale = 0.0;

        for (int64_t p = 0; p < I; p++) {
            double dw = 0.0, s = 0.0;

            for (int64_t i = 0; i < B; i++) {
                dw += d->x[i * I + p] * dz[i * O + j];
                s += fabs(d->x[i * I + p]) * dzs[i * O + j];
            }
            tally_add(&t->dw, difference(d->dw[p * O + j], dw, s + TINY));
        }
        for (int64_t i = 0; i < B; i++) {
            db += dz[i * O + j];
            db_scale += dzs[i * O + j];
        }
        tally_add(&t->db, difference(d->db[j], db, db_scale + TINY));
    }

    /* dx = dz w^T. */
    for (int64_t i = 0; i < B; i++) {
        for (int64_t p = 0; p < I; p++) {
            double dx = 0.0, s = 0.0;

            for (int64_t j = 0; j < O; j++) {
                dx += dz[i * O + j] * d->w[p * O + j];
                s += dzs[i * O + j] * fabs(d->w[p * O + j]);
            }
            tally_add(&t->dx, difference(d->dx[i * I + p], dx, s + TINY));
        }
    }
    free(dz);
    free(dzs);
}

/*
 * Skipping dx or db, and dz aliasing dy, leave the other outputs'
 * bits as they were.
 */
static void dense_check_options(const dense_case *d)
{
    int64_t B = d->batch, I = d->n_in, O = d->n_out;
    const char *name = bp_activation_name(d->act);
    float *dw = nan_floats(I * O), *db = nan_floats(O);
    float *dx = nan_floats(B * I), *dz = nan_floats(B * O);
    float *dy = copy_floats(d->dy, B * O);
    int ok;

    ok = bp_dense_backward(NULL, dw, NULL, dz, d->dy, d->x, d->w, d->y,
                           d->act, B, I, O) == BP_STATUS_OK;
    check(ok && same_bits(dw, d->dw, I * O) && same_bits(dz, d->dz, B * O),
          "dense %s backward without dx and db differs", name);

    ok = bp_dense_backward(dx, dw, db, dy, dy, d->x, d->w, d->y, d->act,
                           B, I, O) == BP_STATUS_OK;
    check(ok && same_bits(dx, d->dx, B * I) && same_bits(dw, d->dw, I * O)
              && same_bits(db, d->db, O) && same_bits(dy, d->dz, B * O),
          "dense %s backward with dz aliasing dy differs", name);

    /* Outputs are overwritten: a second call gives the same bits. */
    ok = bp_dense_backward(dx, dw, db, dz, d->dy, d->x, d->w, d->y, d->act,
                           B, I, O) == BP_STATUS_OK;
    check(ok && same_bits(dx, d->dx, B * I) && same_bits(dw, d->dw, I * O)
              && same_bits(db, d->db, O),
          "dense %s backward called twice differs", name);

    free(dw);
    free(db);
    free(dx);
    free(dz);
    free(dy);
}

static void dense_case_run(bp_activation act, int64_t batch, int64_t n_in,
                           int64_t n_out, int with_bias, dense_tallies *t)
{
    dense_case d;
    int64_t B = batch, I = n_in, O = n_out;

    dense_case_alloc(&d, act, batch, n_in, n_out, with_bias);
    if (!dense_run(&d)) {
        dense_case_free(&d);
        return;
    }

    double *xd = to_double(d.x, B * I), *wd = to_double(d.w, I * O);
    double *bd = with_bias ? to_double(d.b, O) : NULL;
    double *y = malloc((size_t)(B * O + 1) * sizeof(double));
    double *scale = malloc((size_t)(B * O + 1) * sizeof(double));

    ref_dense_forward(y, scale, xd, wd, bd, act, B, I, O);
    for (int64_t k = 0; k < B * O; k++)
        tally_add(&t->y, difference(d.y[k], y[k],
                                    scale[k] + fabs(y[k]) + TINY));
    dense_check_backward(&d, t);
    dense_check_options(&d);

    t->y.cases++;
    t->dz.cases++;
    t->dw.cases++;
    t->db.cases++;
    t->dx.cases++;
    free(xd);
    free(wd);
    free(bd);
    free(y);
    free(scale);
    dense_case_free(&d);
}

/* sum(r * act(x @ w + b)) in double, for central differences. */
typedef struct dense_objective {
    double *x, *w, *b, *y;
    const float *r;
    bp_activation act;
    int64_t batch, n_in, n_out;
} dense_objective;

static double dense_objective_value(const dense_objective *f)
{
    double sum = 0.0;

    ref_dense_forward(f->y, NULL, f->x, f->w, f->b, f->act, f->batch,
                      f->n_in, f->n_out);
    for (int64_t k = 0; k < f->batch * f->n_out; k++)
        sum += f->r[k] * f->y[k];
    return sum;
}

/*
 * The largest difference between `grad` and central differences of the
 * objective in each of the n values at `param`, relative to the value
 * plus a thousandth of the largest.
 */
static double dense_fd_difference(const dense_objective *f, double *param,
                                  const float *grad, int64_t n)
{
    double *fd = malloc((size_t)n * sizeof(double));
    double largest = 0.0, worst = 0.0;

    for (int64_t k = 0; k < n; k++) {
        double saved = param[k], up = saved + 1e-5, down = saved - 1e-5;
        double fp, fm;

        param[k] = up;
        fp = dense_objective_value(f);
        param[k] = down;
        fm = dense_objective_value(f);
        param[k] = saved;
        fd[k] = (fp - fm) / (up - down);
        largest = fabs(fd[k]) > largest ? fabs(fd[k]) : largest;
    }
    for (int64_t k = 0; k < n; k++) {
        double err = difference(grad[k], fd[k],
                                fabs(fd[k]) + 1e-3 * largest + TINY);

        if (err > worst)
            worst = err;
    }
    free(fd);
    return worst;
}

/* The backward pass against differences of sum(y * r), r = dy. */
static void dense_fd_case(bp_activation act, tally *t)
{
    const int64_t B = 5, I = 7, O = 6;
    dense_case d;

    dense_case_alloc(&d, act, B, I, O, 1);
    if (dense_run(&d)) {
        dense_objective f = {to_double(d.x, B * I), to_double(d.w, I * O),
                             to_double(d.b, O),
                             malloc((size_t)(B * O) * sizeof(double)),
                             d.dy, act, B, I, O};

        tally_add(t, dense_fd_difference(&f, f.x, d.dx, B * I));
        tally_add(t, dense_fd_difference(&f, f.w, d.dw, I * O));
        tally_add(t, dense_fd_difference(&f, f.b, d.db, O));
        t->cases++;
        free(f.x);
        free(f.w);
        free(f.b);
        free(f.y);
    }
    dense_case_free(&d);
}

static void test_dense(bp_simd level)
{
    /* Odd shapes; some span several depth blocks of the GEMM. */
    static const int64_t shapes[][3] = {
        {1, 1, 1}, {7, 13, 5}, {33, 65, 17}, {3, 1, 40},
        {21, 300, 37}, {300, 19, 23}, {2, 0, 5}, {0, 4, 3},
    };

    for (int a = 0; a < N_ACTIVATIONS; a++) {
        bp_activation act = activations[a];
        const char *name = bp_activation_name(act);
        dense_tallies t;
        tally fd = {0, 0.0};
        char what[64];

        memset(&t, 0, sizeof t);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int with_bias = 0; with_bias < 2; with_bias++)
                dense_case_run(act, shapes[s][0], shapes[s][1],
                               shapes[s][2], with_bias, &t);
        dense_fd_case(act, &fd);

        /* Tolerances grow like the square root of the longest sum. */
        snprintf(what, sizeof what, "dense %s forward", name);
        report(level, what, &t.y, 1e-5 * sqrt(300.0));
        snprintf(what, sizeof what, "dense %s dz", name);
        report(level, what, &t.dz, 2e-6);
        snprintf(what, sizeof what, "dense %s dw", name);
        report(level, what, &t.dw, 1e-5 * sqrt(300.0));
        snprintf(what, sizeof what, "dense %s db", name);
        report(level, what, &t.db, 1e-5 * sqrt(300.0));
        snprintf(what, sizeof what, "dense %s dx", name);
        report(level, what, &t.dx, 1e-5 * sqrt(300.0));
        snprintf(what, sizeof what, "dense %s vs differences", name);
        report(level, what, &fd, 1e-4);
    }
}

/* ---------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------- */

/* Dense forward and backward with 1 and 2 threads match bit for bit. */
static void test_dense_threads(bp_simd level)
{
    const int64_t B = 256, I = 512, O = 384;

    for (int a = 0; a < N_ACTIVATIONS; a++) {
        dense_case one, two;
        int ok = 1;

        dense_case_alloc(&one, activations[a], B, I, O, 1);
        two = one;
        two.y = nan_floats(B * O);
        two.dx = nan_floats(B * I);
        two.dw = nan_floats(I * O);
        two.db = nan_floats(O);
        two.dz = nan_floats(B * O);

        ok &= bp_set_num_threads(1) == BP_STATUS_OK && dense_run(&one);
        ok &= bp_set_num_threads(2) == BP_STATUS_OK && dense_run(&two);
        ok &= same_bits(one.y, two.y, B * O);
        ok &= same_bits(one.dx, two.dx, B * I);
        ok &= same_bits(one.dw, two.dw, I * O);
        ok &= same_bits(one.db, two.db, O);
        ok &= same_bits(one.dz, two.dz, B * O);
        printf("%-8s dense %-8s %lldx%lldx%lld  1 and 2 threads %s\n",
               bp_simd_name(level), bp_activation_name(activations[a]),
               (long long)B, (long long)I, (long long)O,
               ok ? "bitwise equal" : "DIFFER");
        check(ok, "dense %s: bitwise equal across thread counts",
              bp_activation_name(activations[a]));

        free(two.y);
        free(two.dx);
        free(two.dw);
        free(two.db);
        free(two.dz);
        dense_case_free(&one);
    }
}

/*
 * Activations and losses large enough to thread: outputs with 1 and 2
 * threads, in out[0] and out[1], match bit for bit.
 */
static void test_other_threads(bp_simd level)
{
    const int64_t rows = 1024, cols = 1024;
    int64_t n = rows * cols;
    float *x = random_floats(n, 4.0f);
    float *target = random_floats(n, 0.5f);
    float *out[2] = {nan_floats(n), nan_floats(n)};
    float *ce[2] = {nan_floats(n), nan_floats(n)};
    float *bce[2] = {nan_floats(n), nan_floats(n)};
    int32_t *labels = malloc((size_t)rows * sizeof(int32_t));
    double ce_value[2], bce_value[2];
    int ok = 1;

    for (int64_t i = 0; i < n; i++)
        target[i] += 0.5f;
    for (int64_t i = 0; i < rows; i++)
        labels[i] = random_label(cols);

    for (int a = 0; a < N_ACTIVATIONS; a++) {
        for (int t = 0; t < 2; t++)
            ok &= bp_set_num_threads(t + 1) == BP_STATUS_OK
                  && bp_activation_forward(out[t], x, activations[a], rows,
                                           cols) == BP_STATUS_OK;
        ok &= same_bits(out[0], out[1], n);
    }

    for (int t = 0; t < 2; t++) {
        ok &= bp_set_num_threads(t + 1) == BP_STATUS_OK;
        ok &= bp_loss_cross_entropy(&ce_value[t], ce[t], x, labels, rows,
                                    cols) == BP_STATUS_OK;
        ok &= bp_loss_binary_cross_entropy(&bce_value[t], bce[t], x,
                                           target, rows, cols)
              == BP_STATUS_OK;
    }
    ok &= memcmp(&ce_value[0], &ce_value[1], sizeof(double)) == 0;
    ok &= memcmp(&bce_value[0], &bce_value[1], sizeof(double)) == 0;
    ok &= same_bits(ce[0], ce[1], n) && same_bits(bce[0], bce[1], n);

    printf("%-8s activations and losses %lldx%lld  1 and 2 threads %s\n",
           bp_simd_name(level), (long long)rows, (long long)cols,
           ok ? "bitwise equal" : "DIFFER");
    check(ok, "activations and losses: bitwise equal across threads");

    free(x);
    free(target);
    free(labels);
    for (int t = 0; t < 2; t++) {
        free(out[t]);
        free(ce[t]);
        free(bce[t]);
    }
}

/* ---------------------------------------------------------------------
 * Invalid arguments
 * ------------------------------------------------------------------- */

static void test_invalid_activation(void)
{
    static const char fwd[] = "bp_activation_forward";
    static const char bwd[] = "bp_activation_backward";
    const bp_activation relu = BP_ACTIVATION_RELU;
    float a[16] = {0}, b[16] = {0}, c[16] = {0};

    expect_invalid(bp_activation_forward(NULL, a, relu, 2, 3), fwd, "y");
    expect_invalid(bp_activation_forward(b, NULL, relu, 2, 3), fwd, "x");
    expect_invalid(bp_activation_forward(b, a, relu, -1, 3), fwd, "rows");
    expect_invalid(bp_activation_forward(b, a, relu, 2, -3), fwd, "cols");
    expect_invalid(bp_activation_forward(b, a, (bp_activation)42, 2, 3), fwd,
                   "act");
    expect_invalid(bp_activation_backward(NULL, a, b, relu, 2, 3), bwd,
                   "dx");
    expect_invalid(bp_activation_backward(c, NULL, b, relu, 2, 3), bwd,
                   "dy");
    expect_invalid(bp_activation_backward(c, a, NULL, relu, 2, 3), bwd,
                   "y");
    expect_invalid(bp_activation_backward(c, a, b, relu, -2, 3), bwd,
                   "rows");
    expect_invalid(bp_activation_backward(c, a, b, relu, 2, -1), bwd,
                   "cols");
    expect_invalid(bp_activation_backward(c, a, b, (bp_activation)-1, 2, 3),
                   bwd, "act");

    /* Empty buffers may be NULL. */
    check(bp_activation_forward(NULL, NULL, relu, 0, 3) == BP_STATUS_OK
              && bp_activation_forward(NULL, NULL, BP_ACTIVATION_SOFTMAX, 4,
                                       0) == BP_STATUS_OK
              && bp_activation_backward(NULL, NULL, NULL, relu, 3, 0)
                     == BP_STATUS_OK,
          "activations accept NULL for empty buffers");
}

static void test_invalid_losses(void)
{
    static const char mse[] = "bp_loss_mse";
    static const char ce[] = "bp_loss_cross_entropy";
    static const char bce[] = "bp_loss_binary_cross_entropy";
    float z[16] = {0}, t[16] = {0}, g[16];
    int32_t labels[4] = {0};
    double v;

    expect_invalid(bp_loss_mse(&v, g, NULL, t, 2, 3), mse, "pred");
    expect_invalid(bp_loss_mse(&v, g, z, NULL, 2, 3), mse, "target");
    expect_invalid(bp_loss_mse(&v, g, z, t, -1, 3), mse, "rows");
    expect_invalid(bp_loss_mse(&v, g, z, t, 2, -3), mse, "cols");
    expect_invalid(bp_loss_cross_entropy(&v, g, NULL, labels, 2, 3), ce,
                   "logits");
    expect_invalid(bp_loss_cross_entropy(&v, g, z, NULL, 2, 3), ce,
                   "labels");
    expect_invalid(bp_loss_cross_entropy(&v, g, z, labels, -2, 3), ce,
                   "rows");
    expect_invalid(bp_loss_cross_entropy(&v, g, z, labels, 2, -1), ce,
                   "classes");
    expect_invalid(bp_loss_binary_cross_entropy(&v, g, NULL, t, 2, 3), bce,
                   "logits");
    expect_invalid(bp_loss_binary_cross_entropy(&v, g, z, NULL, 2, 3), bce,
                   "target");
    expect_invalid(bp_loss_binary_cross_entropy(&v, g, z, t, -1, 3), bce,
                   "rows");
    expect_invalid(bp_loss_binary_cross_entropy(&v, g, z, t, 2, -5), bce,
                   "cols");
}

static void test_invalid_sgd_sizes(void)
{
    static const char fn[] = "bp_sgd_update";
    const bp_sgd_config plain = {0.1f, 0.0f, 0, 0.0f};
    const bp_sgd_config heavy = {0.1f, 0.9f, 0, 0.0f};
    float w[4] = {0}, v[4] = {0}, g[4] = {0};

    expect_invalid(bp_sgd_update(NULL, v, g, &plain, 0.0f, 4), fn, "w");
    expect_invalid(bp_sgd_update(w, v, NULL, &plain, 0.0f, 4), fn, "grad");
    expect_invalid(bp_sgd_update(w, NULL, g, &heavy, 0.0f, 4), fn,
                   "velocity");
    expect_invalid(bp_sgd_update(w, v, g, &plain, 0.0f, -1), fn, "n");
    check(bp_sgd_update(w, NULL, g, &plain, 0.0f, 4) == BP_STATUS_OK,
          "sgd without momentum accepts a NULL velocity");
    check(bp_sgd_update(NULL, NULL, NULL, &heavy, 0.0f, 0) == BP_STATUS_OK,
          "sgd accepts NULL for empty buffers");
}

static void test_invalid_dense(void)
{
    static const char fwd[] = "bp_dense_forward";
    static const char bwd[] = "bp_dense_backward";
    const bp_activation relu = BP_ACTIVATION_RELU;
    float x[64] = {0}, w[64] = {0}, b[8] = {0}, y[64] = {0};
    float dx[64], dw[64], db[8], dz[64], dy[64] = {0};

    expect_invalid(bp_dense_forward(NULL, x, w, b, relu, 2, 3, 4), fwd, "y");
    expect_invalid(bp_dense_forward(y, NULL, w, b, relu, 2, 3, 4), fwd, "x");
    expect_invalid(bp_dense_forward(y, x, NULL, b, relu, 2, 3, 4), fwd, "w");
    expect_invalid(bp_dense_forward(y, x, w, b, relu, -2, 3, 4), fwd,
                   "batch");
    expect_invalid(bp_dense_forward(y, x, w, b, relu, 2, -3, 4), fwd,
                   "n_in");
    expect_invalid(bp_dense_forward(y, x, w, b, relu, 2, 3, -4), fwd,
                   "n_out");
    expect_invalid(bp_dense_forward(y, x, w, b, (bp_activation)42, 2, 3, 4),
                   fwd, "act");
    check(bp_dense_forward(y, x, w, NULL, relu, 2, 3, 4) == BP_STATUS_OK,
          "dense forward accepts a NULL bias");

    expect_invalid(bp_dense_backward(dx, NULL, db, dz, dy, x, w, y, relu, 2,
                                     3, 4), bwd, "dw");
    expect_invalid(bp_dense_backward(dx, dw, db, NULL, dy, x, w, y, relu, 2,
                                     3, 4), bwd, "dz");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, NULL, x, w, y, relu, 2,
                                     3, 4), bwd, "dy");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, NULL, w, y, relu,
                                     2, 3, 4), bwd, "x");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, NULL, y, relu,
                                     2, 3, 4), bwd, "w");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, w, NULL, relu,
                                     2, 3, 4), bwd, "y");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, w, y, relu, -1,
                                     3, 4), bwd, "batch");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, w, y, relu, 2,
                                     -1, 4), bwd, "n_in");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, w, y, relu, 2,
                                     3, -1), bwd, "n_out");
    expect_invalid(bp_dense_backward(dx, dw, db, dz, dy, x, w, y,
                                     (bp_activation)42, 2, 3, 4), bwd,
                   "act");

    /* Empty buffers may be NULL. */
    check(bp_dense_forward(NULL, NULL, NULL, NULL, relu, 0, 0, 0)
              == BP_STATUS_OK
              && bp_dense_backward(NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                   NULL, relu, 0, 0, 0) == BP_STATUS_OK,
          "dense accepts NULL for empty buffers");
}

static void test_names(void)
{
    check(bp_activation_name((bp_activation)42) == NULL,
          "an unknown activation has no name");
    check(bp_loss_name((bp_loss)42) == NULL, "an unknown loss has no name");
    check(strcmp(bp_activation_name(BP_ACTIVATION_SOFTMAX), "softmax") == 0
              && strcmp(bp_loss_name(BP_LOSS_MSE), "mse") == 0,
          "names of softmax and mse");
}

int main(void)
{
    bp_simd best = bp_simd_best();

    printf("bprop %s, best SIMD level %s, OpenMP %s\n", bp_version(),
           bp_simd_name(best), bp_has_openmp() ? "yes" : "no");
    test_names();
    test_invalid_activation();
    test_invalid_losses();
    test_invalid_sgd_sizes();
    test_invalid_dense();
    test_sgd_invalid();
    test_bad_labels();

    for (int level = BP_SIMD_GENERIC; level <= (int)best; level++) {
        check(bp_simd_set((bp_simd)level) == BP_STATUS_OK, "set level");
        check(bp_simd_level() == (bp_simd)level, "level is the one set");
        bp_set_num_threads(2);
        test_activations((bp_simd)level);
        test_losses((bp_simd)level);
        test_sgd((bp_simd)level);
        test_dense((bp_simd)level);
        test_dense_threads((bp_simd)level);
        test_other_threads((bp_simd)level);
    }
    bp_simd_set(best);

    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
