/*
 * The library at the edges, through the public API: softmax and the
 * fused losses on huge logits, row independence, saturating activations
 * without floating-point exceptions, means over millions of elements,
 * non-finite outputs of a network, batches larger than the data and the
 * last partial batch, and training after fork().
 *
 * Exits 0 when every check passes.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#include "bprop.h"

#include <fenv.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <sys/wait.h>
#include <unistd.h>
#endif

/* The exceptions NumPy would warn about; underflow and inexact are fine. */
#define LOUD_EXCEPTIONS (FE_OVERFLOW | FE_INVALID | FE_DIVBYZERO)

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

/* For set-up steps the rest of a test depends on: stop at once. */
static void require(bp_status st, const char *what)
{
    if (st != BP_STATUS_OK) {
        printf("FAIL: %s: %s: %s\n", what, bp_status_name(st),
               bp_last_error());
        exit(1);
    }
}

/* A fixed-seed generator, so every run tests the same values. */
static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* n floats uniform in [lo, hi); the caller frees them. */
static float *random_floats(int64_t n, double lo, double hi)
{
    float *x = malloc((size_t)n * sizeof(float));

    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * uniform());
    return x;
}

/* n multiples of 1/16 in [-8, 8]: adding 1000 to them is exact. */
static float *grid_floats(int64_t n)
{
    float *x = malloc((size_t)n * sizeof(float));

    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((int)(uniform() * 257.0) - 128) / 16.0f;
    return x;
}

static int32_t *random_labels(int64_t n, int64_t classes)
{
    int32_t *labels = malloc((size_t)n * sizeof(int32_t));

    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)(uniform() * (double)classes);
    return labels;
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

/* ---------------------------------------------------------------------
 * Softmax and cross-entropy on huge logits
 * ------------------------------------------------------------------- */

static void test_huge_logits(void)
{
    static const float z[] = {1000, 0, 0, 1000, -1000, 0, 1000, -1000,
                              1e30f, -1e30f};
    static const float want[] = {1, 0, 0, 1, 0, 1, 1, 0, 1, 0};
    static const int32_t labels[] = {1, 1, 0, 0, 1};
    float y[10], grad[10];
    double loss = NAN;

    feclearexcept(FE_ALL_EXCEPT);
    require(bp_activation_forward(y, z, BP_ACTIVATION_SOFTMAX, 5, 2),
            "softmax");
    require(bp_loss_cross_entropy(&loss, grad, z, labels, 5, 2),
            "cross-entropy");
    check(!fetestexcept(LOUD_EXCEPTIONS),
          "softmax and cross-entropy of [1000, 0] raise no overflow");
    check(same_bits(y, want, 10), "softmax of huge rows is exactly 0/1");

    /* Rows: 1000, 0, 1000, 0 and 2e30 (1e30 in float, twice). */
    double expected = (2000.0 + 2.0 * (double)1e30f) / 5.0;
    check(fabs(loss - expected) <= 1e-12 * expected,
          "cross-entropy of huge rows is %.17g, expected %.17g", loss,
          expected);
    check(all_finite(grad, 10), "cross-entropy gradient is finite");
    check(grad[0] == 0.2f && grad[1] == -0.2f && grad[2] == 0.0f,
          "cross-entropy gradient of [1000, 0] with label 1");
}

/* On the grid z + shift is exact, so the results keep every bit. */
static void test_shift_invariance(bp_simd level)
{
    static const float shifts[] = {1000.0f, -1000.0f, 512.0f};
    const int64_t rows = 37, cols = 11, n = rows * cols;
    float *z = grid_floats(n);
    float *moved = malloc((size_t)n * sizeof(float));
    float *y = malloc((size_t)n * sizeof(float));
    float *y_moved = malloc((size_t)n * sizeof(float));
    float *g = malloc((size_t)n * sizeof(float));
    float *g_moved = malloc((size_t)n * sizeof(float));
    int32_t *labels = random_labels(rows, cols);
    double loss, loss_moved;

    require(bp_activation_forward(y, z, BP_ACTIVATION_SOFTMAX, rows, cols),
            "softmax");
    require(bp_loss_cross_entropy(&loss, g, z, labels, rows, cols),
            "cross-entropy");
    for (int s = 0; s < 3; s++) {
        for (int64_t i = 0; i < n; i++)
            moved[i] = z[i] + shifts[s];
        bp_activation_forward(y_moved, moved, BP_ACTIVATION_SOFTMAX, rows,
                              cols);
        bp_loss_cross_entropy(&loss_moved, g_moved, moved, labels, rows,
                              cols);
        check(same_bits(y, y_moved, n), "%s softmax(z + %g) != softmax(z)",
              bp_simd_name(level), shifts[s]);
        check(loss == loss_moved && same_bits(g, g_moved, n),
              "%s cross-entropy of z + %g differs", bp_simd_name(level),
              shifts[s]);
    }
    for (int64_t i = 0; i < rows; i++) {
        double sum = 0.0;

        for (int64_t j = 0; j < cols; j++)
            sum += y[i * cols + j];
        check(fabs(sum - 1.0) <= 1e-6, "softmax row %lld sums to %.9g",
              (long long)i, sum);
    }
    free(z);
    free(moved);
    free(y);
    free(y_moved);
    free(g);
    free(g_moved);
    free(labels);
}

/*
 * Every odd row replaced by an extreme one leaves the even rows' results
 * bit for bit. 4096 x 131 is enough work for the kernels' threads, and
 * a power of two keeps the 1/rows gradient scale exact.
 */
static void test_row_independence(bp_simd level)
{
    const int64_t rows = 4096, cols = 131, n = rows * cols;
    float *z = random_floats(n, -12.0, 12.0);
    float *other = malloc((size_t)n * sizeof(float));
    float *target = random_floats(n, 0.0, 1.0);
    int32_t *labels = random_labels(rows, cols);
    float *a = malloc((size_t)n * sizeof(float));
    float *b = malloc((size_t)n * sizeof(float));
    int softmax_ok = 1, ce_ok = 1, bce_ok = 1, alone_ok = 1;
    double loss;

    memcpy(other, z, (size_t)n * sizeof(float));
    for (int64_t i = 1; i < rows; i += 2)
        for (int64_t j = 0; j < cols; j++)
            other[i * cols + j] = uniform() < 0.5 ? 1e30f : -1e30f;

    bp_activation_forward(a, z, BP_ACTIVATION_SOFTMAX, rows, cols);
    bp_activation_forward(b, other, BP_ACTIVATION_SOFTMAX, rows, cols);
    for (int64_t i = 0; i < rows; i += 2)
        softmax_ok &= same_bits(a + i * cols, b + i * cols, cols);

    /* A row alone gives the same softmax. */
    for (int64_t i = 0; i < rows; i += 1022) {
        float alone[131];

        bp_activation_forward(alone, z + i * cols, BP_ACTIVATION_SOFTMAX, 1,
                              cols);
        alone_ok &= same_bits(alone, a + i * cols, cols);
    }

    bp_loss_cross_entropy(&loss, a, z, labels, rows, cols);
    bp_loss_cross_entropy(&loss, b, other, labels, rows, cols);
    for (int64_t i = 0; i < rows; i += 2)
        ce_ok &= same_bits(a + i * cols, b + i * cols, cols);

    bp_loss_binary_cross_entropy(&loss, a, z, target, rows, cols);
    bp_loss_binary_cross_entropy(&loss, b, other, target, rows, cols);
    for (int64_t i = 0; i < rows; i += 2)
        bce_ok &= same_bits(a + i * cols, b + i * cols, cols);

    check(softmax_ok, "%s softmax rows depend on other rows",
          bp_simd_name(level));
    check(alone_ok, "%s softmax of a row alone differs", bp_simd_name(level));
    check(ce_ok, "%s cross-entropy gradient rows depend on other rows",
          bp_simd_name(level));
    check(bce_ok, "%s binary cross-entropy gradient rows depend on others",
          bp_simd_name(level));
    free(z);
    free(other);
    free(target);
    free(labels);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------------
 * Saturating activations
 * ------------------------------------------------------------------- */

static void test_saturation(bp_simd level)
{
    static const float x[] = {1e4f, -1e4f, 88.8f, -88.8f, 0.0f, 1e-3f};
    static const float eye[36] = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
                                  0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                                  0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1};
    static const float bits[] = {1, 0, 1, 0, 1, 0};
    const bp_activation acts[] = {BP_ACTIVATION_SIGMOID, BP_ACTIVATION_TANH};
    float y[6], fused[6], ones[6] = {1, 1, 1, 1, 1, 1}, dx[6], grad[6];
    double loss = NAN;

    for (int a = 0; a < 2; a++) {
        float low = acts[a] == BP_ACTIVATION_TANH ? -1.0f : 0.0f;
        const char *name = bp_activation_name(acts[a]);

        feclearexcept(FE_ALL_EXCEPT);
        bp_activation_forward(y, x, acts[a], 1, 6);
        bp_activation_backward(dx, ones, y, acts[a], 1, 6);
        bp_dense_forward(fused, x, eye, NULL, acts[a], 1, 6, 6);
        check(!fetestexcept(LOUD_EXCEPTIONS),
              "%s %s of +-1e4 raises a floating-point exception",
              bp_simd_name(level), name);
        check(y[0] == 1.0f && y[1] == low, "%s of +-1e4 saturates", name);
        check(all_finite(y, 6) && all_finite(dx, 6),
              "%s %s: values or derivative not finite", bp_simd_name(level),
              name);
        check(dx[0] == 0.0f && dx[1] == 0.0f, "%s' of +-1e4 is 0", name);
        check(same_bits(y, fused, 6), "%s %s: dense epilogue differs",
              bp_simd_name(level), name);
    }

    feclearexcept(FE_ALL_EXCEPT);
    bp_loss_binary_cross_entropy(&loss, grad, x, bits, 1, 6);
    check(!fetestexcept(LOUD_EXCEPTIONS) && isfinite(loss) &&
              all_finite(grad, 6),
          "binary cross-entropy of +-1e4 logits: loss %g", loss);
}

/* ---------------------------------------------------------------------
 * Means over millions of elements
 * ------------------------------------------------------------------- */

static double relative(double got, double want)
{
    return fabs(got - want) / fabs(want);
}

static void test_million_means(void)
{
    const int64_t n = 2000000, cols = 8, rows = n / cols;
    float *p = random_floats(n, 2.0, 4.0);
    float *t = random_floats(n, -1.0, 1.0);
    int32_t *labels = random_labels(rows, cols);
    double loss = NAN, ref = 0.0;

    /* References summed in long double, in the plainest order. */
    long double sum = 0.0L;
    for (int64_t i = 0; i < n; i++)
        sum += ((long double)p[i] - t[i]) * ((long double)p[i] - t[i]);
    ref = (double)(sum / n);
    require(bp_loss_mse(&loss, NULL, p, t, rows, cols), "mse");
    check(relative(loss, ref) <= 1e-6, "mse of 2e6 elements: %.17g vs %.17g",
          loss, ref);

    sum = 0.0L;
    for (int64_t i = 0; i < rows; i++) {
        const float *z = p + i * cols;
        long double max = z[0], s = 0.0L;

        for (int64_t j = 1; j < cols; j++)
            max = z[j] > max ? z[j] : max;
        for (int64_t j = 0; j < cols; j++)
            s += expl(z[j] - max);
        sum += max + logl(s) - z[labels[i]];
    }
    ref = (double)(sum / rows);
    require(bp_loss_cross_entropy(&loss, NULL, p, labels, rows, cols),
            "cross-entropy");
    check(relative(loss, ref) <= 1e-6,
          "cross-entropy of 2e6 elements: %.17g vs %.17g", loss, ref);

    sum = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        long double z = p[i] - 3.0f, tb = t[i] > 0.0f;

        sum += (z > 0 ? z : 0) - z * tb + log1pl(expl(-fabsl(z)));
    }
    for (int64_t i = 0; i < n; i++) {
        p[i] -= 3.0f;
        t[i] = t[i] > 0.0f;
    }
    ref = (double)(sum / n);
    require(bp_loss_binary_cross_entropy(&loss, NULL, p, t, rows, cols),
            "binary cross-entropy");
    check(relative(loss, ref) <= 1e-6,
          "binary cross-entropy of 2e6 elements: %.17g vs %.17g", loss, ref);
    free(p);
    free(t);
    free(labels);
}

/* ---------------------------------------------------------------------
 * Networks: non-finite outputs, batch sizes
 * ------------------------------------------------------------------- */

static bp_net *make_net(int64_t n_inputs, const bp_layer_spec *layers,
                        int n_layers, bp_loss loss, uint64_t seed)
{
    bp_net *net = NULL;

    require(bp_net_create(&net, n_inputs, layers, n_layers, loss),
            "bp_net_create");
    require(bp_net_init(net, BP_INIT_AUTO, seed), "bp_net_init");
    return net;
}

static void expect_not_finite(bp_status st, const char *row,
                              const char *what)
{
    check(st == BP_STATUS_NOT_FINITE, "%s: status %s, expected not finite",
          what, bp_status_name(st));
    check(strstr(bp_last_error(), row) != NULL,
          "%s: message \"%s\" names %s", what, bp_last_error(), row);
}

/* NaN inputs, and logits that overflow, fail instead of predicting. */
static void test_non_finite_outputs(void)
{
    const bp_loss losses[] = {BP_LOSS_MSE, BP_LOSS_CROSS_ENTROPY,
                              BP_LOSS_BINARY_CROSS_ENTROPY};
    const bp_layer_spec layer[] = {
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    float x[4 * 2] = {0.5f, 0.5f, 1, 1, NAN, 0, 1, 1};
    float y[4 * 3] = {0}, out[4 * 3];
    int32_t labels[4] = {0, 1, 2, 0};
    double loss = 0.0;

    for (int l = 0; l < 3; l++) {
        bp_net *net = make_net(2, layer, 1, losses[l], 1);
        bp_workspace *ws;

        /* The workspace holds 2 rows, so row 2 is in the second chunk. */
        require(bp_workspace_create(&ws, net, 2), "bp_workspace_create");
        expect_not_finite(bp_net_predict(net, ws, out, x, 4), "row 2",
                          "predict with NaN in row 2");
        check(all_finite(out, 2 * 3), "rows before the bad chunk written");
        expect_not_finite(bp_net_evaluate(net, ws, x, y, labels, 4, &loss),
                          "row 2", "evaluate with NaN in row 2");

        /* Finite weights of 1e30 overflow the logits of row 1. */
        float *w = bp_net_params(net);
        for (int64_t i = 0; i < bp_net_n_params(net); i++)
            w[i] = i % 2 == 0 ? 1e30f : -1e30f;
        x[2] = 1e10f;
        x[3] = 3e10f;
        expect_not_finite(bp_net_predict(net, ws, out, x, 2), "row 1",
                          "predict with overflowing logits");
        expect_not_finite(bp_net_evaluate(net, ws, x, y, labels, 2, &loss),
                          "row 1", "evaluate with overflowing logits");
        require(bp_net_predict(net, ws, out, x, 1), "the first row alone");
        check(all_finite(out, 3), "the first row's outputs are finite");
        x[2] = x[3] = 1.0f;
        bp_workspace_free(ws);
        bp_net_free(net);
    }
}

/*
 * An epoch with batches of 4 over 10 rows is train_batch on rows 0-3,
 * 4-7 and 8-9; one with a batch larger than the data is one batch.
 */
static void test_batches(void)
{
    const bp_layer_spec layers[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.1f, 0.5f, 0, 0.01f};
    float *x = random_floats(10 * 3, -1.0, 1.0);
    float *y = random_floats(10 * 2, -1.0, 1.0);
    double loss;

    for (int big = 0; big < 2; big++) {
        bp_net *epoch = make_net(3, layers, 2, BP_LOSS_MSE, 7);
        bp_net *steps = make_net(3, layers, 2, BP_LOSS_MSE, 7);
        bp_net *short_epoch = make_net(3, layers, 2, BP_LOSS_MSE, 7);

        require(bp_net_train_epoch(epoch, &sgd, x, y, NULL, 10,
                                   big ? 1000 : 4, 0, 0, 0, &loss),
                "bp_net_train_epoch");
        for (int64_t start = 0; start < 10; start += big ? 10 : 4) {
            int64_t rows = big ? 10 : (start + 4 <= 10 ? 4 : 10 - start);

            require(bp_net_train_batch(steps, &sgd, x + start * 3,
                                       y + start * 2, NULL, rows, &loss),
                    "bp_net_train_batch");
        }
        check(memcmp(bp_net_params_const(epoch), bp_net_params_const(steps),
                     (size_t)bp_net_n_params(epoch) * sizeof(float)) == 0,
              big ? "a batch larger than the data is not one batch"
                  : "an epoch's batches differ from train_batch steps");

        /* Without its last two rows the epoch ends elsewhere. */
        require(bp_net_train_epoch(short_epoch, &sgd, x, y, NULL, 8,
                                   big ? 1000 : 4, 0, 0, 0, &loss),
                "bp_net_train_epoch");
        check(memcmp(bp_net_params_const(epoch),
                     bp_net_params_const(short_epoch),
                     (size_t)bp_net_n_params(epoch) * sizeof(float)) != 0,
              "the last partial batch changes the parameters");
        bp_net_free(epoch);
        bp_net_free(steps);
        bp_net_free(short_epoch);
    }
    free(x);
    free(y);
}

/* ---------------------------------------------------------------------
 * fork()
 * ------------------------------------------------------------------- */

#if !defined(_WIN32)
/* Trains and predicts; the exit status says whether it worked. */
static int train_in_child(int threads)
{
    const bp_layer_spec layers[] = {
        {.units = 64, .activation = BP_ACTIVATION_RELU},
        {.units = 4, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.01f, 0.9f, 0, 0.0f};
    const int64_t n = 512, d = 600;
    float *a = random_floats(d * d, -1.0, 1.0);
    float *c = malloc((size_t)(d * d) * sizeof(float));
    float *x = random_floats(n * 32, -1.0, 1.0);
    int32_t *labels = random_labels(n, 4);
    float *out = malloc((size_t)n * 4 * sizeof(float));
    bp_net *net = NULL;
    bp_workspace *ws = NULL;
    double loss;
    int ok;

    /* The library must never wait for the parent's lost threads. */
    alarm(30);
    if (threads > 0)
        bp_set_num_threads(threads);
    ok = bp_sgemm(c, d, a, d, a, d, BP_TRANS_NO, BP_TRANS_NO, 1.0f, 0.0f, d,
                  d, d) == BP_STATUS_OK &&
         bp_net_create(&net, 32, layers, 2, BP_LOSS_CROSS_ENTROPY)
             == BP_STATUS_OK &&
         bp_net_init(net, BP_INIT_AUTO, 3) == BP_STATUS_OK &&
         bp_net_train_epoch(net, &sgd, x, NULL, labels, n, 64, 1, 3, 0,
                            &loss) == BP_STATUS_OK &&
         bp_workspace_create(&ws, net, 256) == BP_STATUS_OK &&
         bp_net_predict(net, ws, out, x, n) == BP_STATUS_OK &&
         all_finite(out, n * 4) && bp_get_num_threads() == 1;
    bp_workspace_free(ws);
    bp_net_free(net);
    free(a);
    free(c);
    free(x);
    free(labels);
    free(out);
    return ok ? 0 : 1;
}

static void test_fork(void)
{
    const int64_t d = 600;
    float *a = random_floats(d * d, -1.0, 1.0);
    float *c = malloc((size_t)(d * d) * sizeof(float));

    /* The parent's thread pool exists with two threads at the fork. */
    require(bp_set_num_threads(2), "bp_set_num_threads");
    require(bp_sgemm(c, d, a, d, a, d, BP_TRANS_NO, BP_TRANS_NO, 1.0f, 0.0f,
                     d, d, d), "bp_sgemm");
    fflush(stdout);

    for (int threads = 0; threads <= 2; threads += 2) {
        pid_t pid = fork();
        int status = 0;

        if (pid == 0) {
            int code = train_in_child(threads);

            free(a);
            free(c);
            _exit(code);
        }
        check(pid > 0 && waitpid(pid, &status, 0) == pid,
              "fork and wait for the child");
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the forked child (threads set to %d) trained and predicted: "
              "%s %d", threads, WIFSIGNALED(status) ? "signal" : "status",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    check(bp_get_num_threads() == (bp_has_openmp() ? 2 : 1),
          "the parent keeps its threads");
    free(a);
    free(c);
}
#endif

int main(void)
{
    bp_simd start = bp_simd_level(), best = bp_simd_best();

    printf("bprop %s, SIMD level %s, OpenMP %s\n", bp_version(),
           bp_simd_name(bp_simd_level()), bp_has_openmp() ? "yes" : "no");
    test_huge_logits();
    for (int level = BP_SIMD_GENERIC; level <= (int)best; level++) {
        require(bp_simd_set((bp_simd)level), "bp_simd_set");
        test_shift_invariance((bp_simd)level);
        test_row_independence((bp_simd)level);
        test_saturation((bp_simd)level);
    }
    require(bp_simd_set(start), "bp_simd_set");
    test_million_means();
    test_non_finite_outputs();
    test_batches();
#if !defined(_WIN32)
    test_fork();
#endif

    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
