/*
 * The training toolkit through the public API: activations with a
 * parameter or a derivative that needs their input, losses with their
 * options and sample weights, initialisers, layers without biases, and
 * what a network and its model file keep of them.
 *
 * Kernels are checked against double-precision references at every SIMD
 * level this CPU supports, including inputs of +-1e4; the references'
 * derivatives against central differences; networks' gradients against
 * central differences of their loss.
 *
 * Exits 0 when every check passes.
 */
#include "bprop.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Stops the test when a call that must succeed fails. */
static void require(bp_status st, const char *what)
{
    if (st == BP_STATUS_OK)
        return;
    printf("FAIL: %s: %s\n", what, bp_last_error());
    exit(1);
}

/* Checks that a call failed as invalid and that its message has `needle`. */
static void expect_invalid(bp_status st, const char *needle, const char *what)
{
    check(st == BP_STATUS_INVALID_ARGUMENT, "%s: status %d, not invalid",
          what, (int)st);
    check(strstr(bp_last_error(), needle) != NULL,
          "%s: message \"%s\" lacks \"%s\"", what, bp_last_error(), needle);
}

/* A fixed-seed generator, so every run tests the same values. */
static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

/* |got - ref| <= rtol |ref| + atol, with NaN never close. */
static int close_to(double got, double ref, double rtol, double atol)
{
    return fabs(got - ref) <= rtol * fabs(ref) + atol;
}

/* ---------------------------------------------------------------------
 * Activations
 * ------------------------------------------------------------------- */

static const bp_activation elementwise[] = {
    BP_ACTIVATION_LEAKY_RELU, BP_ACTIVATION_ELU,  BP_ACTIVATION_GELU,
    BP_ACTIVATION_GELU_TANH,  BP_ACTIVATION_SILU, BP_ACTIVATION_SOFTPLUS,
};
#define N_ELEMENTWISE (int)(sizeof elementwise / sizeof elementwise[0])

/* sqrt(2 / pi) and 0.044715 of GELU's tanh approximation; sqrt(2 pi). */
#define GELU_C 0.79788456080286536
#define GELU_K 0.044715
#define SQRT_2PI 2.50662827463100050

static double ref_sigmoid(double x)
{
    return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* act(x) in double; p is the resolved parameter. */
static double ref_act(bp_activation act, double p, double x)
{
    switch (act) {
    case BP_ACTIVATION_LEAKY_RELU:
        return x < 0.0 ? p * x : x;
    case BP_ACTIVATION_ELU:
        return x > 0.0 ? x : p * expm1(x);
    case BP_ACTIVATION_GELU:
        return 0.5 * x * erfc(-x / sqrt(2.0));
    case BP_ACTIVATION_GELU_TANH:
        /* 0.5 x (1 + tanh u) as x sigmoid(2 u): 1 + tanh u cancels. */
        return x * ref_sigmoid(2.0 * GELU_C * (x + GELU_K * x * x * x));
    case BP_ACTIVATION_SILU:
        return x * ref_sigmoid(x);
    case BP_ACTIVATION_SOFTPLUS:
        return fmax(x, 0.0) + log1p(exp(-fabs(x)));
    default:
        return NAN;
    }
}

/* act'(x) in double. */
static double ref_deriv(bp_activation act, double p, double x)
{
    double s, t;

    switch (act) {
    case BP_ACTIVATION_LEAKY_RELU:
        return x > 0.0 ? 1.0 : p;
    case BP_ACTIVATION_ELU:
        return x > 0.0 ? 1.0 : p * exp(x);
    case BP_ACTIVATION_GELU:
        return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) / SQRT_2PI;
    case BP_ACTIVATION_GELU_TANH:
        s = ref_sigmoid(2.0 * GELU_C * (x + GELU_K * x * x * x));
        t = 2.0 * GELU_C * (1.0 + 3.0 * GELU_K * x * x);
        return s + x * s * (1.0 - s) * t;
    case BP_ACTIVATION_SILU:
        s = ref_sigmoid(x);
        return s + x * s * (1.0 - s);
    case BP_ACTIVATION_SOFTPLUS:
        return ref_sigmoid(x);
    default:
        return NAN;
    }
}

/* The parameters each activation is tested with (0: its default). */
static float test_param(bp_activation act)
{
    if (act == BP_ACTIVATION_LEAKY_RELU)
        return 0.2f;
    return act == BP_ACTIVATION_ELU ? 1.5f : 0.0f;
}

static void test_activation_names_and_params(void)
{
    static const char *const names[] = {
        "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"};

    for (int a = 0; a < N_ELEMENTWISE; a++)
        check(strcmp(bp_activation_name(elementwise[a]), names[a]) == 0,
              "name of activation %d", (int)elementwise[a]);
    check(strcmp(bp_activation_name(BP_ACTIVATION_LOG_SOFTMAX),
                 "log_softmax") == 0, "name of log_softmax");
    check(bp_activation_name((bp_activation)12) == NULL,
          "activation 12 has no name");

    check(bp_activation_param(BP_ACTIVATION_LEAKY_RELU, 0.0f) == 0.01f,
          "leaky_relu's default slope is 0.01");
    check(bp_activation_param(BP_ACTIVATION_ELU, 0.0f) == 1.0f,
          "elu's default alpha is 1");
    check(bp_activation_param(BP_ACTIVATION_ELU, 0.5f) == 0.5f,
          "elu keeps alpha 0.5");
    check(isnan(bp_activation_param(BP_ACTIVATION_LEAKY_RELU, -0.1f)),
          "a negative slope is invalid");
    check(isnan(bp_activation_param(BP_ACTIVATION_ELU, INFINITY)),
          "an infinite alpha is invalid");
    check(bp_activation_param(BP_ACTIVATION_GELU, 3.0f) == 0.0f,
          "gelu takes no parameter");

    check(!bp_activation_needs_input(BP_ACTIVATION_RELU) &&
              !bp_activation_needs_input(BP_ACTIVATION_LEAKY_RELU) &&
              !bp_activation_needs_input(BP_ACTIVATION_LOG_SOFTMAX),
          "relu, leaky_relu, log_softmax: derivative from y");
    for (int a = 1; a < N_ELEMENTWISE; a++)
        check(bp_activation_needs_input(elementwise[a]),
              "%s needs its input", bp_activation_name(elementwise[a]));
}

/* The references' derivatives against central differences. */
static void test_reference_derivatives(void)
{
    for (int a = 0; a < N_ELEMENTWISE; a++) {
        bp_activation act = elementwise[a];
        double p = bp_activation_param(act, test_param(act));

        for (double x = -6.05; x < 6.0; x += 0.5) {
            double h = 1e-6;
            double fd = (ref_act(act, p, x + h) - ref_act(act, p, x - h)) /
                        (2.0 * h);

            check(close_to(ref_deriv(act, p, x), fd, 1e-6, 1e-8),
                  "%s: reference derivative at %g", bp_activation_name(act),
                  x);
        }
    }
}

/* The inputs: extremes, both sides of 0, and random values. */
#define ROWS 7
#define COLS 13
static void fill_inputs(float *x)
{
    static const float fixed[COLS] = {-1e4f, -88.0f, -20.0f, -3.0f, -1e-3f,
                                      -1e-30f, 0.0f, 1e-30f, 1e-3f, 3.0f,
                                      20.0f, 88.0f, 1e4f};

    memcpy(x, fixed, sizeof fixed);
    for (int i = COLS; i < ROWS * COLS; i++)
        x[i] = (float)(8.0 * uniform());
}

static void test_activations_at(bp_simd level)
{
    float x[ROWS * COLS], y[ROWS * COLS], dy[ROWS * COLS], dx[ROWS * COLS];
    const char *simd = bp_simd_name(level);

    fill_inputs(x);
    for (int i = 0; i < ROWS * COLS; i++)
        dy[i] = (float)uniform();

    for (int a = 0; a < N_ELEMENTWISE; a++) {
        bp_activation act = elementwise[a];
        float param = test_param(act);
        double p = bp_activation_param(act, param);
        const char *name = bp_activation_name(act);
        int worst = -1;

        require(bp_activation_forward_ex(y, x, act, param, ROWS, COLS),
                "forward");
        require(bp_activation_backward_ex(dx, dy, y, x, act, param, ROWS,
                                          COLS), "backward");
        for (int i = 0; i < ROWS * COLS && worst < 0; i++) {
            double ref = ref_act(act, p, x[i]);
            double d = dy[i] * ref_deriv(act, p, x[i]);

            if (!isfinite(y[i]) || !isfinite(dx[i]) ||
                !close_to(y[i], ref, 2e-5, 1e-30) ||
                !close_to(dx[i], d, 1e-4, 1e-6))
                worst = i;
        }
        check(worst < 0, "%s %s at x = %g: y %g, dx %g", simd, name,
              worst < 0 ? 0.0 : (double)x[worst],
              worst < 0 ? 0.0 : (double)y[worst],
              worst < 0 ? 0.0 : (double)dx[worst]);
    }
}

/*
 * log_softmax forward and backward against double: y = z - lse(z), and
 * dx = dy - softmax(z) sum(dy).
 */
static void test_log_softmax(void)
{
    float x[ROWS * COLS], y[ROWS * COLS], dy[ROWS * COLS], dx[ROWS * COLS];
    int bad = 0;

    fill_inputs(x);
    for (int i = 0; i < ROWS * COLS; i++)
        dy[i] = (float)uniform();
    require(bp_activation_forward(y, x, BP_ACTIVATION_LOG_SOFTMAX, ROWS,
                                  COLS), "log_softmax forward");
    require(bp_activation_backward(dx, dy, y, BP_ACTIVATION_LOG_SOFTMAX,
                                   ROWS, COLS), "log_softmax backward");
    for (int r = 0; r < ROWS; r++) {
        const float *xr = x + r * COLS;
        double max = xr[0], sum = 0.0, dsum = 0.0;

        for (int j = 1; j < COLS; j++)
            max = fmax(max, xr[j]);
        for (int j = 0; j < COLS; j++) {
            sum += exp(xr[j] - max);
            dsum += dy[r * COLS + j];
        }
        for (int j = 0; j < COLS; j++) {
            double ref = xr[j] - max - log(sum);
            double g = dy[r * COLS + j] - exp(ref) * dsum;

            bad |= !close_to(y[r * COLS + j], ref, 1e-6, 1e-5) ||
                   !close_to(dx[r * COLS + j], g, 1e-5, 1e-5);
        }
    }
    check(!bad, "log_softmax against double");
}

/*
 * bp_dense_forward_ex through the GEMM's epilogue (tiles of every size)
 * against double, with and without keeping the pre-activation.
 */
static void test_dense_at(bp_simd level)
{
    enum { B = 37, I = 45, O = 29 };
    static float x[B * I], w[I * O], b[O], y[B * O], y2[B * O], z[B * O];
    const char *simd = bp_simd_name(level);

    for (int i = 0; i < B * I; i++)
        x[i] = (float)(2.0 * uniform());
    for (int i = 0; i < I * O; i++)
        w[i] = (float)(uniform() / sqrt((double)I));
    for (int i = 0; i < O; i++)
        b[i] = (float)uniform();

    for (int a = 0; a < N_ELEMENTWISE; a++) {
        bp_activation act = elementwise[a];
        float param = test_param(act);
        double p = bp_activation_param(act, param);
        int bad = 0;

        require(bp_dense_forward_ex(y, NULL, x, w, b, act, param, B, I, O),
                "dense forward");
        require(bp_dense_forward_ex(y2, z, x, w, b, act, param, B, I, O),
                "dense forward keeping z");
        for (int r = 0; r < B; r++)
            for (int j = 0; j < O; j++) {
                double pre = b[j];

                for (int k = 0; k < I; k++)
                    pre += (double)x[r * I + k] * w[k * O + j];
                bad |= !close_to(z[r * O + j], pre, 1e-4, 2e-5) ||
                       !close_to(y[r * O + j], ref_act(act, p, pre), 1e-4,
                                 2e-5) ||
                       y[r * O + j] != y2[r * O + j];
            }
        check(!bad, "%s dense %s against double", simd,
              bp_activation_name(act));
    }
}

static void test_activation_errors(void)
{
    float x[4] = {1, 2, 3, 4}, y[4], dx[4];

    expect_invalid(bp_activation_backward(dx, x, y, BP_ACTIVATION_GELU, 2, 2),
                   "bp_activation_backward_ex", "gelu without its input");
    expect_invalid(bp_activation_backward_ex(dx, x, y, NULL,
                                             BP_ACTIVATION_SILU, 0.0f, 2, 2),
                   "'x'", "silu with x NULL");
    expect_invalid(bp_activation_forward_ex(y, x, BP_ACTIVATION_LEAKY_RELU,
                                            -1.0f, 2, 2),
                   "slope", "a negative slope");
    expect_invalid(bp_activation_forward_ex(y, x, BP_ACTIVATION_ELU, NAN, 2,
                                            2),
                   "alpha", "alpha NaN");
    expect_invalid(bp_dense_backward(dx, dx, NULL, dx, x, x, x, y,
                                     BP_ACTIVATION_SOFTPLUS, 2, 1, 2),
                   "'z'", "dense softplus without z");
}

/* ---------------------------------------------------------------------
 * Losses
 * ------------------------------------------------------------------- */

/*
 * One loss in double: the mean and, in g, its gradient. Class weights,
 * label smoothing and per-sample weights as bp_loss_compute documents.
 */
static double ref_loss(const bp_loss_config *cfg, const double *z,
                       const float *t, const int32_t *labels,
                       const float *wt, int rows, int cols, double *g)
{
    double total = 0.0;
    int per_row = cfg->kind == BP_LOSS_CROSS_ENTROPY;
    double count = per_row ? rows : (double)rows * cols;

    for (int r = 0; r < rows; r++) {
        double w = wt != NULL ? wt[r] : 1.0, row = 0.0;
        const double *zr = z + r * cols;
        double *gr = g + r * cols;

        if (per_row) {
            double max = zr[0], sum = 0.0, mass = 0.0, s;

            s = cfg->label_smoothing;
            for (int k = 1; k < cols; k++)
                max = fmax(max, zr[k]);
            for (int k = 0; k < cols; k++)
                sum += exp(zr[k] - max);
            for (int k = 0; k < cols; k++) {
                double p = labels != NULL ? (labels[r] == k)
                                          : t[r * cols + k];
                double c = cfg->class_weights ? cfg->class_weights[k] : 1.0;
                double q = c * ((1.0 - s) * p + s / cols);

                row += q * (max + log(sum) - zr[k]);
                mass += q;
                gr[k] = -q;
            }
            for (int k = 0; k < cols; k++)
                gr[k] = w * (gr[k] + mass * exp(zr[k] - max) / sum) / count;
            total += w * row;
            continue;
        }
        for (int j = 0; j < cols; j++) {
            double zj = zr[j], tj = t[r * cols + j], d = zj - tj, v, gj;
            double delta = cfg->delta, pw = cfg->pos_weight;
            double sp = fmax(zj, 0.0) + log1p(exp(-fabs(zj)));

            switch (cfg->kind) {
            case BP_LOSS_MSE:
                v = d * d;
                gj = 2.0 * d;
                break;
            case BP_LOSS_MAE:
                v = fabs(d);
                gj = (d > 0) - (d < 0);
                break;
            case BP_LOSS_HUBER:
                v = fabs(d) <= delta ? 0.5 * d * d
                                     : delta * (fabs(d) - 0.5 * delta);
                gj = fabs(d) <= delta ? d : (d > 0 ? delta : -delta);
                break;
            case BP_LOSS_POISSON:
                v = exp(zj) - tj * zj;
                gj = exp(zj) - tj;
                break;
            default:
                v = pw * tj * (sp - zj) + (1.0 - tj) * sp;
                gj = ref_sigmoid(zj) * (pw * tj + 1.0 - tj) - pw * tj;
                break;
            }
            row += v;
            gr[j] = w * gj / count;
        }
        total += w * row;
    }
    return total / count;
}

/* The loss configurations tested, with the class weights they use. */
static const float class_weights[5] = {0.5f, 2.0f, 1.0f, 0.0f, 3.0f};

static bp_loss_config loss_case(int i, int *use_labels)
{
    bp_loss_config cfg = {.kind = BP_LOSS_MSE};

    *use_labels = 0;
    switch (i) {
    case 1:
        cfg.kind = BP_LOSS_MAE;
        break;
    case 2:
        cfg.kind = BP_LOSS_HUBER;
        cfg.delta = 0.7f;
        break;
    case 3:
        cfg.kind = BP_LOSS_POISSON;
        break;
    case 4:
        cfg.kind = BP_LOSS_BINARY_CROSS_ENTROPY;
        cfg.pos_weight = 3.0f;
        break;
    case 5:
        cfg.kind = BP_LOSS_CROSS_ENTROPY;
        cfg.label_smoothing = 0.1f;
        cfg.class_weights = class_weights;
        *use_labels = 1;
        break;
    case 6:
        cfg.kind = BP_LOSS_CROSS_ENTROPY;
        cfg.class_weights = class_weights;
        break;
    case 7:
        cfg.kind = BP_LOSS_CROSS_ENTROPY;
        *use_labels = 1;
        break;
    default:
        break;
    }
    return cfg;
}
#define N_LOSS_CASES 8

/* Targets that suit the loss: counts, [0, 1], or distributions per row. */
static void fill_targets(const bp_loss_config *cfg, float *t,
                         int32_t *labels, int rows, int cols)
{
    for (int i = 0; i < rows * cols; i++) {
        double u = uniform();

        if (cfg->kind == BP_LOSS_POISSON)
            t[i] = (float)floor(4.0 * fabs(u));
        else if (cfg->kind == BP_LOSS_BINARY_CROSS_ENTROPY ||
                 cfg->kind == BP_LOSS_CROSS_ENTROPY)
            t[i] = (float)fabs(u);
        else
            t[i] = (float)(2.0 * u);
    }
    for (int r = 0; r < rows; r++) {
        double sum = 0.0;

        labels[r] = (int32_t)(rng_state >> 35) % cols;
        uniform();
        if (cfg->kind != BP_LOSS_CROSS_ENTROPY)
            continue;
        for (int k = 0; k < cols; k++)
            sum += t[r * cols + k];
        for (int k = 0; k < cols; k++)
            t[r * cols + k] = (float)(t[r * cols + k] / sum);
    }
}

static void test_losses_at(bp_simd level)
{
    enum { R = 9, C = 5 };
    float z[R * C], t[R * C], grad[R * C], wt[R];
    int32_t labels[R];
    double z64[R * C], g64[R * C], g_up[R * C];

    for (int c = 0; c < N_LOSS_CASES; c++) {
        int use_labels;
        bp_loss_config cfg = loss_case(c, &use_labels);
        const int32_t *lab = use_labels ? labels : NULL;
        double value = NAN;
        int bad = 0, bad_fd = 0;

        fill_targets(&cfg, t, labels, R, C);
        for (int i = 0; i < R * C; i++) {
            z[i] = (float)(3.0 * uniform());
            z64[i] = z[i];
        }
        for (int r = 0; r < R; r++)
            wt[r] = r == 2 ? 0.0f : (float)(0.5 + fabs(uniform()));

        require(bp_loss_compute(&value, grad, z, t, lab, wt, &cfg, R, C),
                "bp_loss_compute");
        double ref = ref_loss(&cfg, z64, t, lab, wt, R, C, g64);
        bad |= !close_to(value, ref, 1e-6, 1e-9);
        for (int i = 0; i < R * C; i++)
            bad |= !close_to(grad[i], g64[i], 1e-5, 1e-8);

        /* The gradient against central differences of the reference. */
        for (int i = 0; i < R * C; i++) {
            double h = 1e-5, saved = z64[i];

            z64[i] = saved + h;
            double up = ref_loss(&cfg, z64, t, lab, wt, R, C, g_up);
            z64[i] = saved - h;
            double down = ref_loss(&cfg, z64, t, lab, wt, R, C, g_up);
            z64[i] = saved;
            bad_fd |= !close_to(grad[i], (up - down) / (2.0 * h), 1e-4,
                                1e-7);
        }
        check(!bad && !bad_fd, "%s loss case %d (%s): value %.9g vs %.9g%s",
              bp_simd_name(level), c, bp_loss_name(cfg.kind), value, ref,
              bad_fd ? ", finite differences differ" : "");

        /* Unit weights are no weights, bit for bit. */
        float grad1[R * C], grad2[R * C], ones[R];
        double v1, v2;
        for (int r = 0; r < R; r++)
            ones[r] = 1.0f;
        require(bp_loss_compute(&v1, grad1, z, t, lab, ones, &cfg, R, C),
                "unit weights");
        require(bp_loss_compute(&v2, grad2, z, t, lab, NULL, &cfg, R, C),
                "no weights");
        check(v1 == v2 && memcmp(grad1, grad2, sizeof grad1) == 0,
              "loss case %d: unit weights equal none", c);
    }
}

/* The plain kernels are bp_loss_compute with default options. */
static void test_plain_losses_agree(void)
{
    enum { R = 6, C = 4 };
    float z[R * C], t[R * C], g1[R * C], g2[R * C];
    int32_t labels[R];
    double v1, v2;
    bp_loss_config mse = {.kind = BP_LOSS_MSE};
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY};
    bp_loss_config bce = {.kind = BP_LOSS_BINARY_CROSS_ENTROPY};

    for (int i = 0; i < R * C; i++) {
        z[i] = (float)(5.0 * uniform());
        t[i] = (float)fabs(uniform());
    }
    for (int r = 0; r < R; r++)
        labels[r] = r % C;

    require(bp_loss_mse(&v1, g1, z, t, R, C), "mse");
    require(bp_loss_compute(&v2, g2, z, t, NULL, NULL, &mse, R, C), "mse");
    check(v1 == v2 && memcmp(g1, g2, sizeof g1) == 0, "mse bits");
    require(bp_loss_cross_entropy(&v1, g1, z, labels, R, C), "ce");
    require(bp_loss_compute(&v2, g2, z, NULL, labels, NULL, &ce, R, C), "ce");
    check(v1 == v2 && memcmp(g1, g2, sizeof g1) == 0, "ce bits");
    require(bp_loss_binary_cross_entropy(&v1, g1, z, t, R, C), "bce");
    require(bp_loss_compute(&v2, g2, z, t, NULL, NULL, &bce, R, C), "bce");
    check(v1 == v2 && memcmp(g1, g2, sizeof g1) == 0, "bce bits");

    /* One-hot probabilities are labels. */
    for (int i = 0; i < R * C; i++)
        t[i] = (float)(labels[i / C] == i % C);
    require(bp_loss_compute(&v1, g1, z, t, NULL, NULL, &ce, R, C), "probs");
    require(bp_loss_cross_entropy(&v2, g2, z, labels, R, C), "labels");
    check(close_to(v1, v2, 1e-12, 0.0), "one-hot probabilities: %g vs %g",
          v1, v2);
}

/* Extreme logits and log-rates give finite values where they exist. */
static void test_extreme_losses(void)
{
    float z[4] = {-1e4f, 1e4f, -80.0f, 80.0f}, t[4] = {1, 0, 1, 0}, g[4];
    int32_t labels[2] = {1, 0};
    double v;
    bp_loss_config bce = {.kind = BP_LOSS_BINARY_CROSS_ENTROPY,
                          .pos_weight = 2.0f};
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY,
                         .label_smoothing = 0.2f};
    bp_loss_config poisson = {.kind = BP_LOSS_POISSON};

    require(bp_loss_compute(&v, g, z, t, NULL, NULL, &bce, 2, 2), "bce");
    check(close_to(v, (2.0 * 1e4 + 1e4 + 2.0 * 80.0 + 80.0) / 4.0, 1e-9, 0),
          "bce of +-1e4 logits: %g", v);
    check(isfinite(g[0]) && isfinite(g[1]), "bce gradients finite");
    require(bp_loss_compute(&v, g, z, NULL, labels, NULL, &ce, 2, 2), "ce");
    check(isfinite(v) && v > 1e3, "ce of +-1e4 logits: %g", v);

    float rates[3] = {-50.0f, 0.0f, 50.0f}, counts[3] = {0, 2, 3}, gp[3];
    require(bp_loss_compute(&v, gp, rates, counts, NULL, NULL, &poisson, 1,
                            3), "poisson");
    check(close_to(v, (exp(-50.0) + 1.0 + exp(50.0) - 150.0) / 3.0, 1e-9, 0),
          "poisson of log-rates +-50: %g", v);
    check(isfinite(gp[2]) && close_to(gp[1], -1.0 / 3.0, 1e-6, 0),
          "poisson gradients");
}

static void test_loss_errors(void)
{
    float z[4] = {0}, t[4] = {0}, g[4];
    float bad_weights[2] = {1.0f, -1.0f};
    float bad_class[2] = {1.0f, NAN};
    double v;
    bp_loss_config cfg = {.kind = BP_LOSS_MSE, .delta = 2.0f};

    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "takes no delta", "mse with a delta");
    cfg = (bp_loss_config){.kind = BP_LOSS_HUBER, .delta = -1.0f};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "delta", "a negative delta");
    cfg = (bp_loss_config){.kind = BP_LOSS_CROSS_ENTROPY,
                           .label_smoothing = 1.0f};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "label_smoothing", "smoothing 1");
    cfg = (bp_loss_config){.kind = BP_LOSS_CROSS_ENTROPY,
                           .class_weights = bad_class};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "class_weights[1]", "a NaN class weight");
    cfg = (bp_loss_config){.kind = BP_LOSS_POISSON, .pos_weight = 2.0f};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "takes no pos_weight", "poisson with a pos_weight");
    cfg = (bp_loss_config){.kind = BP_LOSS_MAE};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, bad_weights, &cfg, 2,
                                   2),
                   "weights[1]", "a negative sample weight");
    cfg = (bp_loss_config){.kind = (bp_loss)42};
    expect_invalid(bp_loss_compute(&v, g, z, t, NULL, NULL, &cfg, 2, 2),
                   "not a bp_loss", "an unknown loss");
    check(strcmp(bp_loss_name(BP_LOSS_HUBER), "huber") == 0 &&
              strcmp(bp_loss_name(BP_LOSS_POISSON), "poisson") == 0 &&
              strcmp(bp_loss_name(BP_LOSS_MAE), "mae") == 0,
          "loss names");
}

/* ---------------------------------------------------------------------
 * Initialisers
 * ------------------------------------------------------------------- */

static void test_initialisers(void)
{
    enum { I = 200, O = 300 };
    bp_layer_spec layers[] = {
        {.units = O, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    bp_net *net, *twin;
    static const struct {
        bp_init init;
        const char *name;
        double variance; /* of the first layer's weights */
        int normal;
    } cases[] = {
        {BP_INIT_HE, "he", 2.0 / I, 0},
        {BP_INIT_GLOROT, "glorot", 2.0 / (I + O), 0},
        {BP_INIT_HE_NORMAL, "he_normal", 2.0 / I, 1},
        {BP_INIT_GLOROT_NORMAL, "glorot_normal", 2.0 / (I + O), 1},
        {BP_INIT_LECUN_UNIFORM, "lecun_uniform", 1.0 / I, 0},
        {BP_INIT_LECUN_NORMAL, "lecun_normal", 1.0 / I, 1},
    };

    require(bp_net_create(&net, I, layers, 2, BP_LOSS_MSE), "create");
    require(bp_net_create(&twin, I, layers, 2, BP_LOSS_MSE), "create twin");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const float *w = bp_net_params_const(net);
        double sum = 0.0, sq = 0.0, fourth = 0.0, max = 0.0;
        int n = I * O;

        check(strcmp(bp_init_name(cases[c].init), cases[c].name) == 0,
              "name of init %s", cases[c].name);
        require(bp_net_init(net, cases[c].init, 11), "init");
        for (int i = 0; i < n; i++) {
            sum += w[i];
            sq += (double)w[i] * w[i];
            fourth += pow(w[i], 4.0);
            max = fmax(max, fabs(w[i]));
        }
        double var = sq / n, kurtosis = fourth / n / (var * var);
        double limit = sqrt(3.0 * cases[c].variance);

        /* 60000 draws: the mean and variance within a few of their
           standard errors, and the shape told apart by its kurtosis
           (3 for a normal, 1.8 for a uniform). */
        check(fabs(sum / n) < 4.0 * sqrt(cases[c].variance / n),
              "%s: mean %g", cases[c].name, sum / n);
        check(fabs(var / cases[c].variance - 1.0) < 0.03,
              "%s: variance %g, expected %g", cases[c].name, var,
              cases[c].variance);
        if (cases[c].normal)
            check(fabs(kurtosis - 3.0) < 0.15 && max > limit,
                  "%s: kurtosis %g, largest %g", cases[c].name, kurtosis,
                  max);
        else
            check(fabs(kurtosis - 1.8) < 0.05 && max <= limit,
                  "%s: kurtosis %g, largest %g of limit %g", cases[c].name,
                  kurtosis, max, limit);

        /* The same seed draws the same bits; a layer re-drawn alone gets
           what bp_net_init gave it. */
        require(bp_net_init(twin, BP_INIT_AUTO, 11), "twin init");
        require(bp_net_init_layer(twin, 0, cases[c].init, 0.0f, 11),
                "init_layer");
        check(memcmp(bp_net_params_const(twin), w, (size_t)n * 4) == 0,
              "%s: bp_net_init_layer draws bp_net_init's weights",
              cases[c].name);
    }

    require(bp_net_init_layer(twin, 1, BP_INIT_HE_NORMAL, 0.25f, 3), "bias");
    int64_t b_off;
    require(bp_net_layer_offsets(twin, 1, NULL, &b_off), "offsets");
    check(bp_net_params_const(twin)[b_off + 2] == 0.25f,
          "bp_net_init_layer sets the biases");
    expect_invalid(bp_net_init_layer(twin, 2, BP_INIT_HE, 0.0f, 3), "'i'",
                   "layer 2 of 2");
    expect_invalid(bp_net_init_layer(twin, 0, BP_INIT_HE, NAN, 3), "'bias'",
                   "a NaN bias");
    expect_invalid(bp_net_init(twin, (bp_init)7, 3), "'init'",
                   "init 7");
    check(bp_init_name((bp_init)7) == NULL, "init 7 has no name");
    bp_net_free(net);
    bp_net_free(twin);
}

/* ---------------------------------------------------------------------
 * Networks
 * ------------------------------------------------------------------- */

enum { NI = 4, NO = 3, NB = 6 };

/* Data for a small network: inputs, float targets, labels, weights. */
typedef struct data {
    float x[NB * NI], y[NB * NO], w[NB];
    int32_t labels[NB];
} data;

static void fill_data(data *d, const bp_loss_config *cfg)
{
    for (int i = 0; i < NB * NI; i++)
        d->x[i] = (float)uniform();
    fill_targets(cfg, d->y, d->labels, NB, NO);
    for (int r = 0; r < NB; r++)
        d->w[r] = (float)(0.25 + fabs(uniform()));
}

/*
 * The network's gradient (with sample weights) against central
 * differences of its weighted loss, every parameter.
 */
static double gradient_error(bp_net *net, const data *d, const int32_t *lab)
{
    int64_t n = bp_net_n_params(net);
    float *p = bp_net_params(net);
    float *grad = malloc((size_t)n * sizeof(float));
    bp_workspace *ws;
    double loss, worst = 0.0;

    require(bp_workspace_create(&ws, net, NB), "workspace");
    require(bp_net_gradient_weighted(net, d->x, lab ? NULL : d->y, lab,
                                     d->w, NB, &loss), "gradient");
    memcpy(grad, bp_net_grads(net), (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        float saved = p[i];
        double best = INFINITY;

        /* NOTE: a step may carry a row across a kink (elu at 0, huber at
           delta); a wrong gradient fails at both step sizes, a kink
           crossing rarely at both. */
        for (float h = 1e-2f; h > 1e-3f; h /= 4.0f) {
            double up, down;

            p[i] = saved + h;
            require(bp_net_evaluate_weighted(net, ws, d->x, d->y, lab, d->w,
                                             NB, &up), "evaluate up");
            p[i] = saved - h;
            require(bp_net_evaluate_weighted(net, ws, d->x, d->y, lab, d->w,
                                             NB, &down), "evaluate down");
            p[i] = saved;
            double fd = (up - down) / (2.0 * h);
            best = fmin(best, fabs(grad[i] - fd) / (fabs(fd) + 1e-2));
        }
        worst = fmax(worst, best);
    }
    bp_workspace_free(ws);
    free(grad);
    return worst;
}

static void test_network_gradients(void)
{
    static const struct {
        bp_activation hidden, out;
        float param;
        int no_bias;
        int loss_case; /* loss_case()'s index */
    } cases[] = {
        {BP_ACTIVATION_LEAKY_RELU, BP_ACTIVATION_IDENTITY, 0.3f, 0, 0},
        {BP_ACTIVATION_ELU, BP_ACTIVATION_TANH, 0.7f, 1, 2},
        {BP_ACTIVATION_GELU, BP_ACTIVATION_IDENTITY, 0.0f, 0, 3},
        {BP_ACTIVATION_GELU_TANH, BP_ACTIVATION_SIGMOID, 0.0f, 0, 4},
        {BP_ACTIVATION_SILU, BP_ACTIVATION_LOG_SOFTMAX, 0.0f, 1, 5},
        {BP_ACTIVATION_SOFTPLUS, BP_ACTIVATION_SOFTMAX, 0.0f, 0, 6},
        {BP_ACTIVATION_SILU, BP_ACTIVATION_SOFTPLUS, 0.0f, 0, 1},
    };

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int use_labels;
        bp_loss_config cfg = loss_case(cases[c].loss_case, &use_labels);
        bp_layer_spec layers[] = {
            {.units = 5, .activation = cases[c].hidden,
             .activation_param = cases[c].param,
             .no_bias = cases[c].no_bias},
            {.units = NO, .activation = cases[c].out}};
        bp_net *net;
        data d;

        if (cfg.class_weights != NULL)
            cfg.class_weights = class_weights + 2; /* NO of them */
        fill_data(&d, &cfg);
        require(bp_net_create_ex(&net, NI, layers, 2, &cfg), "create");
        require(bp_net_init(net, BP_INIT_GLOROT_NORMAL, 5), "init");
        double err = gradient_error(net, &d, use_labels ? d.labels : NULL);
        check(err < 2e-2, "network %s/%s with %s: gradient error %g",
              bp_activation_name(cases[c].hidden),
              bp_activation_name(cases[c].out), bp_loss_name(cfg.kind), err);

        /* A layer without biases gets no bias gradient. */
        if (cases[c].no_bias) {
            int64_t b_off;
            int nonzero = 0;

            require(bp_net_layer_offsets(net, 0, NULL, &b_off), "offsets");
            for (int j = 0; j < 5; j++)
                nonzero |= bp_net_grads(net)[b_off + j] != 0.0f ||
                           bp_net_params_const(net)[b_off + j] != 0.0f;
            check(!nonzero, "no bias: zero gradient and value");
        }
        bp_net_free(net);
    }
}

/* Weighted gradients are the weighted sum of one-row gradients. */
static void test_weighted_gradient(void)
{
    bp_layer_spec layers[] = {
        {.units = 5, .activation = BP_ACTIVATION_GELU},
        {.units = NO, .activation = BP_ACTIVATION_IDENTITY}};
    bp_loss_config cfg = {.kind = BP_LOSS_HUBER, .delta = 0.5f};
    bp_net *net;
    data d;
    double loss, one;

    fill_data(&d, &cfg);
    require(bp_net_create_ex(&net, NI, layers, 2, &cfg), "create");
    require(bp_net_init(net, BP_INIT_HE_NORMAL, 9), "init");
    int64_t n = bp_net_n_params(net);
    double *expect = calloc((size_t)n, sizeof(double));
    double expect_loss = 0.0;

    for (int r = 0; r < NB; r++) {
        require(bp_net_gradient(net, d.x + r * NI, d.y + r * NO, NULL, 1,
                                &one), "one row");
        for (int64_t i = 0; i < n; i++)
            expect[i] += d.w[r] * bp_net_grads(net)[i] / NB;
        expect_loss += d.w[r] * one / NB;
    }
    require(bp_net_gradient_weighted(net, d.x, d.y, NULL, d.w, NB, &loss),
            "weighted");
    int bad = !close_to(loss, expect_loss, 1e-6, 0.0);
    for (int64_t i = 0; i < n; i++)
        bad |= !close_to(bp_net_grads(net)[i], expect[i], 1e-4, 1e-6);
    check(!bad, "weighted gradient is the weighted sum of rows'");

    float bad_w[NB] = {1, 1, -2, 1, 1, 1};
    expect_invalid(bp_net_gradient_weighted(net, d.x, d.y, NULL, bad_w, NB,
                                            &loss),
                   "weights[2]", "a negative weight");
    free(expect);
    bp_net_free(net);
}

/* Training with weights 2 equals training twice as fast on the loss. */
static void test_weighted_epoch(void)
{
    bp_layer_spec layers[] = {
        {.units = 6, .activation = BP_ACTIVATION_SILU},
        {.units = NO, .activation = BP_ACTIVATION_IDENTITY}};
    bp_loss_config cfg = {.kind = BP_LOSS_MAE};
    bp_optimizer sgd, sgd2;
    bp_epoch_report r1, r2;
    bp_net *a, *b;
    data d;
    float twos[NB];

    fill_data(&d, &cfg);
    for (int r = 0; r < NB; r++)
        twos[r] = 2.0f;
    require(bp_optimizer_defaults(&sgd, BP_OPTIMIZER_SGD), "sgd");
    sgd.lr = 0.1f;
    sgd2 = sgd;
    sgd2.lr = 0.2f;
    require(bp_net_create_ex(&a, NI, layers, 2, &cfg), "create a");
    require(bp_net_init(a, BP_INIT_AUTO, 4), "init a");
    require(bp_net_clone(&b, a), "clone");
    require(bp_net_train_epoch_weighted(a, &sgd, NULL, d.x, d.y, NULL, twos,
                                        NB, 4, 1, 8, 0, NULL, NULL, &r1),
            "weights 2");
    require(bp_net_train_epoch_weighted(b, &sgd2, NULL, d.x, d.y, NULL,
                                        NULL, NB, 4, 1, 8, 0, NULL, NULL,
                                        &r2), "lr twice");
    int64_t n = bp_net_n_params(a);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad |= !close_to(bp_net_params_const(a)[i],
                         bp_net_params_const(b)[i], 1e-5, 1e-6);
    check(!bad, "weights of 2 step as a learning rate twice as large");
    check(close_to(r1.mean_loss, 2.0 * r2.mean_loss, 1e-6, 0.0),
          "weighted mean loss %g is twice %g", r1.mean_loss, r2.mean_loss);
    bp_net_free(a);
    bp_net_free(b);
}

/* poisson predicts rates, log_softmax log-probabilities. */
static void test_predict_links(void)
{
    bp_layer_spec reg[] = {{.units = 5, .activation = BP_ACTIVATION_ELU},
                           {.units = NO, .activation = BP_ACTIVATION_IDENTITY}};
    bp_layer_spec cls[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = NO, .activation = BP_ACTIVATION_LOG_SOFTMAX}};
    bp_loss_config poisson = {.kind = BP_LOSS_POISSON};
    bp_net *net, *mse;
    bp_workspace *ws;
    float rate[NB * NO], out[NB * NO];
    data d;
    int bad = 0;

    fill_data(&d, &poisson);
    require(bp_net_create_ex(&net, NI, reg, 2, &poisson), "poisson net");
    require(bp_net_init(net, BP_INIT_AUTO, 2), "init");
    require(bp_net_create(&mse, NI, reg, 2, BP_LOSS_MSE), "mse net");
    memcpy(bp_net_params(mse), bp_net_params_const(net),
           (size_t)bp_net_n_params(net) * sizeof(float));
    require(bp_workspace_create(&ws, net, NB), "workspace");
    require(bp_net_predict(net, ws, rate, d.x, NB), "predict rates");
    require(bp_net_predict(mse, ws, out, d.x, NB), "predict outputs");
    for (int i = 0; i < NB * NO; i++)
        bad |= !close_to(rate[i], exp(out[i]), 1e-6, 0.0);
    check(!bad, "poisson predicts exp of the output");
    bp_workspace_free(ws);
    bp_net_free(net);
    bp_net_free(mse);

    require(bp_net_create(&net, NI, cls, 2, BP_LOSS_CROSS_ENTROPY), "cls");
    require(bp_net_init(net, BP_INIT_AUTO, 2), "init");
    require(bp_workspace_create(&ws, net, NB), "workspace");
    require(bp_net_predict(net, ws, out, d.x, NB), "predict");
    for (int r = 0; r < NB; r++) {
        double sum = 0.0;

        for (int k = 0; k < NO; k++)
            sum += exp(out[r * NO + k]);
        bad |= !close_to(sum, 1.0, 1e-6, 0.0) || out[r * NO] > 0.0f;
    }
    check(!bad, "log_softmax with cross-entropy predicts log-probabilities");
    bp_workspace_free(ws);
    bp_net_free(net);
}

static void test_network_errors(void)
{
    bp_layer_spec log_hidden[] = {
        {.units = 5, .activation = BP_ACTIVATION_LOG_SOFTMAX},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    bp_layer_spec soft_out[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_LOG_SOFTMAX}};
    bp_layer_spec bad_slope[] = {
        {.units = 5, .activation = BP_ACTIVATION_LEAKY_RELU,
         .activation_param = -1.0f},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    bp_loss_config huber = {.kind = BP_LOSS_HUBER};
    bp_loss_config smooth = {.kind = BP_LOSS_CROSS_ENTROPY,
                             .label_smoothing = 2.0f};
    bp_net *net;

    expect_invalid(bp_net_create(&net, 3, log_hidden, 2, BP_LOSS_MSE),
                   "log_softmax, which is only allowed on the last",
                   "log_softmax hidden");
    expect_invalid(bp_net_create_ex(&net, 3, soft_out, 2, &huber),
                   "huber cannot follow a log_softmax", "huber after it");
    expect_invalid(bp_net_create(&net, 3, bad_slope, 2, BP_LOSS_MSE),
                   "layers[0].activation_param", "a negative slope");
    expect_invalid(bp_net_create_ex(&net, 3, soft_out, 2, &smooth),
                   "label_smoothing", "smoothing 2");
    expect_invalid(bp_net_create_ex(&net, 3, soft_out, 2, NULL), "'loss",
                   "no loss");
    check(net == NULL, "a failed create leaves *out NULL");
}

/* ---------------------------------------------------------------------
 * Model files
 * ------------------------------------------------------------------- */

static void test_model_file(void)
{
    float cw[3] = {1.0f, 0.5f, 4.0f};
    bp_layer_spec layers[] = {
        {.units = 5, .activation = BP_ACTIVATION_ELU,
         .activation_param = 0.25f, .no_bias = 1},
        {.units = 4, .activation = BP_ACTIVATION_LEAKY_RELU},
        {.units = 3, .activation = BP_ACTIVATION_LOG_SOFTMAX}};
    bp_loss_config cfg = {.kind = BP_LOSS_CROSS_ENTROPY,
                          .label_smoothing = 0.05f, .class_weights = cw};
    bp_loss_config got;
    bp_layer_spec spec;
    bp_net *net, *back;
    size_t size;

    require(bp_net_create_ex(&net, 2, layers, 3, &cfg), "create");
    cw[0] = 9.0f; /* the network keeps its own copy */
    require(bp_net_init(net, BP_INIT_LECUN_NORMAL, 3), "init");
    require(bp_net_save_buffer(net, NULL, NULL, 0, &size), "size");
    unsigned char *buf = malloc(size);
    require(bp_net_save_buffer(net, NULL, buf, size, &size), "save");
    require(bp_net_load_buffer(&back, buf, size, NULL), "load");

    require(bp_net_layer(back, 0, &spec), "layer 0");
    check(spec.activation == BP_ACTIVATION_ELU &&
              spec.activation_param == 0.25f && spec.no_bias,
          "layer 0 keeps elu(0.25) without biases");
    require(bp_net_layer(back, 1, &spec), "layer 1");
    check(spec.activation_param == 0.01f && !spec.no_bias,
          "layer 1 keeps leaky_relu's default slope and its biases");
    require(bp_net_get_loss_config(back, &got), "loss config");
    check(got.kind == BP_LOSS_CROSS_ENTROPY &&
              got.label_smoothing == 0.05f && got.class_weights != NULL &&
              got.class_weights[0] == 1.0f && got.class_weights[2] == 4.0f,
          "the loss keeps its smoothing and class weights");
    check(memcmp(bp_net_params_const(net), bp_net_params_const(back),
                 (size_t)bp_net_n_params(net) * sizeof(float)) == 0,
          "parameters round-trip");

    bp_net *clone;
    require(bp_net_clone(&clone, back), "clone");
    require(bp_net_get_loss_config(clone, &got), "clone's loss config");
    check(got.class_weights != NULL && got.class_weights[1] == 0.5f &&
              got.class_weights != cw,
          "a clone keeps the class weights");
    bp_net_free(clone);
    free(buf);
    bp_net_free(net);
    bp_net_free(back);
}

int main(void)
{
    bp_simd best = bp_simd_best();

    test_activation_names_and_params();
    test_reference_derivatives();
    test_log_softmax();
    test_activation_errors();
    for (int level = 0; level <= (int)best; level++) {
        require(bp_simd_set((bp_simd)level), "bp_simd_set");
        test_activations_at((bp_simd)level);
        test_dense_at((bp_simd)level);
        test_losses_at((bp_simd)level);
    }
    test_plain_losses_agree();
    test_extreme_losses();
    test_loss_errors();
    test_initialisers();
    test_network_gradients();
    test_weighted_gradient();
    test_weighted_epoch();
    test_predict_links();
    test_network_errors();
    test_model_file();

    if (failures > 0) {
        printf("%d checks FAILED\n", failures);
        return 1;
    }
    printf("all toolkit checks passed\n");
    return 0;
}
