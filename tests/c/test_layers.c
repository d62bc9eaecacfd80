/*
 * Dropout, batch norm and layer norm layers through the public API:
 * gradients against central differences of the training loss, batch
 * norm's running averages against a double-precision reference,
 * dropout's mask, inference against the formulas, model files, clones
 * and the errors of bad specs.
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

static void require(bp_status st, const char *what)
{
    if (st == BP_STATUS_OK)
        return;
    printf("FAIL: %s: %s\n", what, bp_last_error());
    exit(1);
}

static void expect_invalid(bp_status st, const char *needle, const char *what)
{
    check(st == BP_STATUS_INVALID_ARGUMENT, "%s: status %d, not invalid",
          what, (int)st);
    check(strstr(bp_last_error(), needle) != NULL,
          "%s: message \"%s\" lacks \"%s\"", what, bp_last_error(), needle);
}

static uint64_t state = 88172645463325252u;

static float uniform(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (float)(state >> 40) / 16777216.0f * 2.0f - 1.0f;
}

#define N_IN 5
#define ROWS 12

/*
 * Compares the gradient of every parameter with central differences of
 * the training loss; the masks stay fixed because the step does not
 * change between the calls.
 */
static void check_gradient(const char *name, const bp_layer_spec *layers,
                           int n_layers, bp_loss loss, int n_out)
{
    bp_net *net;
    float x[ROWS * N_IN], y[ROWS * 8];
    int32_t labels[ROWS];

    require(bp_net_create(&net, N_IN, layers, n_layers, loss), name);
    require(bp_net_init(net, BP_INIT_AUTO, 3), name);
    for (int i = 0; i < ROWS * N_IN; i++)
        x[i] = 2.0f * uniform();
    for (int i = 0; i < ROWS * n_out; i++)
        y[i] = uniform();
    for (int i = 0; i < ROWS; i++)
        labels[i] = i % n_out;
    /* Gammas and betas away from 1 and 0, so that their gradients show. */
    float *p = bp_net_params(net);
    int64_t n = bp_net_n_params(net);
    for (int i = 0; i < bp_net_n_layers(net); i++) {
        bp_layer_spec spec;
        int64_t w, b;

        require(bp_net_layer(net, i, &spec), name);
        require(bp_net_layer_offsets(net, i, &w, &b), name);
        if (spec.kind == BP_LAYER_KIND_BATCH_NORM ||
            spec.kind == BP_LAYER_KIND_LAYER_NORM)
            for (int64_t k = 0; k < spec.units; k++) {
                p[w + k] = 1.0f + 0.5f * uniform();
                if (!spec.no_bias)
                    p[b + k] = 0.3f * uniform();
            }
    }

    const int32_t *lab = loss == BP_LOSS_CROSS_ENTROPY ? labels : NULL;
    const float *tgt = lab != NULL ? NULL : y;
    double base;
    require(bp_net_gradient(net, x, tgt, lab, ROWS, &base), name);
    float *grad = malloc((size_t)n * sizeof *grad);
    memcpy(grad, bp_net_grads(net), (size_t)n * sizeof *grad);

    double worst = 0.0;
    for (int64_t k = 0; k < n; k++) {
        float keep = p[k];
        double up, down, h = 1e-2;

        p[k] = keep + (float)h;
        require(bp_net_gradient(net, x, tgt, lab, ROWS, &up), name);
        p[k] = keep - (float)h;
        require(bp_net_gradient(net, x, tgt, lab, ROWS, &down), name);
        p[k] = keep;
        double numeric = (up - down) / (2.0 * h);
        double err = fabs(numeric - grad[k]) /
                     fmax(1e-2, fabs(numeric) + fabs(grad[k]));
        if (err > worst)
            worst = err;
    }
    check(worst < 2e-2, "%s: worst relative gradient error %g", name, worst);
    free(grad);
    bp_net_free(net);
}

static void gradients(void)
{
    bp_layer_spec bn[] = {
        {.units = 6},
        {.kind = BP_LAYER_KIND_BATCH_NORM, .activation = BP_ACTIVATION_TANH},
        {.units = 3},
    };
    bp_layer_spec ln[] = {
        {.units = 6},
        {.kind = BP_LAYER_KIND_LAYER_NORM, .activation = BP_ACTIVATION_SILU},
        {.units = 3},
    };
    bp_layer_spec mixed[] = {
        {.kind = BP_LAYER_KIND_BATCH_NORM, .no_bias = 1},
        {.units = 7, .activation = BP_ACTIVATION_TANH},
        {.kind = BP_LAYER_KIND_DROPOUT, .rate = 0.3f},
        {.kind = BP_LAYER_KIND_LAYER_NORM, .no_bias = 1},
        {.units = 4},
    };

    check_gradient("batch norm, tanh", bn, 3, BP_LOSS_MSE, 3);
    check_gradient("layer norm, silu", ln, 3, BP_LOSS_CROSS_ENTROPY, 3);
    check_gradient("input batch norm, dropout, layer norm", mixed, 5,
                   BP_LOSS_CROSS_ENTROPY, 4);
}

/* Batch norm's outputs and running averages after one training batch. */
static void batch_norm_statistics(void)
{
    bp_layer_spec layers[] = {
        {.kind = BP_LAYER_KIND_BATCH_NORM, .momentum = 0.25f, .eps = 1e-3f},
    };
    bp_net *net;
    float x[ROWS * N_IN], y[ROWS * N_IN] = {0};
    bp_sgd_config sgd = {.lr = 1e-9f};

    require(bp_net_create(&net, N_IN, layers, 1, BP_LOSS_MSE), "bn");
    require(bp_net_init(net, BP_INIT_AUTO, 1), "bn");
    for (int i = 0; i < ROWS * N_IN; i++)
        x[i] = 3.0f * uniform() + 2.0f;
    require(bp_net_train_batch(net, &sgd, x, y, NULL, ROWS, NULL), "bn");

    const float *running = bp_net_running_stats(net, 0);
    const float *out = bp_net_layer_output(net, 0, ROWS);
    check(running != NULL && out != NULL, "bn: no running averages");
    for (int j = 0; j < N_IN; j++) {
        double mean = 0.0, var = 0.0;

        for (int i = 0; i < ROWS; i++)
            mean += x[i * N_IN + j];
        mean /= ROWS;
        for (int i = 0; i < ROWS; i++)
            var += (x[i * N_IN + j] - mean) * (x[i * N_IN + j] - mean);
        var /= ROWS;
        check(fabs(running[j] - 0.25 * mean) < 1e-5,
              "bn: running mean %d is %g, not %g", j, running[j],
              0.25 * mean);
        check(fabs(running[N_IN + j] - (0.75 + 0.25 * var * ROWS /
                                        (ROWS - 1))) < 1e-5,
              "bn: running variance %d is %g", j, running[N_IN + j]);
        for (int i = 0; i < ROWS; i++) {
            double want = (x[i * N_IN + j] - mean) / sqrt(var + 1e-3);

            check(fabs(out[i * N_IN + j] - want) < 1e-5,
                  "bn: training output (%d, %d) is %g, not %g", i, j,
                  out[i * N_IN + j], want);
        }
    }

    /* Inference uses the running averages. */
    bp_workspace *ws;
    float pred[ROWS * N_IN];
    require(bp_workspace_create(&ws, net, ROWS), "bn");
    require(bp_net_predict(net, ws, pred, x, ROWS), "bn");
    for (int i = 0; i < ROWS * N_IN; i++) {
        int j = i % N_IN;
        double want = (x[i] - running[j]) / sqrt(running[N_IN + j] + 1e-3);

        check(fabs(pred[i] - want) < 1e-4, "bn: prediction %d is %g, not %g",
              i, pred[i], want);
    }
    bp_workspace_free(ws);

    expect_invalid(bp_net_train_batch(net, &sgd, x, y, NULL, 1, NULL),
                   "at least 2 rows", "bn: a batch of one row");
    bp_net_free(net);
}

/* Dropout zeroes about `rate` of the units and scales the others. */
static void dropout_mask(void)
{
    enum { WIDE = 400 };
    bp_layer_spec layers[] = {{.kind = BP_LAYER_KIND_DROPOUT, .rate = 0.25f}};
    bp_net *net;
    static float x[ROWS * WIDE], y[ROWS * WIDE], first[ROWS * WIDE];
    bp_sgd_config sgd = {.lr = 0.1f};

    require(bp_net_create(&net, WIDE, layers, 1, BP_LOSS_MSE), "dropout");
    require(bp_net_init(net, BP_INIT_AUTO, 9), "dropout");
    for (int i = 0; i < ROWS * WIDE; i++)
        x[i] = 1.0f + (float)(i % 7);
    require(bp_net_gradient(net, x, y, NULL, ROWS, NULL), "dropout");
    memcpy(first, bp_net_layer_output(net, 0, ROWS), sizeof first);

    int zeros = 0, wrong = 0;
    for (int i = 0; i < ROWS * WIDE; i++) {
        zeros += first[i] == 0.0f;
        wrong += first[i] != 0.0f && first[i] != x[i] * (1.0f / 0.75f);
    }
    check(wrong == 0, "dropout: %d kept outputs are not x / (1 - rate)",
          wrong);
    /* 4,800 draws at p = 0.25: 1,200 expected, standard deviation 30. */
    check(abs(zeros - 1200) < 150, "dropout: %d of 4800 zeroed", zeros);

    /* The same step gives the same mask; the next step another. */
    require(bp_net_gradient(net, x, y, NULL, ROWS, NULL), "dropout");
    check(memcmp(first, bp_net_layer_output(net, 0, ROWS), sizeof first) ==
              0, "dropout: the mask changed without a step");
    require(bp_net_train_batch(net, &sgd, x, y, NULL, ROWS, NULL), "dropout");
    require(bp_net_gradient(net, x, y, NULL, ROWS, NULL), "dropout");
    check(memcmp(first, bp_net_layer_output(net, 0, ROWS), sizeof first) !=
              0, "dropout: the mask did not change with the step");

    /* Inference passes the input through. */
    bp_workspace *ws;
    require(bp_workspace_create(&ws, net, ROWS), "dropout");
    require(bp_net_predict(net, ws, y, x, ROWS), "dropout");
    check(memcmp(x, y, sizeof x) == 0, "dropout: inference changed x");
    bp_workspace_free(ws);
    bp_net_free(net);
}

/* Training, a model file and a clone keep every kind's state. */
static void files_and_clones(void)
{
    bp_layer_spec layers[] = {
        {.units = 8},
        {.kind = BP_LAYER_KIND_BATCH_NORM, .activation = BP_ACTIVATION_RELU},
        {.kind = BP_LAYER_KIND_DROPOUT, .rate = 0.1f},
        {.units = 8},
        {.kind = BP_LAYER_KIND_LAYER_NORM, .activation = BP_ACTIVATION_GELU},
        {.units = 3},
    };
    float x[64 * N_IN], pa[64 * 3], pb[64 * 3];
    int32_t labels[64];
    bp_net *net, *loaded, *copy;
    bp_optimizer opt;
    void *buf = NULL;
    size_t size = 0;

    for (int i = 0; i < 64 * N_IN; i++)
        x[i] = uniform();
    for (int i = 0; i < 64; i++)
        labels[i] = (x[i * N_IN] > 0) + (x[i * N_IN + 1] > 0.5f);
    require(bp_net_create(&net, N_IN, layers, 6, BP_LOSS_CROSS_ENTROPY),
            "file");
    require(bp_net_init(net, BP_INIT_AUTO, 5), "file");
    require(bp_optimizer_defaults(&opt, BP_OPTIMIZER_ADAM), "file");
    opt.lr = 0.01f;
    double first = 0.0, last = 0.0;
    for (int e = 0; e < 40; e++) {
        bp_epoch_report rep;

        require(bp_net_train_epoch_opt(net, &opt, NULL, x, NULL, labels, 64,
                                       16, 1, 5, (uint64_t)e, NULL, NULL,
                                       &rep), "file");
        if (e == 0)
            first = rep.mean_loss;
        last = rep.mean_loss;
    }
    check(last < 0.6 * first, "file: the loss went from %g to %g", first,
          last);

    require(bp_net_save_buffer(net, NULL, NULL, 0, &size), "file");
    buf = malloc(size);
    require(bp_net_save_buffer(net, NULL, buf, size, &size), "file");
    require(bp_net_load_buffer(&loaded, buf, size, NULL), "file");
    require(bp_net_clone(&copy, net), "file");
    check(bp_net_seed(loaded) == 5 && bp_net_seed(copy) == 5,
          "file: the dropout seed was not kept");
    check(memcmp(bp_net_running_stats(net, 1),
                 bp_net_running_stats(loaded, 1), 16 * sizeof(float)) == 0,
          "file: the running averages differ after loading");

    bp_workspace *ws;
    require(bp_workspace_create(&ws, net, 64), "file");
    require(bp_net_predict(net, ws, pa, x, 64), "file");
    require(bp_net_predict(loaded, ws, pb, x, 64), "file");
    check(memcmp(pa, pb, sizeof pa) == 0, "file: predictions differ");
    require(bp_net_predict(copy, ws, pb, x, 64), "file");
    check(memcmp(pa, pb, sizeof pa) == 0, "file: the clone predicts others");
    bp_workspace_free(ws);

    bp_layer_spec spec;
    require(bp_net_layer(loaded, 2, &spec), "file");
    check(spec.kind == BP_LAYER_KIND_DROPOUT && spec.rate == 0.1f &&
              spec.units == 8, "file: the dropout spec changed");
    require(bp_net_layer(loaded, 1, &spec), "file");
    check(spec.kind == BP_LAYER_KIND_BATCH_NORM && spec.momentum == 0.1f &&
              spec.eps == 1e-5f, "file: the batch norm defaults changed");

    free(buf);
    bp_net_free(copy);
    bp_net_free(loaded);
    bp_net_free(net);
}

static void bad_specs(void)
{
    bp_net *net = (bp_net *)&state;
    bp_layer_spec drop[] = {{.kind = BP_LAYER_KIND_DROPOUT, .rate = 1.0f}};
    bp_layer_spec act[] = {
        {.kind = BP_LAYER_KIND_DROPOUT, .activation = BP_ACTIVATION_RELU}};
    bp_layer_spec width[] = {{.kind = BP_LAYER_KIND_LAYER_NORM, .units = 4}};
    bp_layer_spec mom[] = {{.kind = BP_LAYER_KIND_BATCH_NORM,
                            .momentum = 1.5f}};
    bp_layer_spec eps[] = {{.kind = BP_LAYER_KIND_LAYER_NORM, .eps = -1.0f}};
    bp_layer_spec unused[] = {{.units = 3, .rate = 0.5f}};
    bp_layer_spec kind[] = {{.kind = (bp_layer_kind)9}};

    expect_invalid(bp_net_create(&net, N_IN, drop, 1, BP_LOSS_MSE),
                   "dropout rate must be in [0, 1)", "rate 1");
    check(net == NULL, "a failed create left *out set");
    expect_invalid(bp_net_create(&net, N_IN, act, 1, BP_LOSS_MSE),
                   "dropout takes identity only", "dropout with relu");
    expect_invalid(bp_net_create(&net, N_IN, width, 1, BP_LOSS_MSE),
                   "keeps its input's width", "layer norm of another width");
    expect_invalid(bp_net_create(&net, N_IN, mom, 1, BP_LOSS_MSE),
                   "momentum is 1.5", "momentum 1.5");
    expect_invalid(bp_net_create(&net, N_IN, eps, 1, BP_LOSS_MSE),
                   "eps is -1", "eps -1");
    expect_invalid(bp_net_create(&net, N_IN, unused, 1, BP_LOSS_MSE),
                   "a dense layer has no rate", "rate on a dense layer");
    expect_invalid(bp_net_create(&net, N_IN, kind, 1, BP_LOSS_MSE),
                   "not a bp_layer_kind", "kind 9");
    check(strcmp(bp_layer_kind_name(BP_LAYER_KIND_BATCH_NORM),
                 "batch_norm") == 0 && bp_layer_kind_name(9) == NULL,
          "bp_layer_kind_name");
}

int main(void)
{
    gradients();
    batch_norm_statistics();
    dropout_mask();
    files_and_clones();
    bad_specs();
    if (failures > 0) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all layer checks passed\n");
    return 0;
}
