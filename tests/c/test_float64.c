/*
 * Float64 networks through the public API: bp_dgemm against a naive
 * product, gradients against central differences for every activation,
 * loss and layer kind, predictions against a forward pass written here,
 * training with every optimizer, the same bits for 1 and 2 threads, the
 * weights and dropout masks of a float32 twin, model files, and the
 * errors of wrong-dtype calls.
 *
 * Exits 0 when every check passes.
 */
#include "bprop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

static void require(bp_status st, const char *what)
{
    if (st != BP_STATUS_OK) {
        printf("FAIL: %s: %s: %s\n", what, bp_status_name(st),
               bp_last_error());
        exit(1);
    }
}

static void expect(bp_status st, bp_status want, const char *needle,
                   const char *what)
{
    char line[600];

    snprintf(line, sizeof line, "%s: status %s, message \"%s\" names \"%s\"",
             what, bp_status_name(st), bp_last_error(), needle);
    check(st == want && strstr(bp_last_error(), needle) != NULL, line);
}

enum { ROWS = 13, INPUTS = 5, HIDDEN = 7, OUTPUTS = 3 };

static uint64_t state = 0x9e3779b97f4a7c15ull;

/* A uniform value in [-1, 1), the same on every run. */
static double uniform(void)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(state >> 11) / 4503599627370496.0 - 1.0;
}

static void fill(double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = uniform();
}

/* op(M)[i, j] of a row-major matrix with leading dimension ld. */
static double at(const double *m, int64_t ld, int trans, int64_t i,
                 int64_t j)
{
    return trans ? m[j * ld + i] : m[i * ld + j];
}

static void test_dgemm(void)
{
    enum { M = 37, N = 531, K = 133 };
    double *a = malloc(sizeof(double) * M * K);
    double *b = malloc(sizeof(double) * K * N);
    double *c = malloc(sizeof(double) * M * N);
    double *c0 = malloc(sizeof(double) * M * N);

    fill(a, M * K);
    fill(b, K * N);
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            double worst = 0.0;

            fill(c, M * N);
            memcpy(c0, c, sizeof(double) * M * N);
            require(bp_dgemm(c, N, a, ta ? M : K, b, tb ? K : N,
                             (bp_trans)ta, (bp_trans)tb, 0.5, 2.0, M, N, K),
                    "bp_dgemm");
            for (int64_t i = 0; i < M; i++) {
                for (int64_t j = 0; j < N; j++) {
                    double sum = 0.0;

                    for (int64_t p = 0; p < K; p++)
                        sum += at(a, ta ? M : K, ta, i, p) *
                               at(b, tb ? K : N, tb, p, j);
                    sum = 0.5 * sum + 2.0 * c0[i * N + j];
                    worst = fmax(worst, fabs(sum - c[i * N + j]));
                }
            }
            printf("dgemm trans %d %d: largest difference %.3g\n", ta, tb,
                   worst);
            check(worst < 1e-12, "bp_dgemm matches the naive product");
        }
    }
    free(a);
    free(b);
    free(c);
    free(c0);
}

/* A two-layer float64 network with `act` hidden and `out` output. */
static bp_net *make_net(bp_activation act, bp_activation out,
                        const bp_loss_config *loss, bp_dtype dtype)
{
    bp_layer_spec layers[] = {
        {.units = HIDDEN, .activation = act},
        {.units = OUTPUTS, .activation = out}};
    bp_net *net;

    require(bp_net_create_dtype(&net, INPUTS, layers, 2, loss, dtype),
            "bp_net_create_dtype");
    require(bp_net_init(net, BP_INIT_AUTO, 7), "bp_net_init");
    return net;
}

/* Targets the loss takes: positive counts, 0/1 or any value. */
static void make_targets(double *y, int32_t *labels, bp_loss loss)
{
    for (int i = 0; i < ROWS * OUTPUTS; i++) {
        double u = uniform();

        y[i] = loss == BP_LOSS_BINARY_CROSS_ENTROPY ? (u > 0 ? 1.0 : 0.0)
               : loss == BP_LOSS_POISSON            ? 2.0 + 2.0 * u
                                                    : u;
    }
    for (int i = 0; i < ROWS; i++)
        labels[i] = i % OUTPUTS;
}

/* The largest relative difference of the gradient from central ones. */
static double gradient_error(bp_net *net, const double *x, const double *y,
                             const int32_t *labels, const double *weights)
{
    int64_t n = bp_net_n_params(net);
    double *p = bp_net_params_f64(net);
    double *g = malloc(sizeof(double) * (size_t)n);
    double loss, up, down, worst = 0.0;
    const double h = 1e-6;

    require(bp_net_gradient_f64(net, x, y, labels, weights, ROWS, &loss),
            "bp_net_gradient_f64");
    memcpy(g, bp_net_grads_f64(net), sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double keep = p[i];

        p[i] = keep + h;
        require(bp_net_gradient_f64(net, x, y, labels, weights, ROWS, &up),
                "gradient +h");
        p[i] = keep - h;
        require(bp_net_gradient_f64(net, x, y, labels, weights, ROWS,
                                    &down),
                "gradient -h");
        p[i] = keep;

        double fd = (up - down) / (2 * h);
        worst = fmax(worst, fabs(fd - g[i]) / fmax(1e-3, fabs(fd)));
    }
    free(g);
    return worst;
}

static void test_gradients(void)
{
    static const bp_activation acts[] = {
        BP_ACTIVATION_IDENTITY, BP_ACTIVATION_RELU, BP_ACTIVATION_SIGMOID,
        BP_ACTIVATION_TANH, BP_ACTIVATION_LEAKY_RELU, BP_ACTIVATION_ELU,
        BP_ACTIVATION_GELU, BP_ACTIVATION_GELU_TANH, BP_ACTIVATION_SILU,
        BP_ACTIVATION_SOFTPLUS};
    static const float class_weights[OUTPUTS] = {1.0f, 2.0f, 0.5f};
    bp_loss_config losses[] = {
        {.kind = BP_LOSS_MSE}, {.kind = BP_LOSS_MAE},
        {.kind = BP_LOSS_HUBER, .delta = 0.3f}, {.kind = BP_LOSS_POISSON},
        {.kind = BP_LOSS_BINARY_CROSS_ENTROPY, .pos_weight = 2.0f},
        {.kind = BP_LOSS_CROSS_ENTROPY},
        {.kind = BP_LOSS_CROSS_ENTROPY, .label_smoothing = 0.1f,
         .class_weights = class_weights}};
    double x[ROWS * INPUTS], y[ROWS * OUTPUTS], w[ROWS];
    int32_t labels[ROWS];

    fill(x, ROWS * INPUTS);
    for (int i = 0; i < ROWS; i++)
        w[i] = 1.5 + uniform();
    for (size_t a = 0; a < sizeof acts / sizeof *acts; a++) {
        bp_loss_config mse = {.kind = BP_LOSS_MSE};
        bp_net *net = make_net(acts[a], BP_ACTIVATION_TANH, &mse,
                               BP_DTYPE_F64);
        char what[160];

        make_targets(y, labels, BP_LOSS_MSE);
        double err = gradient_error(net, x, y, NULL, NULL);
        printf("gradient, %s: largest relative error %.3g\n",
               bp_activation_name(acts[a]), err);
        snprintf(what, sizeof what, "%s gradient matches central "
                 "differences", bp_activation_name(acts[a]));
        check(err < 1e-6, what);
        bp_net_free(net);
    }
    for (size_t l = 0; l < sizeof losses / sizeof *losses; l++) {
        bp_activation out = losses[l].kind == BP_LOSS_CROSS_ENTROPY
                                ? BP_ACTIVATION_LOG_SOFTMAX
                                : BP_ACTIVATION_IDENTITY;
        bp_net *net = make_net(BP_ACTIVATION_TANH, out, &losses[l],
                               BP_DTYPE_F64);
        char what[160];

        make_targets(y, labels, losses[l].kind);
        double err = gradient_error(net, x, y, labels, w);
        printf("gradient, loss %s: largest relative error %.3g\n",
               bp_loss_name(losses[l].kind), err);
        snprintf(what, sizeof what, "%s gradient matches central "
                 "differences", bp_loss_name(losses[l].kind));
        check(err < 1e-6, what);
        bp_net_free(net);
    }
}

/*
 * Dropout, batch norm and layer norm between dense layers: gradients
 * against central differences, and the units dropout drops against a
 * float32 twin's.
 */
static void test_layers(void)
{
    bp_layer_spec layers[] = {
        {.units = HIDDEN, .activation = BP_ACTIVATION_TANH},
        {.kind = BP_LAYER_KIND_DROPOUT, .rate = 0.3f},
        {.kind = BP_LAYER_KIND_BATCH_NORM, .activation = BP_ACTIVATION_ELU},
        {.kind = BP_LAYER_KIND_LAYER_NORM, .no_bias = 1},
        {.units = OUTPUTS, .activation = BP_ACTIVATION_IDENTITY}};
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY};
    double x[ROWS * INPUTS], y[ROWS * OUTPUTS], loss;
    float xf[ROWS * INPUTS];
    int32_t labels[ROWS];
    bp_net *net, *twin;

    fill(x, ROWS * INPUTS);
    for (int i = 0; i < ROWS * INPUTS; i++)
        xf[i] = (float)x[i];
    make_targets(y, labels, BP_LOSS_CROSS_ENTROPY);
    require(bp_net_create_dtype(&net, INPUTS, layers, 5, &ce, BP_DTYPE_F64),
            "float64 network with every layer kind");
    require(bp_net_init(net, BP_INIT_AUTO, 7), "init");

    double err = gradient_error(net, x, NULL, labels, NULL);
    printf("gradient, dropout + batch norm + layer norm: largest relative "
           "error %.3g\n", err);
    check(err < 1e-6, "layer gradients match central differences");
    check(bp_net_running_stats_f64(net, 2) != NULL &&
              bp_net_running_stats(net, 2) == NULL,
          "batch norm keeps double running averages");

    require(bp_net_create_dtype(&twin, INPUTS, layers, 5, &ce, BP_DTYPE_F32),
            "float32 twin");
    require(bp_net_init(twin, BP_INIT_AUTO, 7), "init twin");
    require(bp_net_gradient(twin, xf, NULL, labels, ROWS, &loss), "twin");
    require(bp_net_gradient_f64(net, x, NULL, labels, NULL, ROWS, &loss),
            "gradient");

    const float *drop32 = bp_net_layer_output(twin, 1, ROWS);
    const double *drop64 = bp_net_layer_output_f64(net, 1, ROWS);
    int same = drop32 != NULL && drop64 != NULL, dropped = 0;
    for (int i = 0; same && i < ROWS * HIDDEN; i++) {
        same = (drop32[i] == 0.0f) == (drop64[i] == 0.0);
        dropped += drop64[i] == 0.0;
    }
    check(same && dropped > 0, "dropout drops the float32 twin's units");
    bp_net_free(twin);
    bp_net_free(net);
}

/* The forward pass written out, with a tanh hidden layer and softmax. */
static void test_predict(void)
{
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY};
    bp_net *net = make_net(BP_ACTIVATION_TANH, BP_ACTIVATION_IDENTITY, &ce,
                           BP_DTYPE_F64);
    const double *p = bp_net_params_f64(net);
    int64_t w1, b1, w2, b2;
    double x[ROWS * INPUTS], out[ROWS * OUTPUTS], worst = 0.0;
    bp_workspace *ws;

    fill(x, ROWS * INPUTS);
    require(bp_net_layer_offsets(net, 0, &w1, &b1), "offsets");
    require(bp_net_layer_offsets(net, 1, &w2, &b2), "offsets");
    require(bp_workspace_create(&ws, net, 4), "bp_workspace_create");
    require(bp_net_predict_f64(net, ws, out, x, ROWS), "bp_net_predict_f64");
    for (int r = 0; r < ROWS; r++) {
        double h[HIDDEN], z[OUTPUTS], max = -INFINITY, sum = 0.0;

        for (int j = 0; j < HIDDEN; j++) {
            h[j] = p[b1 + j];
            for (int i = 0; i < INPUTS; i++)
                h[j] += x[r * INPUTS + i] * p[w1 + i * HIDDEN + j];
            h[j] = tanh(h[j]);
        }
        for (int k = 0; k < OUTPUTS; k++) {
            z[k] = p[b2 + k];
            for (int j = 0; j < HIDDEN; j++)
                z[k] += h[j] * p[w2 + j * OUTPUTS + k];
            max = fmax(max, z[k]);
        }
        for (int k = 0; k < OUTPUTS; k++)
            sum += exp(z[k] - max);
        for (int k = 0; k < OUTPUTS; k++)
            worst = fmax(worst, fabs(exp(z[k] - max) / sum -
                                     out[r * OUTPUTS + k]));
    }
    printf("predict: largest difference %.3g\n", worst);
    check(worst < 1e-14, "bp_net_predict_f64 matches the forward pass");
    bp_workspace_free(ws);
    bp_net_free(net);
}

/* The same seed gives a float64 network its float32 twin's weights. */
static void test_same_start(void)
{
    bp_loss_config mse = {.kind = BP_LOSS_MSE};
    bp_net *a = make_net(BP_ACTIVATION_RELU, BP_ACTIVATION_IDENTITY, &mse,
                         BP_DTYPE_F32);
    bp_net *b = make_net(BP_ACTIVATION_RELU, BP_ACTIVATION_IDENTITY, &mse,
                         BP_DTYPE_F64);
    int same = bp_net_n_params(a) == bp_net_n_params(b);

    for (int64_t i = 0; same && i < bp_net_n_params(a); i++)
        same = (double)bp_net_params(a)[i] == bp_net_params_f64(b)[i];
    check(same, "float64 weights are the float32 ones, widened");
    check(bp_net_dtype(a) == BP_DTYPE_F32 && bp_net_dtype(b) == BP_DTYPE_F64,
          "bp_net_dtype");
    check(bp_net_params(b) == NULL && bp_net_params_f64(a) == NULL,
          "the other dtype's slab getters give NULL");
    bp_net_free(a);
    bp_net_free(b);
}

/* Trains with `kind` and `threads` threads; the parameters in *out. */
static double train(bp_optimizer_kind kind, int threads, double **out)
{
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY};
    bp_net *net = make_net(BP_ACTIVATION_RELU, BP_ACTIVATION_IDENTITY, &ce,
                           BP_DTYPE_F64);
    bp_optimizer opt;
    bp_schedule sched = {.kind = BP_SCHEDULE_EXPONENTIAL, .gamma = 0.99f};
    bp_epoch_report report;
    double x[ROWS * INPUTS], first = 0.0;
    int32_t labels[ROWS];

    state = 42;
    fill(x, ROWS * INPUTS);
    for (int i = 0; i < ROWS; i++)
        labels[i] = x[i * INPUTS] > 0 ? 1 : 2;
    require(bp_optimizer_defaults(&opt, kind), "bp_optimizer_defaults");
    opt.lr = kind == BP_OPTIMIZER_SGD ? 0.1f : 0.01f;
    opt.clip_norm = 5.0f;
    require(bp_set_num_threads(threads), "bp_set_num_threads");
    for (int e = 0; e < 40; e++) {
        require(bp_net_train_epoch_f64(net, &opt, &sched, x, NULL, labels,
                                       NULL, ROWS, 4, 1, 3, (uint64_t)e,
                                       NULL, NULL, &report),
                "bp_net_train_epoch_f64");
        if (e == 0)
            first = report.mean_loss;
    }
    *out = malloc(sizeof(double) * (size_t)bp_net_n_params(net));
    memcpy(*out, bp_net_params_f64(net),
           sizeof(double) * (size_t)bp_net_n_params(net));
    check(report.mean_loss < first, "training lowers the loss");
    bp_net_free(net);
    return report.mean_loss;
}

static void test_training(void)
{
    for (int k = BP_OPTIMIZER_SGD; k <= BP_OPTIMIZER_ADAGRAD; k++) {
        double *one, *two;
        char what[160];

        train((bp_optimizer_kind)k, 1, &one);
        train((bp_optimizer_kind)k, 2, &two);
        snprintf(what, sizeof what, "%s: 1 and 2 threads give the same "
                 "bits", bp_optimizer_name((bp_optimizer_kind)k));
        check(memcmp(one, two, sizeof(double) * (INPUTS * HIDDEN + HIDDEN +
                                                 HIDDEN * OUTPUTS + OUTPUTS))
                  == 0,
              what);
        free(one);
        free(two);
    }
}

static void test_model_file(void)
{
    bp_layer_spec layers[] = {
        {.units = HIDDEN, .activation = BP_ACTIVATION_GELU},
        {.kind = BP_LAYER_KIND_BATCH_NORM},
        {.units = OUTPUTS}};
    bp_loss_config ce = {.kind = BP_LOSS_CROSS_ENTROPY};
    bp_net *net, *back;
    bp_model_extras *ex, *ex_back;
    bp_optimizer opt;
    double *s0, *s1, *t0, *t1;
    size_t size = 0;
    int64_t n;

    require(bp_net_create_dtype(&net, INPUTS, layers, 3, &ce, BP_DTYPE_F64),
            "create");
    require(bp_net_init(net, BP_INIT_AUTO, 7), "init");
    n = bp_net_n_params(net);
    for (int k = 0; k < 2 * HIDDEN; k++)
        bp_net_running_stats_f64(net, 1)[k] = 1.0 / 3.0 + k;
    require(bp_optimizer_defaults(&opt, BP_OPTIMIZER_ADAM), "defaults");
    require(bp_net_optimizer_state_f64(net, 1, 1, &s1), "state 1");
    require(bp_net_optimizer_state_f64(net, 0, 1, &s0), "state 0");
    fill(s0, n);
    for (int64_t i = 0; i < n; i++)
        s1[i] = fabs(uniform());
    require(bp_model_extras_create(&ex), "extras");
    require(bp_model_extras_set_opt(ex, &opt, NULL), "set_opt");
    require(bp_net_save_buffer(net, ex, NULL, 0, &size), "size");

    unsigned char *buf = malloc(size);
    require(bp_net_save_buffer(net, ex, buf, size, &size), "save");
    check(buf[0] != 0, "the file has bytes");
    require(bp_net_load_buffer(&back, buf, size, &ex_back), "load");
    check(bp_net_dtype(back) == BP_DTYPE_F64, "the dtype survives a file");
    check(memcmp(bp_net_running_stats_f64(back, 1),
                 bp_net_running_stats_f64(net, 1),
                 sizeof(double) * 2 * HIDDEN) == 0,
          "running averages survive a file bit for bit");
    check(memcmp(bp_net_params_f64(back), bp_net_params_f64(net),
                 sizeof(double) * (size_t)n) == 0,
          "parameters survive a file bit for bit");
    require(bp_net_optimizer_state_f64(back, 0, 0, &t0), "state 0 back");
    require(bp_net_optimizer_state_f64(back, 1, 0, &t1), "state 1 back");
    check(t1 != NULL && memcmp(t0, s0, sizeof(double) * (size_t)n) == 0 &&
              memcmp(t1, s1, sizeof(double) * (size_t)n) == 0,
          "optimizer slabs survive a file bit for bit");
    free(buf);
    bp_model_extras_free(ex);
    bp_model_extras_free(ex_back);
    bp_net_free(back);
    bp_net_free(net);
}

static void test_errors(void)
{
    bp_loss_config mse = {.kind = BP_LOSS_MSE};
    bp_net *f32 = make_net(BP_ACTIVATION_RELU, BP_ACTIVATION_IDENTITY, &mse,
                           BP_DTYPE_F32);
    bp_net *f64 = make_net(BP_ACTIVATION_RELU, BP_ACTIVATION_IDENTITY, &mse,
                           BP_DTYPE_F64);
    bp_optimizer opt;
    bp_workspace *ws32, *ws64;
    float xf[INPUTS * 2] = {0}, yf[OUTPUTS * 2] = {0};
    double xd[INPUTS * 2] = {0}, yd[OUTPUTS * 2] = {0}, loss;
    float *slab;
    double *slab_d;
    bp_net *bad;
    bp_layer_spec one[] = {{.units = 1}};

    require(bp_optimizer_defaults(&opt, BP_OPTIMIZER_SGD), "defaults");
    require(bp_workspace_create(&ws32, f32, 2), "workspace 32");
    require(bp_workspace_create(&ws64, f64, 2), "workspace 64");
    expect(bp_net_gradient(f64, xf, yf, NULL, 2, &loss),
           BP_STATUS_INVALID_ARGUMENT, "bp_net_gradient_f64",
           "bp_net_gradient on a float64 network");
    expect(bp_net_gradient_f64(f32, xd, yd, NULL, NULL, 2, &loss),
           BP_STATUS_INVALID_ARGUMENT, "is float32",
           "bp_net_gradient_f64 on a float32 network");
    expect(bp_net_train_epoch_opt(f64, &opt, NULL, xf, yf, NULL, 2, 2, 0, 0,
                                  0, NULL, NULL, NULL),
           BP_STATUS_INVALID_ARGUMENT, "bp_net_train_epoch_f64",
           "bp_net_train_epoch_opt on a float64 network");
    expect(bp_net_train_epoch_f64(f32, &opt, NULL, xd, yd, NULL, NULL, 2, 2,
                                  0, 0, 0, NULL, NULL, NULL),
           BP_STATUS_INVALID_ARGUMENT, "float32",
           "bp_net_train_epoch_f64 on a float32 network");
    expect(bp_net_predict(f64, ws64, yf, xf, 2), BP_STATUS_INVALID_ARGUMENT,
           "bp_net_predict_f64", "bp_net_predict on a float64 network");
    expect(bp_net_predict_f64(f32, ws32, yd, xd, 2),
           BP_STATUS_INVALID_ARGUMENT, "bp_net_predict",
           "bp_net_predict_f64 on a float32 network");
    expect(bp_net_predict_f64(f64, ws32, yd, xd, 2),
           BP_STATUS_INVALID_ARGUMENT, "workspace",
           "a float32 workspace with a float64 network");
    expect(bp_net_optimizer_state(f64, 0, 0, &slab),
           BP_STATUS_INVALID_ARGUMENT, "bp_net_optimizer_state_f64",
           "bp_net_optimizer_state on a float64 network");
    expect(bp_net_optimizer_state_f64(f32, 0, 0, &slab_d),
           BP_STATUS_INVALID_ARGUMENT, "float32",
           "bp_net_optimizer_state_f64 on a float32 network");
    expect(bp_net_create_dtype(&bad, 3, one, 1, &mse, (bp_dtype)5),
           BP_STATUS_INVALID_ARGUMENT, "dtype", "an unknown dtype");
    check(bp_net_layer_output(f64, 0, 2) == NULL,
          "bp_net_layer_output is NULL for a float64 network");
    bp_workspace_free(ws32);
    bp_workspace_free(ws64);
    bp_net_free(f32);
    bp_net_free(f64);
}

int main(void)
{
    test_dgemm();
    test_gradients();
    test_layers();
    test_predict();
    test_same_start();
    test_training();
    test_model_file();
    test_errors();
    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
