/*
 * The per-batch hook of bp_net_train_epoch_ex: it sees every batch in
 * order with its rows, loss and outputs, an epoch it ends keeps the
 * updates made so far, the report says what was done, and a non-finite
 * loss names the batch and the first layer whose output went bad. Also
 * bp_net_layer_output, which reads the last forward pass's outputs.
 *
 * Uses the public API only. Exits 0 when every check passes.
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

static float uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

/* n floats uniform in [-1, 1); the caller frees them. */
static float *random_floats(int64_t n)
{
    float *x = malloc((size_t)n * sizeof(float));

    for (int64_t i = 0; i < n; i++)
        x[i] = uniform();
    return x;
}

static const bp_layer_spec layers[] = {
    {.units = 8, .activation = BP_ACTIVATION_TANH},
    {.units = 5, .activation = BP_ACTIVATION_RELU},
    {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};

enum { N_INPUTS = 3, N_ROWS = 37, BATCH = 8, N_BATCHES = 5 };

static bp_net *make_net(void)
{
    bp_net *net = NULL;

    require(bp_net_create(&net, N_INPUTS, layers, 3, BP_LOSS_MSE),
            "bp_net_create");
    require(bp_net_init(net, BP_INIT_AUTO, 11), "bp_net_init");
    return net;
}

static int params_equal(const bp_net *a, const bp_net *b)
{
    return memcmp(bp_net_params_const(a), bp_net_params_const(b),
                  (size_t)bp_net_n_params(a) * sizeof(float)) == 0;
}

/* What a hook saw, and the batch after which it ends the epoch (-1: never). */
typedef struct seen {
    int64_t calls;
    int64_t index[16];
    int64_t start[16];
    int64_t rows[16];
    double loss[16];
    float first_outputs[BATCH * 2];
    int targets_ok;
    const float *y;
    int64_t stop_after;
} seen;

static int record(void *user, const bp_batch_info *info)
{
    seen *s = user;

    if (s->calls < 16) {
        s->index[s->calls] = info->index;
        s->start[s->calls] = info->start;
        s->rows[s->calls] = info->rows;
        s->loss[s->calls] = info->loss;
    }
    if (s->calls == 0)
        memcpy(s->first_outputs, info->outputs,
               (size_t)info->rows * 2 * sizeof(float));
    /* Without shuffling the targets are the caller's rows in place. */
    s->targets_ok &= info->labels == NULL && info->y == s->y + info->start * 2;
    s->calls++;
    return info->index == s->stop_after;
}

/* Every batch in order; the same results as bp_net_train_epoch. */
static void test_every_batch(void)
{
    const bp_sgd_config sgd = {0.1f, 0.9f, 0, 0.0f};
    float *x = random_floats(N_ROWS * N_INPUTS);
    float *y = random_floats(N_ROWS * 2);
    bp_net *net = make_net();
    bp_net *twin = NULL;
    bp_workspace *ws = NULL;
    float before[BATCH * 2];
    seen s = {.targets_ok = 1, .y = y, .stop_after = -1};
    bp_epoch_report report;
    double twin_loss = 0.0, sum = 0.0;
    int order_ok = 1;

    require(bp_net_clone(&twin, net), "bp_net_clone");
    require(bp_workspace_create(&ws, net, BATCH), "bp_workspace_create");
    require(bp_net_predict(net, ws, before, x, BATCH), "bp_net_predict");
    require(bp_net_train_epoch_ex(net, &sgd, x, y, NULL, N_ROWS, BATCH, 0, 5,
                                  0, record, &s, &report),
            "bp_net_train_epoch_ex");
    require(bp_net_train_epoch(twin, &sgd, x, y, NULL, N_ROWS, BATCH, 0, 5, 0,
                               &twin_loss), "bp_net_train_epoch");

    check(s.calls == N_BATCHES, "the hook runs once per batch");
    for (int64_t b = 0; b < s.calls && b < 16; b++) {
        int64_t rows = b < N_BATCHES - 1 ? BATCH : N_ROWS % BATCH;

        order_ok &= s.index[b] == b && s.start[b] == b * BATCH &&
                    s.rows[b] == rows && isfinite(s.loss[b]);
        sum += s.loss[b] * (double)s.rows[b];
    }
    check(order_ok, "batches come in order with their rows and losses");
    check(s.targets_ok, "the hook sees each batch's targets");
    check(report.batches == N_BATCHES && report.rows == N_ROWS &&
              !report.stopped && report.bad_layer == -1,
          "the report counts every batch and row");
    check(fabs(report.mean_loss - sum / N_ROWS) <= 1e-12 * fabs(sum),
          "the report's mean loss weighs the batch losses by rows");
    check(report.mean_loss == twin_loss && params_equal(net, twin),
          "the hook changes nothing bp_net_train_epoch computes");

    float worst = 0.0f;
    for (int i = 0; i < BATCH * 2; i++)
        worst = fmaxf(worst, fabsf(before[i] - s.first_outputs[i]));
    check(worst <= 1e-5f, "outputs are the batch's before its update");

    bp_workspace_free(ws);
    bp_net_free(twin);
    bp_net_free(net);
    free(x);
    free(y);
}

/* A hook that ends the epoch keeps the updates made until then. */
static void test_stop(void)
{
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.0f};
    float *x = random_floats(N_ROWS * N_INPUTS);
    float *y = random_floats(N_ROWS * 2);
    bp_net *net = make_net();
    bp_net *twin = NULL;
    seen s = {.targets_ok = 1, .y = y, .stop_after = 2};
    bp_epoch_report report;

    require(bp_net_clone(&twin, net), "bp_net_clone");
    require(bp_net_train_epoch_ex(net, &sgd, x, y, NULL, N_ROWS, BATCH, 0, 5,
                                  0, record, &s, &report),
            "bp_net_train_epoch_ex with a stop");
    for (int b = 0; b < 3; b++)
        require(bp_net_train_batch(twin, &sgd, x + b * BATCH * N_INPUTS,
                                   y + b * BATCH * 2, NULL, BATCH, NULL),
                "bp_net_train_batch");

    check(s.calls == 3, "no batch runs after the hook ends the epoch");
    check(report.stopped && report.batches == 3 && report.rows == 3 * BATCH,
          "the report says the hook ended the epoch after 3 batches");
    check(params_equal(net, twin), "the 3 updates made are kept");

    /* Ending at the last batch is no early end. */
    s = (seen){.targets_ok = 1, .y = y, .stop_after = N_BATCHES - 1};
    require(bp_net_train_epoch_ex(net, &sgd, x, y, NULL, N_ROWS, BATCH, 1, 5,
                                  1, record, &s, &report),
            "bp_net_train_epoch_ex shuffled");
    check(!report.stopped && report.batches == N_BATCHES,
          "a stop at the last batch is not an early end");

    /* No hook and no report are both fine. */
    require(bp_net_train_epoch_ex(net, &sgd, x, y, NULL, N_ROWS, BATCH, 1, 5,
                                  2, NULL, NULL, NULL),
            "bp_net_train_epoch_ex without a hook or report");
    bp_net_free(twin);
    bp_net_free(net);
    free(x);
    free(y);
}

/* A non-finite loss names the batch and the first layer that went bad. */
static void test_bad_layer(void)
{
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.0f};
    float *x = random_floats(N_ROWS * N_INPUTS);
    float *y = random_floats(N_ROWS * 2);
    bp_net *net = make_net();
    seen s = {.targets_ok = 1, .y = y, .stop_after = -1};
    bp_epoch_report report;
    int64_t w_off, b_off;

    /* An infinite bias in layer 2 makes its outputs infinite. */
    require(bp_net_layer_offsets(net, 1, &w_off, &b_off),
            "bp_net_layer_offsets");
    bp_net_params(net)[b_off] = INFINITY;
    bp_status st = bp_net_train_epoch_ex(net, &sgd, x, y, NULL, N_ROWS,
                                         BATCH, 0, 5, 0, record, &s, &report);
    printf("bad layer %s\n", bp_last_error());
    check(st == BP_STATUS_NOT_FINITE, "an infinite bias gives NOT_FINITE");
    check(s.calls == 0 && report.batches == 0 && !isfinite(report.mean_loss),
          "the failing batch is reported and not applied");
    check(report.bad_layer == 1, "layer 1 (from 0) is the first bad one");
    check(strstr(bp_last_error(), "bp_net_train_epoch_ex: the loss of batch "
                                  "1 of 5 (rows 0 to 7") != NULL,
          "the message names the batch and its rows");
    check(strstr(bp_last_error(), "layer 2 of 3 is the first whose output "
                                  "is NaN or infinite (its parameters are "
                                  "too)") != NULL,
          "the message names the layer and its parameters");

    double loss = 0.0;
    st = bp_net_gradient(net, x, y, NULL, BATCH, &loss);
    check(st == BP_STATUS_NOT_FINITE &&
              strstr(bp_last_error(), "layer 2 of 3") != NULL,
          "bp_net_gradient names the layer too");
    bp_net_free(net);
    free(x);
    free(y);
}

/* The last pass's layer outputs, read back after bp_net_gradient. */
static void test_layer_output(void)
{
    float *x = random_floats(BATCH * N_INPUTS);
    float *y = random_floats(BATCH * 2);
    bp_net *net = make_net();
    bp_workspace *ws = NULL;
    float predicted[BATCH * 2];
    double loss = 0.0;

    require(bp_workspace_create(&ws, net, BATCH), "bp_workspace_create");
    require(bp_net_predict(net, ws, predicted, x, BATCH), "bp_net_predict");
    require(bp_net_gradient(net, x, y, NULL, BATCH, &loss), "bp_net_gradient");

    const float *last = bp_net_layer_output(net, 2, BATCH);
    const float *hidden = bp_net_layer_output(net, 1, BATCH);
    float worst = 0.0f;
    int relu_ok = hidden != NULL;

    check(last != NULL, "the last layer's output is there");
    for (int i = 0; last != NULL && i < BATCH * 2; i++)
        worst = fmaxf(worst, fabsf(last[i] - predicted[i]));
    check(worst <= 1e-5f, "the last layer's output is the prediction");
    for (int i = 0; relu_ok && i < BATCH * 5; i++)
        relu_ok = hidden[i] >= 0.0f;
    check(relu_ok, "the relu layer's outputs are >= 0");
    check(bp_net_layer_output(net, 3, BATCH) == NULL &&
              bp_net_layer_output(net, -1, BATCH) == NULL &&
              bp_net_layer_output(net, 0, 0) == NULL &&
              bp_net_layer_output(NULL, 0, 1) == NULL,
          "layers and row counts out of range give NULL");
    bp_workspace_free(ws);
    bp_net_free(net);
    free(x);
    free(y);
}

static void test_invalid(void)
{
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.0f};
    float x[N_INPUTS] = {0};
    float y[2] = {0};
    bp_net *net = make_net();
    bp_epoch_report report = {1.0, 7, 7, 1, 3};

    bp_status st = bp_net_train_epoch_ex(net, &sgd, x, y, NULL, 0, BATCH, 0,
                                         0, 0, NULL, NULL, &report);
    check(st == BP_STATUS_INVALID_ARGUMENT &&
              strstr(bp_last_error(), "bp_net_train_epoch_ex: argument 'n'"),
          "n == 0 is named");
    check(report.batches == 0 && report.rows == 0 && !report.stopped &&
              report.bad_layer == -1,
          "a failed call leaves an empty report");
    bp_net_free(net);
}

int main(void)
{
    test_every_batch();
    test_stop();
    test_bad_layer();
    test_layer_output();
    test_invalid();
    if (failures == 0)
        printf("test_hook: all checks passed\n");
    return failures != 0;
}
